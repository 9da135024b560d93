"""The account lifecycle of ApisCP's billing API: add, edit, suspend, activate and delete sites.

:class:`SiteLifecycle` is what the ``admin`` module calls.  Each change is checked first
(:mod:`~apiserver.lifecycle.services`), stored in one transaction (the site's rows, its plan and
service values), then handed to the appliers (:mod:`~apiserver.lifecycle.appliers`) and told to
the plugins.  A ``site`` argument names one site or an account group
(:func:`apiserver.lifecycle.store.resolve`); every call returns only after every site it names
was handled, and fails by raising (``Client.*`` for the caller's mistakes).

Plans (ApisCP's ``EditDomain``): a site takes its plan's values, then the options given.
Changing the plan moves the values still equal to the old plan's to the new plan's and keeps
the site's own; with ``reset`` every value a plan may set takes the plan's (when the plan's is
neither null nor a list), and ``reset`` without a plan re-applies the current one.  Names,
addresses, passwords and invoices are never reset.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Callable, Optional

from twisted.logger import Logger

from apiserver.accounts import validation
from apiserver.booleans import parse_boolean
from apiserver.context import Identity
from apiserver.errors import ApiError, Denied, InvalidArgument, NotFound
from apiserver.lifecycle import services, store
from apiserver.lifecycle.plans import Plans
from apiserver.lifecycle.timespec import parse_since
from apiserver.module import Role
from apiserver.storage import schema, utcnow

log = Logger(namespace="apiserver.lifecycle")

EDIT_FLAGS = ("reset", "dry_run", "force")
DELETE_FLAGS = ("force", "since", "dry_run", "match", "filter")
SUSPEND_OPTIONS = ("reason", "template")
#: Longest suspension reason kept.
REASON_LIMIT = 2000
_P = services.param


def flags_of(given: Optional[dict], allowed: tuple, where: str) -> dict:
    """``given`` with ``dry-run`` spelled ``dry_run``; InvalidArgument for a name not ``allowed``."""
    out = {}
    for key, value in (given or {}).items():
        name = str(key).strip().replace("-", "_")
        if name not in allowed:
            raise InvalidArgument(f"{where}: unknown flag {str(key)[:40]!r}; flags are {', '.join(allowed)}")
        out[name] = value
    return out


def truthy(value: Any) -> bool:
    """A flag's value: ``true``, ``1``, ``'1'``, ``'true'`` (the project's boolean reader); a flag
    given with no value (null) counts as set, as ApisCP's ``[name:true]`` for present-only flags."""
    if value is None or value is True:
        return True
    if value is False:
        return False
    if isinstance(value, (int, float)):
        return value == 1
    flag = parse_boolean(str(value)) if str(value).strip() else False
    if flag is None:
        raise InvalidArgument(f"a flag's value must be true or false, got {str(value)[:40]!r}")
    return flag


