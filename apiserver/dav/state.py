"""WebDAV state that lasts: each site's dead properties and locks in the project's storage.

WsgiDAV asks a property manager and a lock storage of each provider; here they keep nothing in
memory between requests.  Properties live in the database (:mod:`apiserver.dav.state_db`), locks
there too or, when ``[anvil] backend=redis`` runs, in that Redis (:mod:`apiserver.dav.state_redis`):
so they survive a restart and every node sharing the storage sees the same ones.

Paths are stored from the site's home down: a site's administrator (DAV root: the home) and a
user of the site (DAV root: ``/home/<user>``) see the same properties and locks on a file.

Bounds, per site (``[dav]``, read at each use): ``max_properties`` and ``max_property_bytes``
(507 Insufficient Storage past them), ``max_locks`` (507), ``max_lock_timeout`` (a longer or
infinite timeout is cut to it) and ``max_lock_owner`` (403 for a larger ``<owner>``).

Blocking: the DAV threads call these managers; every storage call goes through ``call_blocking``
(:func:`storage_caller`: on the DAV thread, as the server again for the call, since the thread
acts as the sites' owner, who may not open the database).  Within one request what was read
is kept on the thread (:meth:`DavState.begin_request`), so a ``PROPFIND`` of a folder of 1,000
files reads the folder's properties once and the site's locks once, not once per file.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Optional
from urllib.parse import quote, unquote

from wsgidav.dav_error import (
    HTTP_FORBIDDEN, HTTP_INSUFFICIENT_STORAGE, HTTP_LOCKED, PRECONDITION_CODE_LockConflict, DAVError, DAVErrorCondition,
)
from wsgidav.lock_man.lock_manager import generate_lock_token, normalize_lock_root, validate_lock

from apiserver.dav.state_db import DbDavState, LimitReached, LockConflict, folder_of, is_within, property_size


@dataclasses.dataclass(frozen=True)
class DavScope:
    """Where a DAV root is: its site (id and domain) and the root's path in the home (``""``: the home)."""

    site_id: int
    domain: str
    prefix: str = ""

    @classmethod
    def of(cls, site_id: int, domain: str, user: Optional[str]) -> "DavScope":
        """The home for a site's administrator, ``/home/<user>`` for a user (as reference URLs are: quoted)."""
        return cls(site_id, domain, quote(f"/home/{user}") if user else "")

    def to_site(self, url: str) -> str:
        """A reference URL of this root as a path from the home (no trailing slash).  Quoted as
        WsgiDAV's ``get_ref_url`` quotes, whether ``url`` came quoted or not."""
        path = normalize_lock_root(quote(unquote(url)))
        if not self.prefix:
            return path
        return self.prefix if path == "/" else self.prefix + path

    def from_site(self, path: str) -> Optional[str]:
        """The reference URL in this root of a path from the home; None when it is outside the root."""
        if not self.prefix:
            return path
        if not is_within(path, self.prefix):
            return None
        return path[len(self.prefix):] or "/"


class DavLimits:
    """The ``[dav]`` bounds, read from ``settings`` at each use (they may change while running)."""

    def __init__(self, settings):
        self.settings = settings

    @property
    def max_properties(self) -> int:
        return self.settings.get("dav", "max_properties")

    @property
    def max_property_bytes(self) -> int:
        return self.settings.get("dav", "max_property_bytes")

    @property
    def max_locks(self) -> int:
        return self.settings.get("dav", "max_locks")

    @property
    def max_lock_timeout(self) -> int:
        return self.settings.get("dav", "max_lock_timeout")

    @property
    def max_lock_owner(self) -> int:
        return self.settings.get("dav", "max_lock_owner")


class DavState:
    """The storage of every site's DAV state and the per-request cache of what a DAV thread read.

    ``properties`` is a :class:`DbDavState`; ``locks`` one too, or a
    :class:`apiserver.dav.state_redis.RedisDavLocks`; ``clock`` gives lock times;
    ``call_blocking(fn, *args)`` runs ``fn`` on the blocking pool and returns its result.
    """

    def __init__(self, properties: DbDavState, locks, limits: DavLimits, clock, call_blocking: Callable):
        self.properties = properties
        self.locks = locks
        self.limits = limits
        self.clock = clock
        self.call = call_blocking
        self._request = threading.local()

    def begin_request(self) -> None:
        """Forget what the calling thread read for its previous request."""
        self._request.folders = {}
        self._request.locks = {}
        self._request.pending = None  # [count, bytes] of the site with what a PROPPATCH's dry run let through

    def _cache(self, name: str):
        if not hasattr(self._request, name):
            self.begin_request()
        return getattr(self._request, name)

    def changed(self) -> None:
        """Something was written: read again from the storage."""
        self._request.folders = {}
        self._request.locks = {}

    def site_id(self, domain: str) -> Optional[int]:
        """Blocking (on the pool).  The site's id, None when the database has no such site."""
        return self.call(self.properties.site_id, domain)

    # --- reads, cached for the request ---------------------------------------------------------
    def folder_properties(self, site_id: int, folder: str) -> dict:
        folders = self._cache("folders")
        key = (site_id, folder)
        if key not in folders:
            folders[key] = self.call(self.properties.folder_properties, site_id, folder)
        return folders[key]

    def live_locks(self, scope: DavScope) -> list:
        locks = self._cache("locks")
        if scope.site_id not in locks:
            locks[scope.site_id] = self.call(self.locks.live_locks, scope, self.clock.seconds())
        return locks[scope.site_id]

    def pending_usage(self, site_id: int) -> list:
        """``[count, bytes]`` of the site's properties with those the request's dry run let through."""
        if self._cache("pending") is None:
            self._request.pending = list(self.call(self.properties.property_usage, site_id))
        return self._request.pending


