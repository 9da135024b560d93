"""The ``common`` module: the caller's own email address and who the caller is."""

from __future__ import annotations

from typing import Optional

from apiserver.accounts.records import WhoAmI
from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export


class CommonModule(BuiltinModule):
    """Facts about the calling account."""

    name = "common"

    @export(roles=Role.ALL, blocking=False)
    def get_email(self, ctx) -> Optional[str]:
        """The email address on record for the caller, or null."""
        return self.core.directory.fetch_email(ctx.identity)  # cached: usually no thread hand-off

    @export(roles=Role.ALL)
    def set_email(self, ctx, email: str) -> bool:
        """Set the caller's email address (an empty string clears it)."""
        self.core.directory.set_email(ctx.identity, email or None)
        return True

    @export(roles=Role.ALL, blocking=False)
    def whoami(self, ctx) -> WhoAmI:
        """The caller's role (appliance, site, user), username and site."""
        identity = ctx.identity
        return WhoAmI(role=identity.role.label, username=identity.username, site=identity.site)


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``common`` module."""
    return [CommonModule]
