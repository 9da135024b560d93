"""The ``admin`` module: sites and hijacking, for the appliance administrator only."""

from __future__ import annotations

from typing import Optional

from apiserver.accounts.records import NewSite
from apiserver.accounts.validation import parse_gate
from apiserver.hookspecs import hookimpl
from apiserver.module import Module, Role, export


class AdminModule(Module):
    """Manage the sites of the appliance."""

    name = "admin"

    @export(roles=Role.ADMIN)
    async def add_site(self, ctx, domain: str, admin_user: str, email: str,
                       password: Optional[str] = None) -> NewSite:
        """Create site DOMAIN with administrator ADMIN_USER; without PASSWORD one is generated and returned."""
        return await ctx.app.accounts.add_site(domain, admin_user, email, password, ctx.identity)

    @export(roles=Role.ADMIN)
    async def delete_site(self, ctx, domain: str) -> bool:
        """Delete site DOMAIN with all its accounts, API keys and sessions."""
        await ctx.app.accounts.delete_site(domain, ctx.identity)
        return True

    @export(roles=Role.ADMIN)
    def list_sites(self, ctx) -> list[str]:
        """The domains of every site, sorted."""
        return ctx.app.accounts.list_sites()

    @export(roles=Role.ADMIN)
    def hijack(self, ctx, site: str, user: Optional[str] = None, gate: Optional[str] = None) -> str:
        """A session id (cookie esprit_id) acting as SITE's administrator, or as USER of it."""
        return ctx.app.accounts.hijack(ctx.identity, site, user, parse_gate(gate))


@hookimpl
def apiserver_add_modules(app):
    """Contribute the ``admin`` module."""
    return [AdminModule]
