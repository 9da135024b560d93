"""The ``admin`` module: the account lifecycle (ApisCP's billing API), site look-ups, hijacking,
the notice outbox and the security trail, for the appliance administrator only.

The work is :class:`apiserver.lifecycle.service.SiteLifecycle` (changes) and
:class:`apiserver.lifecycle.reports.SiteReports` (what billing systems read); a ``site`` argument
is a site id (``site12``), a domain or a billing invoice (every site of that account group).
"""

from __future__ import annotations

from typing import Optional

from apiserver.accounts.validation import parse_gate
from apiserver.errors import InvalidArgument
from apiserver.events import SecurityEvent
from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export
from apiserver.notices.outbox import STATES, NoticeInfo


class AdminModule(BuiltinModule):
    """Manage the sites of the appliance."""

    name = "admin"

    # --- the lifecycle ------------------------------------------------------------------------
    @export(roles=Role.ADMIN)
    async def add_site(self, ctx, domain: str, admin: str, opts: Optional[dict] = None) -> bool:
        """Create site DOMAIN administered by ADMIN with OPTS, a map of service.param values.

        '[siteinfo.email:a@b.c,auth.tpasswd:secret,siteinfo.plan:basic]'; the comma form and nested maps too.
        """
        await self.core.lifecycle.add_site(domain, admin, opts, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    async def edit_site(self, ctx, site: str, opts: Optional[dict] = None, extra: Optional[dict] = None) -> bool:
        """Change service values of SITE (a site id, domain or invoice) to OPTS.

        EXTRA '[reset:true]' re-applies the plan, '[dry-run:true]' only logs.
        """
        await self.core.lifecycle.edit_site(site, opts, extra, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    async def delete_site(self, ctx, site: Optional[str], flags: Optional[dict] = None) -> bool:
        """Delete SITE with all its accounts, keys and files.

        FLAGS: force, since (null SITE: every site suspended since then, '30 days ago'), match (a regular
        expression on the suspension reason), dry-run.
        """
        await self.core.lifecycle.delete_site(site, flags, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    async def deactivate_site(self, ctx, site: str, opts: Optional[dict] = None) -> bool:
        """Suspend SITE: its accounts are refused at every gate and their sessions end (OPTS '[reason:text]')."""
        await self.core.lifecycle.deactivate_site(site, opts, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    async def activate_site(self, ctx, site: str) -> bool:
        """End the suspension of SITE."""
        await self.core.lifecycle.activate_site(site, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    def collect(self, ctx, fields: Optional[list[str]] = None, match: Optional[dict] = None,
                sites: Optional[list[str]] = None) -> dict:
        """Map of site id to {service: {param: value}, active, domain} of the sites SITES names.

        FIELDS: service.param or a service (null or empty: email, admin_user, invoices; '*': all); SITES:
        site ids, domains or invoices (null: all); MATCH: values to equal ('[siteinfo.plan:basic,active:true]').
        """
        return self.core.site_reports.collect(fields, match, sites)

    @export(roles=Role.ADMIN)
    def get_usage(self, ctx, field: str, sites: Optional[list[str]] = None) -> dict:
        """Map of site id to the storage or bandwidth usage (FIELD) of the sites SITES names (null: all).

        storage: {qused, qsoft, qhard, fused, fsoft, fhard} in KB and files; bandwidth: {sum, threshold,
        begin, end} in bytes and Unix seconds; null figures are not measured yet.
        """
        return self.core.site_reports.usage(field, sites)

    @export(roles=Role.ADMIN)
    def get_domains(self, ctx) -> dict:
        """Map of site number N (of site<N>) to primary domain, ordered by domain."""
        return self.core.site_reports.domains()

    @export(roles=Role.ADMIN)
    def get_site_id(self, ctx, domain: str) -> str:
        """The site id (site<N>) of the site whose primary domain is DOMAIN."""
        return self.core.site_reports.site_id(domain)

    @export(roles=Role.ADMIN)
    def list_plans(self, ctx) -> list[str]:
        """The names of the plans in [plans] dir."""
        return self.core.lifecycle.plans.names()

    @export(roles=Role.ADMIN)
    def get_plan(self, ctx, name: str) -> dict:
        """Plan NAME as {service: {param: value}}, .skeleton included."""
        return self.core.lifecycle.plans.describe(name)

    # --- sites and sessions -----------------------------------------------------------------
    @export(roles=Role.ADMIN)
    def list_sites(self, ctx) -> list[str]:
        """The domains of every site, sorted."""
        return self.core.directory.list_sites()

    @export(roles=Role.ADMIN)
    async def hijack(self, ctx, site: str, user: Optional[str] = None, gate: Optional[str] = None) -> str:
        """A session id (cookie esprit_id) acting as SITE's administrator, or as USER of it.

        With GATE UI it is a single-sign-on id for /apps/<app>?esprit_id=ID.
        """
        gate_name = parse_gate(gate)
        target, sid = await ctx.api.run_blocking(self.core.accounts.hijack, ctx.identity, site, user, gate_name)
        ctx.api.fire("apiserver_hijack_started", actor=ctx.identity, target=target, gate=gate_name,
                     address=ctx.client_address)
        return sid

    # --- the outbox and the trail -------------------------------------------------------------
    @export(roles=Role.ADMIN)
    def get_notices(self, ctx, state: Optional[str] = None, limit: Optional[int] = None) -> list[NoticeInfo]:
        """The notice outbox, newest first: STATE queued, sent or failed (null: all), at most LIMIT (null: 1000)."""
        if state is not None and state not in STATES:
            raise InvalidArgument(f"state must be one of {', '.join(STATES)} or null, got {state!r}")
        if limit is not None and limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        return self.core.notices.outbox.list(state, limit)

    @export(roles=Role.ADMIN)
    def get_security_events(self, ctx, filter: Optional[dict] = None,
                            limit: Optional[int] = None) -> list[SecurityEvent]:
        """Security events of every account, newest first; FILTER e.g. '[kind:login_failed,site:example.com]'
        (keys kind, account, site, address), at most LIMIT (null: 1000)."""
        return self.core.security_events.list(filters=filter, limit=limit)


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``admin`` module."""
    return [AdminModule]