def _insufficient(message: str) -> DAVError:
    return DAVError(HTTP_INSUFFICIENT_STORAGE, message)


class SitePropertyManager:
    """WsgiDAV's property manager for one DAV root: dead properties in the database."""

    def __init__(self, state: DavState, scope: DavScope):
        self.state = state
        self.scope = scope

    def __repr__(self):
        return f"SitePropertyManager(site {self.scope.site_id}, {self.scope.prefix or '/'})"

    def _properties_of(self, norm_url: str) -> dict:
        path = self.scope.to_site(norm_url)
        return self.state.folder_properties(self.scope.site_id, folder_of(path)).get(path, {})

    def get_properties(self, norm_url, environ=None) -> list:
        return list(self._properties_of(norm_url))

    def get_property(self, norm_url, name, environ=None):
        return self._properties_of(norm_url).get(name)

    def write_property(self, norm_url, name, property_value, dry_run=False, environ=None):
        """Dry run (PROPPATCH checks every property first): 507 when this one, with the ones the
        same request set before it, would take the site past a bound; then the real write."""
        value = bytes(property_value)
        limits = self.state.limits
        max_count, max_bytes = limits.max_properties, limits.max_property_bytes
        if dry_run:
            pending = self.state.pending_usage(self.scope.site_id)
            existing = self.get_property(norm_url, name)
            pending[0] += 0 if existing is not None else 1
            pending[1] += property_size(name, value) - (property_size(name, existing) if existing is not None else 0)
            if pending[0] > max_count:
                raise _insufficient(f"this site keeps at most {max_count} dead properties ([dav] max_properties)")
            if pending[1] > max_bytes:
                raise _insufficient(f"this site keeps at most {max_bytes} bytes of dead properties "
                                    "([dav] max_property_bytes)")
            return
        try:
            self.state.call(self.state.properties.put_property, self.scope.site_id, self.scope.to_site(norm_url),
                            name, value, max_count, max_bytes)
        except LimitReached as exc:
            raise _insufficient(str(exc)) from None
        finally:
            self.state.changed()

    def remove_property(self, norm_url, name, dry_run=False, environ=None):
        if dry_run:
            return
        self.state.call(self.state.properties.remove_property, self.scope.site_id, self.scope.to_site(norm_url), name)
        self.state.changed()

    def remove_properties(self, norm_url, environ=None):
        self.state.call(self.state.properties.remove_properties, self.scope.site_id, self.scope.to_site(norm_url))
        self.state.changed()

    def copy_properties(self, src_url, dest_url, environ=None):
        limits = self.state.limits
        try:
            self.state.call(self.state.properties.copy_properties, self.scope.site_id, self.scope.to_site(src_url),
                            self.scope.to_site(dest_url), limits.max_properties, limits.max_property_bytes)
        except LimitReached as exc:
            raise _insufficient(str(exc)) from None
        finally:
            self.state.changed()

    def move_properties(self, src_url, dest_url, with_children, environ=None):
        self.state.call(self.state.properties.move_properties, self.scope.site_id, self.scope.to_site(src_url),
                        self.scope.to_site(dest_url), with_children)
        self.state.changed()


