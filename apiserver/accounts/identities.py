"""From account rows to :class:`apiserver.context.Identity`, and the login history table."""

from __future__ import annotations

import datetime
from typing import Iterable, Optional

import sqlalchemy as sa

from apiserver.context import Identity
from apiserver.module import Role
from apiserver.storage import schema

ROLE_OF = {"admin": Role.ADMIN, "site": Role.SITE, "user": Role.USER}

#: Name of the appliance administrator's account (made by ``apiserver init``).
ADMIN_USERNAME = "admin"

#: Newest login records kept per account; older ones are pruned as new ones arrive.
HISTORY_KEEP = 200

_users, _sites = schema.users, schema.sites


def identity_select() -> sa.Select:
    """SELECT of the columns :func:`identity_from_row` reads (users joined to their site)."""
    return (sa.select(_users.c.id, _users.c.username, _users.c.role, _users.c.site_id,
                      _sites.c.domain.label("site"))
            .select_from(_users.outerjoin(_sites, _users.c.site_id == _sites.c.id)))


def identity_from_row(row, impersonator: Optional[Identity] = None) -> Identity:
    """The identity of a row of :func:`identity_select` (acting for ``impersonator``, if given)."""
    return Identity(role=ROLE_OF[row.role], user_id=row.id, username=row.username, site_id=row.site_id,
                    site=row.site, impersonator=impersonator)


def load_identity(conn: sa.Connection, user_id: int) -> Optional[Identity]:
    """The identity of account ``user_id``, or None."""
    row = conn.execute(identity_select().where(_users.c.id == user_id)).first()
    return identity_from_row(row) if row else None


def record_logins(conn: sa.Connection, rows: Iterable[dict]) -> None:
    """Insert login records (``user_id, at, address, gate, method, success``) of accounts that
    still exist, then keep only the newest :data:`HISTORY_KEEP` of each account."""
    rows = list(rows)
    if not rows:
        return
    wanted = {r["user_id"] for r in rows}
    alive = set(conn.execute(sa.select(_users.c.id).where(_users.c.id.in_(wanted))).scalars())
    rows = [r for r in rows if r["user_id"] in alive]
    if not rows:
        return
    history = schema.login_history
    conn.execute(history.insert(), rows)
    for user_id in {r["user_id"] for r in rows}:
        cutoff = conn.execute(sa.select(history.c.id).where(history.c.user_id == user_id)
                              .order_by(history.c.id.desc()).offset(HISTORY_KEEP).limit(1)).scalar()
        if cutoff is not None:
            conn.execute(history.delete().where(history.c.user_id == user_id, history.c.id <= cutoff))


def login_row(identity: Identity, at: datetime.datetime, address: str, gate, method: str, success: bool) -> dict:
    """The values of one ``login_history`` row, as :func:`record_logins` takes them."""
    return {"user_id": identity.user_id, "at": at, "address": str(address)[:64],
            "gate": str(getattr(gate, "value", gate)),
            "method": method, "success": success}
