"""The ``accounts`` applier: a site's system accounts follow its lifecycle.

Suspending a site locks every one of its system users (password ``!``-prefixed, shell nologin)
in /etc/shadow and in the site's own ``etc/shadow``; activating unlocks them and gives back the
shell ``ssh.enabled`` asks for.  ``ssh.enabled`` set on creation or changed by an edit changes
the login shell of every user of the site (while the site is active).  The accounts themselves
are made and removed with the site's rows by :class:`apiserver.accounts.sites.Sites`, so
``delete`` has nothing left to do here.  All methods block (the lifecycle runs them on the pool).
"""

from __future__ import annotations

import sqlalchemy as sa

from apiserver.host import tools
from apiserver.lifecycle import services, store
from apiserver.lifecycle.appliers import Applier
from apiserver.storage import schema

SSH_ENABLED = services.param("ssh", "enabled")


def login_shell(ssh_enabled) -> str:
    """The login shell of a site's users: a shell with ``ssh.enabled``, nologin otherwise."""
    return tools.LOGIN_SHELL if ssh_enabled else tools.NOLOGIN


def new_user_shell(conn: sa.Connection, site_id: int) -> str:
    """Blocking.  The login shell a new user of site ``site_id`` gets (read on ``conn``, in the
    transaction adding the user): :func:`login_shell` of its ``ssh.enabled`` as stored, planned
    or by default, and nologin while the site is suspended or unknown."""
    found = store.load(conn, schema.sites.c.id == site_id, order_by_domain=False)
    return login_shell(found[0].value(SSH_ENABLED)) if found and found[0].active else tools.NOLOGIN


class SystemAccountsApplier(Applier):
    """Locks, unlocks and sets the shells of a site's system accounts (``site_accounts``:
    :class:`apiserver.host.accounts.SiteAccounts`)."""

    name = "accounts"

    def __init__(self, site_accounts):
        self._accounts = site_accounts

    def add(self, site, values: dict) -> None:
        if values.get(SSH_ENABLED):
            self._accounts.set_shell(site.id, login_shell(True))

    def edit(self, site, before, values: dict, changed: dict) -> None:
        if SSH_ENABLED in changed and site.active:
            self._accounts.set_shell(site.id, login_shell(changed[SSH_ENABLED]))

    def suspend(self, site) -> None:
        self._accounts.lock_site(site.id)

    def activate(self, site) -> None:
        self._accounts.unlock_site(site.id, login_shell(site.value(SSH_ENABLED)))