class SiteLifecycle:
    """Adding, editing, suspending, activating and deleting sites (see the module docstring).

    ``storage``, ``clock``, ``run_blocking``: rows, dates, and database and file work off the
    reactor; ``sites``: :class:`apiserver.accounts.sites.Sites` (the site's accounts and home);
    ``accounts``: passwords and sessions; ``plans``: :class:`~apiserver.lifecycle.plans.Plans`;
    ``appliers``: :class:`~apiserver.lifecycle.appliers.Appliers`; ``suspensions``: the gates'
    :class:`~apiserver.lifecycle.suspension.SuspendedSites`; ``fire(event, **kwargs)``: the event
    hooks; ``measure(N, domain)`` (blocking; :meth:`~apiserver.lifecycle.recount.StorageRecount.measure_and_store`):
    a new site's storage, measured once made so that its usage is known at once.
    """

    def __init__(self, storage, clock, run_blocking: Callable, *, sites, accounts, plans: Plans, appliers,
                 suspensions, fire: Callable, measure: Optional[Callable] = None):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._sites = sites
        self._accounts = accounts
        self.plans = plans
        self.appliers = appliers
        self._suspensions = suspensions
        self._fire = fire
        self._measure = measure

    # --- reading ------------------------------------------------------------------------------
    def resolve(self, site: str) -> list:
        """Blocking.  The :class:`~apiserver.lifecycle.store.SiteRecord`\\ s ``site`` names."""
        if site is None:
            raise InvalidArgument("site: name a site id, domain or billing invoice")
        with self._storage.read() as conn:
            return store.resolve(conn, site)

    def record_of(self, identity: Identity) -> store.SiteRecord:
        """Blocking.  The site of a site administrator or user."""
        if identity.site_id is None:
            raise InvalidArgument("the appliance has no site: act as one with admin_hijack or cpcmd -d")
        with self._storage.read() as conn:
            found = store.load(conn, schema.sites.c.id == identity.site_id)
        if not found:
            raise NotFound(f"no site {identity.site!r}")
        return found[0]

    def check_room_for_user(self, identity: Identity) -> None:
        """Blocking.  Denied unless ``identity``'s site may have one more user (``users.enabled``,
        ``users.max``; checked before the user is added, so two adds at once may pass together)."""
        record = self.record_of(identity)
        if not record.value(_P("users", "enabled")):
            raise Denied("this site may have no users besides its administrator (users.enabled is 0)")
        limit = record.value(_P("users", "max"))
        if limit is not None:
            with self._storage.read() as conn:
                count = len(store.account_ids(conn, record.id)) - 1  # the administrator is no user
            if count >= limit:
                raise Denied(f"this site may have at most {limit} user(s) besides its administrator (users.max)")

    # --- add ----------------------------------------------------------------------------------
    async def add_site(self, domain: str, admin: str, opts: Optional[dict], actor: Identity) -> None:
        """``admin_add_site``: a new site ``domain`` whose administrator is ``admin``, with ``opts``
        (any spelling; the positional arguments win over ``siteinfo.domain``/``admin_user``)."""
        values, _ = services.parse_options(opts, "opts")
        values[_P("siteinfo", "domain")] = validation.normalize_domain(str(domain))
        values[_P("siteinfo", "admin_user")] = validation.normalize_username(str(admin).strip().lower())
        plan, final, secrets = await self._run_blocking(self._new_values, values)
        tpasswd, cpasswd = secrets.get(_P("auth", "tpasswd")), secrets.get(_P("auth", "cpasswd"))
        if tpasswd is not None and cpasswd is not None:
            raise InvalidArgument("auth.tpasswd, auth.cpasswd: give one password, not both")
        stored = {"plan": plan, "services": store.stored_json(final), "invoice": final[_P("billing", "invoice")],
                  "parent_invoice": final[_P("billing", "parent_invoice")]}
        made = await self._sites.add_site(
            final[_P("siteinfo", "domain")], final[_P("siteinfo", "admin_user")], final[_P("siteinfo", "email")],
            tpasswd, actor, password_hash=cpasswd,
            also=lambda conn, site_id: store.update_site(conn, site_id, **stored))
        try:
            record = await self._run_blocking(self._load_one, made.site_id)
            await self._run_blocking(self.appliers.add, record, {**final, **secrets})
        except BaseException:
            log.error("adding {domain} failed while applying its services; the site is removed again",
                      domain=made.domain)
            await self._sites.delete_site(made.domain, actor)
            raise
        if self._measure is not None:
            try:  # a near-empty home: a quick count, so admin_get_usage never answers null for it
                await self._run_blocking(self._measure, made.site_id, made.domain)
            except Exception as exc:  # the next recount measures it; the site is made
                log.error("measuring the storage of the new site {domain} failed: {error}", domain=made.domain,
                          error=exc)

    def _new_values(self, values: dict) -> tuple:
        """Blocking.  ``(plan name, {Param: value} of every readable parameter, {Param: secret})``."""
        explicit, defaults, secrets = self._checked(values)
        plan = explicit.pop(_P("siteinfo", "plan"), None) or self.plans.default
        planned = self._plan_values(plan)
        final = {spec: spec.default for spec in services.all_params() if not spec.secret}
        final.update(planned)
        final.update(explicit)
        for spec in defaults:
            final[spec] = planned.get(spec, spec.default)
        final[_P("siteinfo", "plan")] = plan
        return plan, final, secrets

    # --- edit ---------------------------------------------------------------------------------
    async def edit_site(self, site: str, opts: Optional[dict], extra: Optional[dict], actor: Identity) -> None:
        """``admin_edit_site``: change the values of every site ``site`` names; ``extra`` (or a map
        nested in ``opts`` under an integer key, as Blesta sends it) may hold ``reset``,
        ``dry_run`` and ``force`` (appliers' failures are logged, not raised)."""
        flags = flags_of(extra, EDIT_FLAGS, "extra")
        values, nested = services.parse_options(opts, "opts", flag_names=EDIT_FLAGS)
        flags.update(flags_of(nested, EDIT_FLAGS, "opts"))
        reset = truthy(flags["reset"]) if "reset" in flags else False
        dry_run = truthy(flags["dry_run"]) if "dry_run" in flags else False
        force = truthy(flags["force"]) if "force" in flags else False
        for record in await self._run_blocking(self.resolve, site):
            edit = await self._run_blocking(self._edit_rows, record.id, values, reset, dry_run)
            if edit is None:
                continue
            before, after, changed, secrets = edit
            await self._set_password(after, secrets, actor)
            try:
                await self._run_blocking(self.appliers.edit, after, before, after.values(), {**changed, **secrets})
            except ApiError:
                raise
            except Exception:
                if not force:
                    raise
                log.failure("forced edit of {domain}: applying its services failed", domain=after.domain)

    def _edit_rows(self, site_id: int, values: dict, reset: bool, dry_run: bool):
        """Blocking.  Compute and (unless ``dry_run``) store one site's new values; ``(before,
        after, {Param: value} changed, {Param: secret})``, or None for a dry run."""
        explicit, defaults, secrets = self._checked(values)
        with self._storage.write() as conn:
            found = store.load(conn, schema.sites.c.id == site_id)
            if not found:
                raise NotFound(f"site{site_id} was deleted meanwhile")
            before = found[0]
            current = before.values()
            for key in (("siteinfo", "domain"), ("siteinfo", "admin_user")):
                spec = _P(*key)
                if spec in explicit and explicit.pop(spec) != current[spec]:
                    raise InvalidArgument(f"{spec.qualified}: renaming a site or its administrator is not supported")
            new_plan = explicit.pop(_P("siteinfo", "plan"), None) or before.plan or self.plans.default
            updated = dict(current)
            planned = self._plan_values(new_plan)
            if reset:
                updated.update({spec: value for spec, value in planned.items()
                                if value is not None and not isinstance(value, list)})
            elif new_plan != before.plan:
                old = self._plan_values(before.plan) if before.plan and self.plans.exists(before.plan) else {}
                updated.update({spec: value for spec, value in planned.items()
                                if current[spec] == old.get(spec, spec.default)})
            for spec in defaults:
                updated[spec] = planned.get(spec, spec.default)
            updated.update(explicit)
            updated[_P("siteinfo", "plan")] = new_plan
            changed = {spec: value for spec, value in updated.items() if current.get(spec) != value}
            if dry_run:
                log.info("dry run: {domain} would change {names}", domain=before.domain,
                         names=", ".join(sorted(s.qualified for s in changed)) or "nothing")
                return None
            store.update_site(conn, site_id, plan=new_plan, services=store.stored_json(updated),
                              invoice=updated[_P("billing", "invoice")],
                              parent_invoice=updated[_P("billing", "parent_invoice")])
            email = _P("siteinfo", "email")
            if email in changed:
                conn.execute(schema.users.update().where(schema.users.c.id == before.admin_user_id)
                             .values(email=updated[email]))
            after = store.load(conn, schema.sites.c.id == site_id)[0]
        self._accounts.directory.forget(before.admin_user_id)
        return before, after, changed, secrets

    async def _set_password(self, site: store.SiteRecord, secrets: dict, actor: Identity) -> None:
        tpasswd, cpasswd = secrets.get(_P("auth", "tpasswd")), secrets.get(_P("auth", "cpasswd"))
        if tpasswd is None and cpasswd is None:
            return
        if tpasswd is not None and cpasswd is not None:
            raise InvalidArgument("auth.tpasswd, auth.cpasswd: give one password, not both")
        target = Identity(Role.SITE, site.admin_user_id, site.admin_user, site.id, site.domain)
        if tpasswd is not None:
            await self._accounts.set_password(target, tpasswd, actor)
        else:
            await self._accounts.set_password_hash(target, cpasswd, actor)

    # --- suspend and activate -------------------------------------------------------------------
    async def deactivate_site(self, site: str, opts: Optional[dict], actor: Identity) -> None:
        """``admin_deactivate_site``: suspend every site ``site`` names; ``opts`` may give a
        ``reason`` (kept with the site, shown to its users at login without the lines starting
        ``#`` or ``;``) and ApisCP's ``template`` (accepted, not used)."""
        options = flags_of(opts, SUSPEND_OPTIONS, "opts")
        reason = options.get("reason")
        if reason is not None:
            if not isinstance(reason, str) or len(reason) > REASON_LIMIT:
                raise InvalidArgument(f"opts.reason: text of at most {REASON_LIMIT} characters")
            reason = reason.strip() or None
        for record in await self._run_blocking(self.resolve, site):
            ids = await self._run_blocking(self._suspend_rows, record.id, reason)
            self._suspensions.changed()
            await self._accounts.end_sessions_of(ids)
            await self._run_blocking(self.appliers.suspend, record)
            self._fire("apiserver_site_suspended", site=record.domain, actor=actor, reason=reason)

    def _suspend_rows(self, site_id: int, reason: Optional[str]) -> list:
        """Blocking.  Mark the site suspended (a site suspended already keeps its date); its account ids."""
        sites = schema.sites
        with self._storage.write() as conn:
            conn.execute(sites.update().where(sites.c.id == site_id, sites.c.suspended_at.is_(None))
                         .values(suspended_at=utcnow(self._clock)))
            if reason is not None:
                conn.execute(sites.update().where(sites.c.id == site_id).values(suspension_reason=reason))
            return store.account_ids(conn, site_id)

    async def activate_site(self, site: str, actor: Identity) -> None:
        """``admin_activate_site``: end the suspension of every site ``site`` names."""
        for record in await self._run_blocking(self.resolve, site):
            await self._run_blocking(self._activate_rows, record.id)
            self._suspensions.changed()
            await self._run_blocking(self.appliers.activate, record)
            self._fire("apiserver_site_activated", site=record.domain, actor=actor)

    def _activate_rows(self, site_id: int) -> None:
        """Blocking."""
        sites = schema.sites
        with self._storage.write() as conn:
            conn.execute(sites.update().where(sites.c.id == site_id)
                         .values(suspended_at=None, suspension_reason=None))

    # --- delete -------------------------------------------------------------------------------
    async def delete_site(self, site: Optional[str], flags: Optional[dict], actor: Identity) -> None:
        """``admin_delete_site``: delete every site ``site`` names (null: every site, only with
        ``since``); ``since`` keeps those suspended at least that long ago, ``match`` (or
        ``filter``) those whose suspension reason matches a regular expression, ``dry_run`` only
        logs, ``force`` deletes even when an applier fails.  Nothing to delete is no error."""
        flags = flags_of(flags, DELETE_FLAGS, "flags")
        since = flags.get("since")
        if site is None and since is None:
            raise InvalidArgument("site: name a site id, domain or billing invoice, or pass null with "
                                  "[since:TIME] to delete the sites suspended since then")
        pattern = flags.get("match", flags.get("filter"))
        matcher = None
        if pattern is not None:
            if not isinstance(pattern, str) or len(pattern) > 500:
                raise InvalidArgument("flags.match: a regular expression of at most 500 characters")
            try:
                matcher = re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise InvalidArgument(f"flags.match: not a regular expression: {exc}") from None
        cutoff = parse_since(since, self._clock.seconds()) if since is not None else None
        dry_run = truthy(flags["dry_run"]) if "dry_run" in flags else False
        force = truthy(flags["force"]) if "force" in flags else False
        records = await self._run_blocking(self._deletable, site, cutoff, matcher)
        for record in records:
            if dry_run:
                log.info("dry run: {id} ({domain}; {since}) would be deleted", id=record.site_id, domain=record.domain,
                         since=f"suspended {record.suspended_at:%Y-%m-%d %H:%M} UTC" if record.suspended_at
                         else "no suspension date")
                continue
            await self._run_blocking(self.appliers.delete, record, force)
            try:
                await self._sites.delete_site(record.domain, actor)
            except NotFound:
                if site is not None and len(records) == 1:
                    raise

    def _deletable(self, site: Optional[str], cutoff: Optional[float], matcher) -> list:
        """Blocking."""
        if site is None:
            with self._storage.read() as conn:
                records = store.load(conn, schema.sites.c.suspended_at.isnot(None))
        else:
            records = self.resolve(site)
        if cutoff is not None:
            records = [r for r in records if r.suspended_at is not None and _seconds(r.suspended_at) <= cutoff]
        if matcher is not None:
            records = [r for r in records if r.suspension_reason and matcher.search(r.suspension_reason)]
        return records

    # --- shared -------------------------------------------------------------------------------
    def _checked(self, values: dict) -> tuple:
        """``({Param: value}, [Params set to DEFAULT], {Param: secret})``, every value validated."""
        explicit, defaults, secrets = {}, [], {}
        for spec, raw in values.items():
            if not spec.writable:
                raise InvalidArgument(f"{spec.qualified}: set by the server, not by options")
            if services.is_default(raw) and spec is _P("siteinfo", "plan"):
                explicit[spec] = None  # the default plan
                continue
            if services.is_default(raw) and not spec.protected:
                defaults.append(spec)
                continue
            value = services.validate(spec, raw)
            if spec.secret:
                if value is not None:
                    secrets[spec] = value
            else:
                explicit[spec] = value
        return explicit, defaults, secrets

    def _plan_values(self, name: str) -> dict:
        """Blocking.  The plan's values; InvalidArgument naming ``siteinfo.plan`` for an unknown plan."""
        try:
            return self.plans.values(name)
        except NotFound as exc:
            raise InvalidArgument(f"siteinfo.plan: {exc.message}") from None

    def _load_one(self, site_id: int) -> store.SiteRecord:
        """Blocking."""
        with self._storage.read() as conn:
            return store.load(conn, schema.sites.c.id == site_id)[0]


def _seconds(at: datetime.datetime) -> float:
    return at.replace(tzinfo=datetime.timezone.utc).timestamp()
