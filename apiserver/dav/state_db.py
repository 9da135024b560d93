"""WebDAV dead properties and locks of every site in the database (tables of migration 11).

Blocking: every method is database work; :mod:`apiserver.dav.state` calls them on a DAV thread
made the server again for the call (acting as the sites' owner it could not open the SQLite
file), never on the reactor.  Paths are DAV reference URLs from the site's home down (quoted, no
trailing slash); the bounds are checked in the transaction that writes, so a site never keeps
more than they allow whatever its clients send at once (up to the writes of one moment on
PostgreSQL and MariaDB, whose transactions do not queue as SQLite's do).
"""

from __future__ import annotations

import hashlib
from typing import Optional

import sqlalchemy as sa

from apiserver.storage import schema


class LimitReached(Exception):
    """A write would take a site past one of its ``[dav]`` bounds; the message names it."""


class LockConflict(Exception):
    """A new lock conflicts with one the site holds (taken meanwhile, perhaps on another node)."""

    def __init__(self, root: str):
        super().__init__(f"{root} is locked")
        self.root = root


def conflicting_lock(locks, lock: dict) -> Optional[str]:
    """The root of a lock among ``locks`` that ``lock`` may not be granted beside, or None.

    WsgiDAV's rule (``LockManager._check_lock_permission``): a lock on the same resource or a
    depth-infinity lock above it conflicts unless both are shared; for a depth-infinity lock,
    any lock below it conflicts.
    """
    root = lock["root"]
    for held in locks:
        other = held["root"]
        if is_within(root, other):
            if other != root and held["depth"] != "infinity":
                continue
            if held["scope"] == "shared" and lock["scope"] == "shared":
                continue
            return other
        if lock["depth"] == "infinity" and is_within(other, root):
            return other
    return None


def digest(text: str) -> str:
    """SHA-256 (hex) of ``text``: the indexed form of a path or key."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def folder_of(path: str) -> str:
    """The folder holding ``path`` (``""`` for the root ``/``)."""
    if path == "/":
        return ""
    return path.rsplit("/", 1)[0] or "/"


def is_within(path: str, top: str) -> bool:
    """``path`` is ``top`` or below it."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def property_size(name: str, value: bytes) -> int:
    """Bytes a property counts against ``[dav] max_property_bytes``."""
    return len(name.encode("utf-8", "surrogatepass")) + len(value)


