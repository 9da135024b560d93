"""The ``user`` module: a site administrator manages the users of its site."""

from __future__ import annotations

from typing import Optional

from apiserver.accounts.records import UserInfo
from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export


class UserModule(BuiltinModule):
    """Users of the caller's site."""

    name = "user"

    @export(roles=Role.SITE)
    async def add(self, ctx, user: str, password: str, email: Optional[str] = None) -> bool:
        """Add USER with PASSWORD (and EMAIL) to the caller's site (within its users.enabled and users.max)."""
        await ctx.api.run_blocking(self.core.lifecycle.check_room_for_user, ctx.identity)
        await self.core.sites.add_user(ctx.identity, user, password, email)
        return True

    @export(roles=Role.SITE)
    async def delete(self, ctx, user: str) -> bool:
        """Delete USER of the caller's site with its API keys and sessions."""
        await self.core.sites.delete_user(ctx.identity, user)
        return True

    @export(roles=Role.SITE)
    def get_users(self, ctx) -> list[UserInfo]:
        """The accounts of the caller's site, its administrator first."""
        return self.core.directory.list_users(ctx.identity.site_id)


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``user`` module."""
    return [UserModule]
