"""The ``admin`` module: sites and hijacking, for the appliance administrator only."""

from __future__ import annotations

from typing import Optional

from apiserver.accounts.records import NewSite
from apiserver.accounts.validation import parse_gate
from apiserver.errors import InvalidArgument
from apiserver.events import SecurityEvent
from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export
from apiserver.notices.outbox import STATES, NoticeInfo


class AdminModule(BuiltinModule):
    """Manage the sites of the appliance."""

    name = "admin"

    @export(roles=Role.ADMIN)
    async def add_site(self, ctx, domain: str, admin_user: str, email: str,
                       password: Optional[str] = None) -> NewSite:
        """Create site DOMAIN with administrator ADMIN_USER; without PASSWORD one is generated and returned."""
        return await self.core.sites.add_site(domain, admin_user, email, password, ctx.identity)

    @export(roles=Role.ADMIN)
    async def delete_site(self, ctx, domain: str) -> bool:
        """Delete site DOMAIN with all its accounts, API keys and sessions."""
        await self.core.sites.delete_site(domain, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    def list_sites(self, ctx) -> list[str]:
        """The domains of every site, sorted."""
        return self.core.directory.list_sites()

    @export(roles=Role.ADMIN)
    async def hijack(self, ctx, site: str, user: Optional[str] = None, gate: Optional[str] = None) -> str:
        """A session id (cookie esprit_id) acting as SITE's administrator, or as USER of it."""
        gate_name = parse_gate(gate)
        target, sid = await ctx.api.run_blocking(self.core.accounts.hijack, ctx.identity, site, user, gate_name)
        ctx.api.fire("apiserver_hijack_started", actor=ctx.identity, target=target, gate=gate_name,
                     address=ctx.client_address)
        return sid

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
