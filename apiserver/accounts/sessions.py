"""Sessions: the ``esprit_id`` cookie a hijack returns, ending after ``[session] ttl`` idle seconds.

Ids are ``secrets.token_hex(32)`` (256 bits).  Idleness is measured on ``app.clock``; every
successful ``get`` slides the expiry.  ``memory`` keeps sessions in this process (bounded,
expired ones pruned as new ones are made); ``db`` keeps them in the ``sessions`` table (only a
SHA-256 of the id is stored) so several nodes share them.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import hashlib
import secrets
import threading
from typing import Callable, Iterable, Optional

import sqlalchemy as sa

from apiserver.accounts.identities import load_identity
from apiserver.config import ConfigError
from apiserver.context import Identity
from apiserver.storage import schema

#: Most sessions the memory store keeps; the least recently used go first beyond it.
MEMORY_LIMIT = 100_000


@dataclasses.dataclass(frozen=True)
class Session:
    """A live session: who it acts as, and the gate it is bound to (None: any gate)."""

    identity: Identity
    gate: Optional[str] = None


def new_session_id() -> str:
    return secrets.token_hex(32)


class SessionStore(abc.ABC):
    """Where sessions live.  ``blocking`` stores must be called on the blocking pool."""

    blocking = False

    def __init__(self, clock, ttl: Callable[[], float]):
        self._clock = clock
        self._ttl = ttl  # read on every use: [session] ttl may change at run time

    @abc.abstractmethod
    def create(self, identity: Identity, gate: Optional[str] = None) -> str:
        """Start a session acting as ``identity`` (optionally bound to ``gate``); returns its id."""

    @abc.abstractmethod
    def lookup(self, sid: str) -> Optional[Session]:
        """The live session ``sid`` (its idle time restarts), or None if unknown or expired."""

    @abc.abstractmethod
    def delete(self, sid: str) -> None:
        """End session ``sid`` (nothing happens if it does not exist)."""

    @abc.abstractmethod
    def forget_users(self, user_ids: Iterable[int]) -> None:
        """End every session acting as, or opened by, one of ``user_ids`` (deleted accounts)."""

    def get(self, sid: str) -> Optional[Identity]:
        """The identity of live session ``sid``, or None."""
        session = self.lookup(sid) if isinstance(sid, str) and sid else None
        return session.identity if session else None


class MemorySessionStore(SessionStore):
    """Sessions in this process, least recently used first; bounded by :data:`MEMORY_LIMIT`."""

    def __init__(self, clock, ttl: Callable[[], float], limit: int = MEMORY_LIMIT):
        super().__init__(clock, ttl)
        self._limit = limit
        self._lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, tuple[Session, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, identity: Identity, gate: Optional[str] = None) -> str:
        sid = new_session_id()
        now = self._clock.seconds()
        with self._lock:
            self._prune(now)
            self._sessions[sid] = (Session(identity, gate), now)
            while len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
        return sid

    def lookup(self, sid: str) -> Optional[Session]:
        now = self._clock.seconds()
        with self._lock:
            entry = self._sessions.get(sid)
            if entry is None:
                return None
            session, last_seen = entry
            if now - last_seen >= self._ttl():
                del self._sessions[sid]
                return None
            self._sessions[sid] = (session, now)
            self._sessions.move_to_end(sid)
            return session

    def delete(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def forget_users(self, user_ids: Iterable[int]) -> None:
        gone = set(user_ids)
        with self._lock:
            for sid in [sid for sid, (s, _) in self._sessions.items() if _involves(s.identity, gone)]:
                del self._sessions[sid]

    def _prune(self, now: float) -> None:
        # Ordered by last use, so expired sessions are all at the front.
        ttl = self._ttl()
        while self._sessions:
            sid, (_, last_seen) = next(iter(self._sessions.items()))
            if now - last_seen < ttl:
                break
            del self._sessions[sid]


def _involves(identity: Optional[Identity], user_ids: set) -> bool:
    while identity is not None:
        if identity.user_id in user_ids:
            return True
        identity = identity.impersonator
    return False


class DatabaseSessionStore(SessionStore):
    """Sessions in the ``sessions`` table, shared by every node on the same database."""

    blocking = True
    #: Seconds of clock between sweeps of expired rows.
    PRUNE_INTERVAL = 60.0

    def __init__(self, clock, ttl: Callable[[], float], storage):
        super().__init__(clock, ttl)
        self._storage = storage
        self._next_prune = 0.0

    @staticmethod
    def _hash(sid: str) -> str:
        return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()

    def create(self, identity: Identity, gate: Optional[str] = None) -> str:
        sid = new_session_id()
        now = self._clock.seconds()
        t = schema.sessions
        with self._storage.write() as conn:
            if now >= self._next_prune:
                self._next_prune = now + self.PRUNE_INTERVAL
                conn.execute(t.delete().where(t.c.last_seen <= now - self._ttl()))
            conn.execute(t.insert().values(
                id_hash=self._hash(sid), user_id=identity.user_id,
                impersonator_id=identity.impersonator.user_id if identity.impersonator else None,
                gate=gate, created=now, last_seen=now))
        return sid

    def lookup(self, sid: str) -> Optional[Session]:
        now = self._clock.seconds()
        t = schema.sessions
        key = self._hash(sid)
        with self._storage.write() as conn:
            row = conn.execute(sa.select(t).where(t.c.id_hash == key)).first()
            if row is None:
                return None
            if now - row.last_seen >= self._ttl():
                conn.execute(t.delete().where(t.c.id_hash == key))
                return None
            conn.execute(t.update().where(t.c.id_hash == key).values(last_seen=now))
            impersonator = load_identity(conn, row.impersonator_id) if row.impersonator_id else None
            identity = load_identity(conn, row.user_id)
        if identity is None or (row.impersonator_id is not None and impersonator is None):
            return None  # an account of the session was deleted
        return Session(dataclasses.replace(identity, impersonator=impersonator), row.gate)

    def delete(self, sid: str) -> None:
        with self._storage.write() as conn:
            conn.execute(schema.sessions.delete().where(schema.sessions.c.id_hash == self._hash(sid)))

    def forget_users(self, user_ids: Iterable[int]) -> None:
        """Nothing to do: the foreign keys' ON DELETE CASCADE removed those rows with the accounts."""


def make_session_store(app) -> SessionStore:
    """The store ``[session] backend`` names (``memory`` or ``db``)."""
    backend = app.config.get("session", "backend")
    ttl = lambda: app.config.get("session", "ttl")  # noqa: E731 - read live, changes apply at once
    if backend == "db":
        return DatabaseSessionStore(app.clock, ttl, app.storage)
    if backend == "memory":
        return MemorySessionStore(app.clock, ttl)
    raise ConfigError("session", "backend", f"{backend} sessions are not available yet; use memory or db")
