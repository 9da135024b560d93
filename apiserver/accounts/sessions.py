"""Sessions: the ``esprit_id`` cookie a hijack returns, ending after ``[session] ttl`` idle seconds.

Ids are ``secrets.token_hex(32)`` (256 bits).  Idleness is measured on the injected clock; every
successful ``get`` slides the expiry.  ``memory`` keeps sessions in this process (bounded,
expired ones pruned as new ones are made); ``db`` keeps them in the ``sessions`` table (only a
SHA-256 of the id is stored) and ``redis`` in Redis, so several nodes share them.  A session
may carry one opaque string, ``data`` (a UI login keeps its sealed password there), which no
``repr`` shows.
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
from apiserver.context import Identity
from apiserver.storage import schema

#: Most sessions the memory store keeps; the least recently used go first beyond it.
MEMORY_LIMIT = 100_000


@dataclasses.dataclass(frozen=True)
class Session:
    """A live session: who it acts as, the gate it is bound to (None: any gate) and its data."""

    identity: Identity
    gate: Optional[str] = None
    data: Optional[str] = dataclasses.field(default=None, repr=False)


def new_session_id() -> str:
    """A new session id: 256 random bits as 64 lower-case hex characters."""
    return secrets.token_hex(32)


def _id_hash(sid: str) -> str:
    """What the shared stores keep instead of the id: a copy of them yields no live session."""
    return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()


class SessionStore(abc.ABC):
    """Where sessions live.  ``blocking`` stores must be called on the blocking pool."""

    blocking = False

    def __init__(self, clock, ttl: Callable[[], float]):
        self._clock = clock
        self._ttl = ttl  # read on every use: [session] ttl may change at run time

    @abc.abstractmethod
    def create(self, identity: Identity, gate: Optional[str] = None, data: Optional[str] = None) -> str:
        """Start a session acting as ``identity`` (optionally bound to ``gate``, carrying ``data``);
        returns its id."""

    @abc.abstractmethod
    def lookup(self, sid: str) -> Optional[Session]:
        """The live session ``sid`` (its idle time restarts), or None if unknown or expired."""

    @abc.abstractmethod
    def delete(self, sid: str) -> None:
        """End session ``sid`` (nothing happens if it does not exist)."""

    @abc.abstractmethod
    def take(self, sid: str) -> Optional[Session]:
        """End live session ``sid`` and return it, atomically: of several callers taking the same
        id (on any node) one gets the session, the others None (a single-sign-on link serves once)."""

    @abc.abstractmethod
    def forget_users(self, user_ids: Iterable[int]) -> None:
        """End every session acting as, or opened by, one of ``user_ids`` (deleted accounts,
        reset passwords)."""

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

    def create(self, identity: Identity, gate: Optional[str] = None, data: Optional[str] = None) -> str:
        sid = new_session_id()
        now = self._clock.seconds()
        with self._lock:
            self._prune(now)
            self._sessions[sid] = (Session(identity, gate, data), now)
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

    def take(self, sid: str) -> Optional[Session]:
        now = self._clock.seconds()
        with self._lock:
            entry = self._sessions.pop(sid, None)
        if entry is None or now - entry[1] >= self._ttl():
            return None
        return entry[0]

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

    def create(self, identity: Identity, gate: Optional[str] = None, data: Optional[str] = None) -> str:
        sid = new_session_id()
        now = self._clock.seconds()
        t = schema.sessions
        with self._storage.write() as conn:
            if now >= self._next_prune:
                self._next_prune = now + self.PRUNE_INTERVAL
                conn.execute(t.delete().where(t.c.last_seen <= now - self._ttl()))
            conn.execute(t.insert().values(
                id_hash=_id_hash(sid), user_id=identity.user_id,
                impersonator_id=identity.impersonator.user_id if identity.impersonator else None,
                gate=gate, data=data, created=now, last_seen=now))
        return sid

    def lookup(self, sid: str) -> Optional[Session]:
        return self._find(sid, take=False)

    def take(self, sid: str) -> Optional[Session]:
        return self._find(sid, take=True)

    def _find(self, sid: str, take: bool) -> Optional[Session]:
        now = self._clock.seconds()
        t = schema.sessions
        key = _id_hash(sid)
        with self._storage.write() as conn:
            row = conn.execute(sa.select(t).where(t.c.id_hash == key)).first()
            if row is None:
                return None
            if now - row.last_seen >= self._ttl():
                conn.execute(t.delete().where(t.c.id_hash == key))
                return None
            if take:
                # The row count says who won when several take the same id at once.
                if conn.execute(t.delete().where(t.c.id_hash == key)).rowcount != 1:
                    return None
            else:
                conn.execute(t.update().where(t.c.id_hash == key).values(last_seen=now))
            impersonator = load_identity(conn, row.impersonator_id) if row.impersonator_id else None
            identity = load_identity(conn, row.user_id)
        if identity is None or (row.impersonator_id is not None and impersonator is None):
            return None  # an account of the session was deleted
        return Session(dataclasses.replace(identity, impersonator=impersonator), row.gate, row.data)

    def delete(self, sid: str) -> None:
        with self._storage.write() as conn:
            conn.execute(schema.sessions.delete().where(schema.sessions.c.id_hash == _id_hash(sid)))

    def forget_users(self, user_ids: Iterable[int]) -> None:
        ids = list(user_ids)
        t = schema.sessions
        with self._storage.write() as conn:
            conn.execute(t.delete().where(sa.or_(t.c.user_id.in_(ids), t.c.impersonator_id.in_(ids))))


class RedisSessionStore(SessionStore):
    """Sessions in Redis (one hash per session under ``prefix``), shared by every node.

    Idleness is judged on the clock like the other stores; Redis's own expiry only clears
    what nobody asks for again.  The identity is read from the database on each look-up.  Each
    account has a set of its sessions' keys (``prefix`` ``user:ID``) so that ``forget_users``
    ends them: waiting for the look-up to miss is not enough, as SQLite and MariaDB may give a
    deleted account's id to the next account created.
    """

    blocking = True
    DEFAULT_PREFIX = "apiserver:session:"

    def __init__(self, clock, ttl: Callable[[], float], storage, url: str, prefix: str = DEFAULT_PREFIX):
        import redis  # only needed by this backend (extra "redis")

        super().__init__(clock, ttl)
        self._storage = storage
        self._prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def _key(self, sid: str) -> str:
        return self._prefix + _id_hash(sid)

    def _index(self, user_id) -> str:
        """The set of the session keys of account ``user_id``."""
        return f"{self._prefix}user:{user_id}"

    def _keep_alive(self, pipe, key: str, *user_ids) -> None:
        """Let the session and its accounts' indexes live ``ttl`` more seconds."""
        seconds = int(self._ttl()) + 1
        pipe.expire(key, seconds)
        for user_id in user_ids:
            if user_id != "":
                pipe.expire(self._index(user_id), seconds)

    def create(self, identity: Identity, gate: Optional[str] = None, data: Optional[str] = None) -> str:
        sid = new_session_id()
        key = self._key(sid)
        impersonator = identity.impersonator.user_id if identity.impersonator else ""
        fields = {"uid": identity.user_id, "imp": impersonator, "gate": gate or "", "last": repr(self._clock.seconds())}
        if data is not None:
            fields["data"] = data
        pipe = self.client.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.sadd(self._index(identity.user_id), key)
        if impersonator != "":
            pipe.sadd(self._index(impersonator), key)
        self._keep_alive(pipe, key, identity.user_id, impersonator)
        pipe.execute()
        return sid

    def lookup(self, sid: str) -> Optional[Session]:
        return self._find(sid, take=False)

    def take(self, sid: str) -> Optional[Session]:
        return self._find(sid, take=True)

    def _find(self, sid: str, take: bool) -> Optional[Session]:
        key = self._key(sid)
        if take:
            pipe = self.client.pipeline(transaction=True)  # MULTI: read and delete as one
            pipe.hgetall(key)
            pipe.delete(key)
            raw, deleted = pipe.execute()
            if deleted != 1:
                return None
        else:
            raw = self.client.hgetall(key)
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        now = self._clock.seconds()
        if not fields:
            return None
        if now - float(fields["last"]) >= self._ttl():
            self.client.delete(key)
            return None
        if not take:
            pipe = self.client.pipeline()
            pipe.hset(key, "last", repr(now))
            self._keep_alive(pipe, key, fields["uid"], fields["imp"])
            pipe.execute()
        with self._storage.read() as conn:
            identity = load_identity(conn, int(fields["uid"]))
            impersonator = load_identity(conn, int(fields["imp"])) if fields["imp"] else None
        if identity is None or (fields["imp"] and impersonator is None):
            self.client.delete(key)
            return None
        return Session(dataclasses.replace(identity, impersonator=impersonator), fields["gate"] or None,
                       fields.get("data"))

    def delete(self, sid: str) -> None:
        self.client.delete(self._key(sid))

    def forget_users(self, user_ids: Iterable[int]) -> None:
        for user_id in user_ids:
            index = self._index(user_id)
            self.client.delete(*self.client.smembers(index), index)


def make_session_store(settings, clock, storage) -> SessionStore:
    """The store ``[session] backend`` names: ``memory``, ``db`` or ``redis`` (at ``[session] redis_url``)."""
    backend = settings.get("session", "backend")
    ttl = lambda: settings.get("session", "ttl")  # noqa: E731 - read live, changes apply at once
    if backend == "db":
        return DatabaseSessionStore(clock, ttl, storage)
    if backend == "redis":
        return RedisSessionStore(clock, ttl, storage, settings.get("session", "redis_url"))
    return MemorySessionStore(clock, ttl)