class SiteLockStorage:
    """WsgiDAV's lock storage for one DAV root (``LockManager(storage)``): the site's locks in the
    database or Redis, bounded by ``[dav]``."""

    def __init__(self, state: DavState, scope: DavScope):
        self.state = state
        self.scope = scope

    def __repr__(self):
        return f"SiteLockStorage(site {self.scope.site_id}, {self.scope.prefix or '/'})"

    # WsgiDAV's life cycle calls: nothing is held here.
    def open(self):
        pass

    def close(self):
        pass

    def cleanup(self):
        pass

    def clear(self):
        pass

    def _visible(self) -> list:
        """The site's live locks under this root, with their roots as this root sees them; a
        depth-infinity lock above the root (the administrator's on ``/home``) shows as a lock of
        the root itself, so it holds for the user too."""
        locks = []
        for lock in self.state.live_locks(self.scope):
            root = self.scope.from_site(lock["root"])
            if root is None and lock["depth"] == "infinity" and is_within(self.scope.prefix, lock["root"]):
                root = "/"
            if root is not None:
                locks.append(dict(lock, root=root))
        return locks

    def get(self, token):
        for lock in self._visible():
            if lock["token"] == token:
                return lock
        return None

    def create(self, path, lock):
        """Store a new lock: its timeout cut to ``[dav] max_lock_timeout``; 403 for an owner larger
        than ``max_lock_owner``, 507 when the site holds ``max_locks``."""
        limits = self.state.limits
        owner = bytes(lock.get("owner") or b"")
        if len(owner) > limits.max_lock_owner:
            raise DAVError(HTTP_FORBIDDEN, f"a lock's owner may have at most {limits.max_lock_owner} bytes "
                                           "([dav] max_lock_owner)")
        lock["root"] = normalize_lock_root(path)
        lock["owner"] = owner
        lock["timeout"] = self._cut(lock.get("timeout"))
        now = self.state.clock.seconds()
        lock["expire"] = now + lock["timeout"]
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        stored = dict(lock, root=self.scope.to_site(lock["root"]))
        try:
            self.state.call(self.state.locks.create_lock, self.scope, stored, now, limits.max_locks)
        except LimitReached as exc:
            raise _insufficient(str(exc)) from None
        except LockConflict as exc:  # taken since WsgiDAV's check, by another request or node
            condition = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
            condition.add_href(self.scope.from_site(exc.root) or exc.root)
            raise DAVError(HTTP_LOCKED, err_condition=condition) from None
        finally:
            self.state.changed()
        return lock

    def _cut(self, timeout) -> float:
        """The timeout a lock gets: the one asked for, at most ``max_lock_timeout`` (also for infinite)."""
        most = float(self.state.limits.max_lock_timeout)
        if timeout is None:
            return most
        timeout = float(timeout)
        return most if timeout < 0 or timeout > most else timeout

    def refresh(self, token, *, timeout):
        lock = self.get(token)
        if lock is None:
            raise ValueError(f"no such lock: {token}")
        lock["timeout"] = self._cut(timeout)
        lock["expire"] = self.state.clock.seconds() + lock["timeout"]
        try:
            self.state.call(self.state.locks.refresh_lock, self.scope, token, lock["timeout"], lock["expire"])
        finally:
            self.state.changed()
        return lock

    def delete(self, token) -> bool:
        if self.get(token) is None:  # never another root's lock, nor an ended one
            return False
        try:
            return self.state.call(self.state.locks.delete_lock, self.scope, token)
        finally:
            self.state.changed()

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        path = normalize_lock_root(path)
        found = []
        for lock in self._visible():
            root = lock["root"]
            if (include_root and root == path) or (include_children and root != path and is_within(root, path)):
                found.append(lock["token"] if token_only else lock)
        return found


def storage_caller(most_at_once: int) -> Callable:
    """``call(fn, *args)`` for a DAV thread: ``fn(*args)`` (storage work) on the calling thread as
    the server (:func:`apiserver.sites.actas.server_step`: root again, for the database's own file
    or socket, then the account again), at most ``most_at_once`` threads at once (the database
    connections the blocking pool does not hold); its result, or its exception raised.

    Not handed through the reactor to the blocking pool and back (``blockingCallFromThread``):
    that cost four thread switches and work on the reactor and a pool thread per DAV write."""
    from apiserver.sites.actas import server_step

    slots = threading.BoundedSemaphore(most_at_once)

    def call(fn, *args):
        with slots, server_step():
            return fn(*args)

    return call


def dav_state_from_config(settings, storage, clock) -> DavState:
    """The DAV state of ``settings``: properties in ``storage``; locks in the Redis of ``[anvil]
    redis_url`` when ``[anvil] backend=redis``, else in ``storage`` too.  Its calls, made on DAV
    threads, run there (:func:`storage_caller`, at most ``[core] db_threads`` at once)."""
    call_blocking = storage_caller(settings.get("core", "db_threads"))
    database = DbDavState(storage)
    locks = database
    if settings.get("anvil", "backend") == "redis":
        from apiserver.dav.state_redis import RedisDavLocks

        locks = RedisDavLocks(settings.get("anvil", "redis_url"))
    return DavState(database, locks, DavLimits(settings), clock, call_blocking)