class DbDavState:
    """Dead properties and locks in ``storage``'s tables."""

    def __init__(self, storage):
        self.storage = storage
        self.props = schema.dav_properties
        self.locks = k = schema.dav_locks
        # Built once: SQLAlchemy then finds its compiled form by the statement's memoized cache
        # key, instead of building, keying and looking up a new statement on every DAV write
        # (measured on SQLite: 185 -> 60 us of CPU per lookup).
        self._live_locks = sa.select(k).where(k.c.site_id == sa.bindparam("site_id"),
                                              k.c.expire >= sa.bindparam("now"))

    # --- sites --------------------------------------------------------------------------------
    def site_id(self, domain: str) -> Optional[int]:
        """Blocking.  The id of site ``domain`` (None: no such site in the database)."""
        sites = schema.sites
        with self.storage.read() as conn:
            return conn.execute(sa.select(sites.c.id).where(sites.c.domain == domain)).scalar()

    # --- dead properties ----------------------------------------------------------------------
    def folder_properties(self, site_id: int, folder: str) -> dict:
        """Blocking.  ``{path: {name: value}}`` of every resource directly in ``folder``."""
        p = self.props
        found: dict = {}
        with self.storage.read() as conn:
            rows = conn.execute(sa.select(p.c.path, p.c.name, p.c.value)
                                .where(p.c.site_id == site_id, p.c.folder_hash == digest(folder)))
            for path, name, value in rows:
                if folder_of(path) == folder:  # a hash collision is never believed
                    found.setdefault(path, {})[name] = value.encode("utf-8")
        return found

    def property_usage(self, site_id: int, conn: Optional[sa.Connection] = None) -> tuple:
        """Blocking.  ``(count, bytes)`` of the site's dead properties."""
        p = self.props
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(p.c.size), 0)).where(p.c.site_id == site_id)
        if conn is not None:
            count, size = conn.execute(query).one()
            return int(count), int(size)
        with self.storage.read() as own:
            return self.property_usage(site_id, own)

    def put_property(self, site_id: int, path: str, name: str, value: bytes, max_count: int, max_bytes: int) -> None:
        """Blocking.  Set one dead property; :class:`LimitReached` when the site would keep more
        than ``max_count`` properties or ``max_bytes`` bytes of them."""
        p = self.props
        key = digest(path + "\0" + name)
        size = property_size(name, value)
        with self.storage.write() as conn:
            old = conn.execute(sa.select(p.c.size).where(p.c.site_id == site_id, p.c.key_hash == key)).scalar()
            count, used = self.property_usage(site_id, conn)
            if old is None:
                count += 1
            used += size - (old or 0)
            if count > max_count:
                raise LimitReached(f"this site keeps at most {max_count} dead properties ([dav] max_properties)")
            if used > max_bytes:
                raise LimitReached(f"this site keeps at most {max_bytes} bytes of dead properties "
                                   "([dav] max_property_bytes)")
            text = value.decode("utf-8")  # WsgiDAV's etree.tostring: ASCII, others as character references
            if old is None:
                conn.execute(p.insert().values(site_id=site_id, key_hash=key, path_hash=digest(path),
                                               folder_hash=digest(folder_of(path)), path=path, name=name,
                                               value=text, size=size))
            else:
                conn.execute(p.update().where(p.c.site_id == site_id, p.c.key_hash == key)
                             .values(value=text, size=size))

    def remove_property(self, site_id: int, path: str, name: str) -> None:
        """Blocking.  Remove one dead property (none there is no error)."""
        p = self.props
        with self.storage.write() as conn:
            conn.execute(p.delete().where(p.c.site_id == site_id, p.c.key_hash == digest(path + "\0" + name)))

    def _rows_within(self, conn, site_id: int, top: str, with_children: bool) -> list:
        """``(id, path, name, value, size)`` of the properties of ``top`` (and below it)."""
        p = self.props
        columns = (p.c.id, p.c.path, p.c.name, p.c.value, p.c.size)
        rows = list(conn.execute(sa.select(*columns).where(p.c.site_id == site_id, p.c.path_hash == digest(top))))
        if with_children:
            below = top.rstrip("/") + "/"
            rows += conn.execute(sa.select(*columns).where(
                p.c.site_id == site_id, p.c.path.startswith(below, autoescape=True))).all()
        # Exact comparison here: LIKE ignores case on MariaDB, and a hash may collide.
        return [r for r in rows if r.path == top or (with_children and r.path.startswith(top.rstrip("/") + "/"))]

    def remove_properties(self, site_id: int, path: str) -> None:
        """Blocking.  Remove the dead properties of ``path`` and of everything below it (deleted)."""
        p = self.props
        with self.storage.write() as conn:
            ids = [row.id for row in self._rows_within(conn, site_id, path, with_children=True)]
            for start in range(0, len(ids), 500):
                conn.execute(p.delete().where(p.c.id.in_(ids[start:start + 500])))

    def copy_properties(self, site_id: int, source: str, target: str, max_count: int, max_bytes: int) -> None:
        """Blocking.  Give ``target`` the dead properties of ``source`` (its own are replaced);
        :class:`LimitReached` when the copies would take the site past a bound."""
        p = self.props
        with self.storage.write() as conn:
            rows = self._rows_within(conn, site_id, source, with_children=False)
            if not rows:
                return
            replaced = self._rows_within(conn, site_id, target, with_children=False)
            count, used = self.property_usage(site_id, conn)
            count += len(rows) - len(replaced)
            used += sum(r.size for r in rows) - sum(r.size for r in replaced)
            if count > max_count or used > max_bytes:
                raise LimitReached("copying the dead properties would take this site past [dav] max_properties or "
                                   "max_property_bytes")
            if replaced:
                conn.execute(p.delete().where(p.c.id.in_([r.id for r in replaced])))
            conn.execute(p.insert(), [
                dict(site_id=site_id, key_hash=digest(target + "\0" + r.name), path_hash=digest(target),
                     folder_hash=digest(folder_of(target)), path=target, name=r.name, value=r.value, size=r.size)
                for r in rows])

    def move_properties(self, site_id: int, source: str, target: str, with_children: bool) -> None:
        """Blocking.  Move the dead properties of ``source`` (and, ``with_children``, below it) to
        ``target``; what ``target`` had is replaced."""
        p = self.props
        with self.storage.write() as conn:
            old = self._rows_within(conn, site_id, target, with_children)
            if old:
                conn.execute(p.delete().where(p.c.id.in_([r.id for r in old])))
            for row in self._rows_within(conn, site_id, source, with_children):
                path = target + row.path[len(source):]
                conn.execute(p.update().where(p.c.id == row.id).values(
                    path=path, key_hash=digest(path + "\0" + row.name), path_hash=digest(path),
                    folder_hash=digest(folder_of(path))))

    # --- locks --------------------------------------------------------------------------------
    # ``site``: anything with the site's ``site_id`` and ``domain`` (a DavScope)
    def live_locks(self, site, now: float) -> list:
        """Blocking.  Every lock of the site that has not ended, as WsgiDAV's lock dicts (site paths)."""
        with self.storage.read() as conn:
            rows = conn.execute(self._live_locks, {"site_id": site.site_id, "now": now}).all()
        return [_lock_dict(row) for row in rows]

    def create_lock(self, site, lock: dict, now: float, max_locks: int) -> None:
        """Blocking.  Store ``lock`` (a WsgiDAV lock dict, site path in ``root``); ended locks of
        the site go first; :class:`LimitReached` when the site holds ``max_locks`` already,
        :class:`LockConflict` when a lock another request (or node) took meanwhile conflicts.
        The site's row is locked for the transaction, so nodes take a site's locks one at a time."""
        k, site_id = self.locks, site.site_id
        with self.storage.write() as conn:
            sites = schema.sites
            conn.execute(sa.select(sites.c.id).where(sites.c.id == site_id).with_for_update())
            conn.execute(k.delete().where(k.c.site_id == site_id, k.c.expire < now))
            held = [_lock_dict(row) for row in conn.execute(sa.select(k).where(k.c.site_id == site_id))]
            if len(held) >= max_locks:
                raise LimitReached(f"this site holds {len(held)} DAV locks, the most it may ([dav] max_locks)")
            conflict = conflicting_lock(held, lock)
            if conflict is not None:
                raise LockConflict(conflict)
            conn.execute(k.insert().values(
                token=lock["token"], site_id=site_id, path=lock["root"], scope=lock["scope"], depth=lock["depth"],
                principal=lock["principal"], owner=bytes(lock["owner"]), timeout=float(lock["timeout"]),
                expire=float(lock["expire"])))

    def refresh_lock(self, site, token: str, timeout: float, expire: float) -> bool:
        """Blocking.  Give a live lock a new timeout; False when it is gone."""
        k = self.locks
        with self.storage.write() as conn:
            done = conn.execute(k.update().where(k.c.site_id == site.site_id, k.c.token == token)
                                .values(timeout=timeout, expire=expire))
            return done.rowcount > 0

    def delete_lock(self, site, token: str) -> bool:
        """Blocking.  Remove a lock; False when there was none."""
        k = self.locks
        with self.storage.write() as conn:
            return conn.execute(k.delete().where(k.c.site_id == site.site_id, k.c.token == token)).rowcount > 0


def _lock_dict(row) -> dict:
    return {"token": row.token, "root": row.path, "type": "write", "scope": row.scope, "depth": row.depth,
            "principal": row.principal, "owner": bytes(row.owner), "timeout": row.timeout, "expire": row.expire}
