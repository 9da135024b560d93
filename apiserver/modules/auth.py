"""The ``auth`` module: passwords, API keys, IP restrictions and login history of accounts.

``user``/``domain`` arguments name another account: the appliance administrator may name any
site and user, a site administrator the accounts of its site, a user only itself.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger

from apiserver.accounts.records import ApiKeyInfo, IpRestriction, LoginRecord
from apiserver.accounts.validation import parse_gate
from apiserver.errors import InvalidArgument
from apiserver.events import SecurityEvent
from apiserver.hookspecs import hookimpl
from apiserver.internal import internal_api
from apiserver.module import BuiltinModule, Role, export

log = Logger(namespace="apiserver.modules.auth")


class AuthModule(BuiltinModule):
    """Credentials of the caller and of the accounts it manages."""

    name = "auth"

    # --- passwords ------------------------------------------------------------------------
    @export(roles=Role.ALL)
    async def change_password(self, ctx, password: str, user: Optional[str] = None,
                              domain: Optional[str] = None) -> bool:
        """Set the password of the caller, or of USER (of DOMAIN); the account's owner is notified."""
        accounts = self.core.accounts
        target = await ctx.api.run_blocking(self.core.directory.resolve_target, ctx.identity, user, domain)
        await accounts.set_password(target, password, ctx.identity, address=ctx.client_address)
        return True

    @export(roles=Role.ADMIN | Role.SITE)
    async def reset_password(self, ctx, user: Optional[str] = None, domain: Optional[str] = None) -> str:
        """Replace the password of USER (null: the site administrator) of DOMAIN with a generated one and return it."""
        target = await ctx.api.run_blocking(self.core.directory.resolve_target, ctx.identity, user, domain)
        return await self.core.accounts.reset_password(target, ctx.identity, address=ctx.client_address)

    @export(roles=Role.ALL, blocking=False)
    def is_inactive(self, ctx) -> bool:
        """Whether the caller's site is suspended.

        Asked by the appliance administrator acting as the site (admin_hijack, cpcmd -d): the site's own
        accounts cannot log in meanwhile.
        """
        if ctx.identity.site_id is None:
            return False
        return self.core.suspensions.suspended(ctx.identity.site_id)

    # --- API keys -------------------------------------------------------------------------
    @export(roles=Role.ALL)
    async def create_api_key(self, ctx, comment: str = "", user: Optional[str] = None) -> str:
        """Create an API key for the caller (or USER of the caller's site) and return it."""
        owner = await ctx.api.run_blocking(self.core.directory.resolve_target, ctx.identity, user, None)
        return await self.core.accounts.create_api_key(owner, comment, ctx.identity)

    @export(roles=Role.ALL)
    def get_api_keys(self, ctx, user: Optional[str] = None) -> list[ApiKeyInfo]:
        """The API keys of the caller (or USER) with their last use and comment."""
        return self.core.accounts.keys.list(self.core.directory.resolve_target(ctx.identity, user, None))

    @export(roles=Role.ALL)
    async def delete_api_key(self, ctx, key: str, user: Optional[str] = None) -> bool:
        """Delete API key KEY of the caller (or USER); it stops working at once."""
        owner = await ctx.api.run_blocking(self.core.directory.resolve_target, ctx.identity, user, None)
        await self.core.accounts.delete_api_key(owner, key, ctx.identity)
        return True

    @export(roles=Role.ALL)
    def set_api_key_comment(self, ctx, key: str, comment: Optional[str] = None, user: Optional[str] = None) -> bool:
        """Set (null: clear) the comment of API key KEY of the caller (or USER)."""
        owner = self.core.directory.resolve_target(ctx.identity, user, None)
        self.core.accounts.keys.set_comment(owner, key, comment)
        return True

    # --- IP restrictions ------------------------------------------------------------------
    @export(roles=Role.ALL)
    async def restrict_ip(self, ctx, ip: str, gate: Optional[str] = None) -> bool:
        """Allow logins from IP (address or CIDR) at GATE (null: every gate); any entry enables the restriction."""
        return await self._edit_restrictions(ctx, self.core.ip_restrictions.add, "apiserver_ip_restriction_added",
                                             ip, gate)

    @export(roles=Role.ALL)
    async def remove_ip_restriction(self, ctx, ip: str, gate: Optional[str] = None) -> bool:
        """Remove the entry IP at GATE (null: the entry for every gate)."""
        return await self._edit_restrictions(ctx, self.core.ip_restrictions.remove, "apiserver_ip_restriction_removed",
                                             ip, gate)

    @export(roles=Role.ALL, blocking=False)
    def get_ip_restrictions(self, ctx, gate: Optional[str] = None) -> list[IpRestriction]:
        """The caller's IP restrictions; with GATE, those that apply at it. Empty: every address may log in."""
        entries = self.core.ip_restrictions.entries(ctx.identity.user_id)  # cached: usually no thread
        return entries.addCallback(_listed, parse_gate(gate))

    # --- logins ---------------------------------------------------------------------------
    @export(roles=Role.ALL)
    def get_login_history(self, ctx, limit: Optional[int] = None) -> list[LoginRecord]:
        """The caller's logins, newest first, at most LIMIT of them."""
        if limit is not None and limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        return self.core.accounts.login_history(ctx.identity, limit)

    @export(roles=Role.ALL)
    def get_last_login(self, ctx) -> Optional[LoginRecord]:
        """The caller's most recent successful login, or null."""
        return self.core.accounts.last_login(ctx.identity)

    @export(roles=Role.ALL)
    def get_security_events(self, ctx, limit: Optional[int] = None) -> list[SecurityEvent]:
        """The security events of the caller's account, newest first, at most LIMIT (null: 1000)."""
        return self.core.security_events.list(identity=ctx.identity, limit=limit)

    async def _edit_restrictions(self, ctx, change, event: str, ip: str, gate: Optional[str]) -> bool:
        """Validate the entry, ``change`` it on the pool (which updates the cached entries), then fire ``event``."""
        network, gate_name = self.core.ip_restrictions.validate_entry(ip, gate)
        await ctx.api.run_blocking(change, ctx.identity, network, gate_name)
        ctx.api.fire(event, identity=ctx.identity, ip=network, gate=gate_name, address=ctx.client_address)
        return True


def _listed(entries, gate: Optional[str]) -> list[IpRestriction]:
    return [IpRestriction(ip=network, gate=entry_gate) for network, entry_gate in entries
            if gate is None or entry_gate in (None, gate)]


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``auth`` module."""
    return [AuthModule]


@hookimpl
def apiserver_startup(api):
    """Read the secret and prepare the dummy password hash on the hashing pool."""
    core = internal_api(api)
    d = core.run_hashing(core.accounts.prepare)
    d.addErrback(lambda failure: log.failure("preparing the accounts failed", failure))


@hookimpl
def apiserver_shutdown(api):
    """Write the API keys' pending ``last_used`` values before the server stops."""
    return internal_api(api).accounts.keys.flush()
