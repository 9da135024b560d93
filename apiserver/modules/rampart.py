"""The ``rampart`` module: ApisCP's ban API over Anvil (jail ``anvil``) and fail2ban's jails.

The work is :class:`apiserver.rampart.service.Rampart`; its docstring (the package's) says who may
do what.  An ``ip`` left out (null) is the caller's own address.
"""

from __future__ import annotations

from typing import Optional

from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export


class RampartModule(BuiltinModule):
    """Banned addresses: query, unban, whitelist."""

    name = "rampart"

    @export(roles=Role.ALL, blocking=False)
    async def is_banned(self, ctx, ip: Optional[str] = None, jail: Optional[str] = None) -> bool:
        """Whether IP (null: the caller's address) is banned in JAIL (null: in any jail)."""
        return await self.core.rampart.is_banned(ip or ctx.client_address, jail)

    @export(roles=Role.ALL, blocking=False)
    async def banned_services(self, ctx, ip: Optional[str] = None) -> list[str]:
        """The jails that ban IP (null: the caller's address) now, e.g. ['anvil', 'sshd']."""
        return await self.core.rampart.banned_services(ip or ctx.client_address)

    @export(roles=Role.ADMIN | Role.SITE, blocking=False)
    async def unban(self, ctx, ip: Optional[str] = None, jail: Optional[str] = None) -> bool:
        """Lift the ban of IP (null: the caller's address) in JAIL (null: every jail); true even when it had none."""
        return await self.core.rampart.unban(ip or ctx.client_address, jail, ctx.identity)

    @export(roles=Role.ALL, blocking=False)
    async def get_jails(self, ctx) -> list[str]:
        """The jails: anvil, and fail2ban's when it runs on the host."""
        return await self.core.rampart.jails()

    @export(roles=Role.ADMIN | Role.SITE, blocking=False)
    async def whitelist(self, ctx, ip: Optional[str] = None, mode: str = "add") -> bool:
        """Whitelist IP (an address or network; null: the caller's address): MODE add or remove."""
        return await self.core.rampart.whitelist(ip or ctx.client_address, mode, ctx.identity)


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``rampart`` module."""
    return [RampartModule]
