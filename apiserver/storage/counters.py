"""Numbers handed out once: ``next_number(conn, "sites")`` is the N of the next ``site<N>``.

Auto-increment ids are not enough: SQLite (without AUTOINCREMENT) and MariaDB (after a restart,
before 10.2.4) give the highest id of a deleted row to the next one, and a site's number names
things outside the database (its group ``admin<N>``, billing systems' records).  The
``id_counters`` row of the name is updated in the caller's write transaction, which holds its
row lock (SQLite: the write lock) until commit, so two nodes never draw the same number.
"""

from __future__ import annotations

import sqlalchemy as sa

from apiserver.storage import schema

_counters = schema.id_counters


def next_number(conn: sa.Connection, name: str, floor: int = 0) -> int:
    """Blocking, inside a write transaction.  One more than every number ``name`` handed out and
    than ``floor`` (for ``sites``: the highest id present, should a row have been added behind
    the counter's back)."""
    if name == "sites":
        floor = max(floor, conn.execute(sa.select(sa.func.max(schema.sites.c.id))).scalar() or 0)
    updated = conn.execute(_counters.update().where(_counters.c.name == name).values(last=_counters.c.last + 1))
    if not updated.rowcount:
        conn.execute(_counters.insert().values(name=name, last=floor + 1))
        return floor + 1
    last = conn.execute(sa.select(_counters.c.last).where(_counters.c.name == name)).scalar()
    if last <= floor:
        last = floor + 1
        conn.execute(_counters.update().where(_counters.c.name == name).values(last=last))
    return last
