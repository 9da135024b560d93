"""The security event trail (:class:`SecurityEvents`), and the built-in plugin that feeds it.

An append-only table of what matters for security: logins (success and failure, with gate and
method), Anvil blocks and unblocks, API keys created and deleted, passwords changed and reset,
IP restrictions added and removed, scope changes, hijacks and notices that failed for good.
The event hooks (:mod:`apiserver.hookspecs`) feed it; an event names accounts, addresses, gates
and scope names, never a password, key, session id or secret.

:meth:`SecurityEvents.record` runs on the reactor thread and only appends to a bounded queue;
a timer of the injected clock writes the queue in one batch on the blocking pool every
:data:`FLUSH_INTERVAL` seconds, so the hot path never waits for the database.  Reading the
trail writes the queue first.  Events older than ``[audit] keep_days`` are pruned hourly.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from typing import Optional

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.context import Identity
from apiserver.errors import InvalidArgument
from apiserver.hookspecs import hookimpl
from apiserver.internal import internal_api
from apiserver.logs import one_line_error as _one_line
from apiserver.storage import schema, utcnow
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.events")

KINDS = (
    "login_succeeded", "login_failed", "login_blocked", "login_unblocked",
    "api_key_created", "api_key_deleted", "password_changed", "password_reset",
    "ip_restriction_added", "ip_restriction_removed", "scope_changed", "hijack_started", "notice_failed",
    "site_suspended", "site_activated",
)
#: Filters ``admin_get_security_events`` takes.
FILTERS = ("kind", "account", "site", "address")
#: Seconds between batched writes of queued events.
FLUSH_INTERVAL = 1.0
#: Seconds between prunings of old events.
PRUNE_INTERVAL = 3600.0
#: Most events queued at once (a database outage must not fill the memory); more are counted, dropped.
QUEUE_LIMIT = 100_000
#: Events listed when no limit is given.
DEFAULT_LIMIT = 1000

_events = schema.security_events
_COLUMNS = ("at", "kind", "user_id", "account", "site", "address", "gate", "detail")


@dataclasses.dataclass
class SecurityEvent:
    """One security event: when (UTC), what, whose account (``account`` at ``site``, null for the
    appliance), from which client address and gate, and a short detail."""

    time: datetime.datetime
    kind: str
    account: Optional[str]
    site: Optional[str]
    address: Optional[str]
    gate: Optional[str]
    detail: Optional[str]


def _gate(gate) -> Optional[str]:
    return None if gate is None else str(getattr(gate, "value", gate))[:8]


def _row(seconds: float, kind: str, identity: Optional[Identity], address, gate, detail) -> dict:
    """The ``security_events`` values of one queued event."""
    at = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(tzinfo=None)
    return {"at": at, "kind": kind, "user_id": identity.user_id if identity else None,
            "account": identity.username if identity else None, "site": identity.site if identity else None,
            "address": None if address is None else str(address)[:64], "gate": _gate(gate),
            "detail": None if detail is None else str(detail)[:255]}



def _by(actor: Optional[Identity]) -> str:
    if actor is None:
        return ""
    if actor.impersonator is not None:
        return f"by {actor.impersonator.describe()} acting as {actor.describe()}"
    return f"by {actor.describe()}"


class SecurityEvents(service.Service):
    """The trail: ``record`` (reactor thread), batched writes, pruning and queries (blocking)."""

    name = "security-events"

    def __init__(self, storage, clock, run_blocking, config):
        self.storage = storage
        self.clock = clock
        self.run_blocking = run_blocking
        self.config = config
        self._lock = threading.Lock()         # the queue (reactor thread and pool)
        self._write_lock = threading.Lock()   # one batch written at a time
        self._pending: list[tuple] = []
        self._dropped = 0            # since the last write that succeeded (logged then)
        self._failing = False        # the last write failed (the outage is logged once)
        #: Events dropped since start because more than QUEUE_LIMIT waited to be written.
        self.dropped_total = 0
        #: The batch writer and the hourly pruning, on ``clock`` (tests wait on their ``idle()``).
        self.flush_timer = WorkTimer(clock, FLUSH_INTERVAL, self.flush, None, name="security events: writing")
        self.prune_timer = WorkTimer(clock, PRUNE_INTERVAL, self.prune, run_blocking, name="security events: pruning",
                                     on_failure=lambda failure: log.error("pruning security events failed: {error}",
                                                                          error=_one_line(failure.value)))
        self._statement = None  # (SQL, parameter order) of the batch insert, for this database

    # --- reactor thread ---------------------------------------------------------------------
    def record(self, kind: str, identity: Optional[Identity] = None, address: Optional[str] = None, gate=None,
               detail: Optional[str] = None) -> None:
        """Queue one event (nothing when ``[audit] enabled`` is false)."""
        if not self.config.get("audit", "enabled"):
            return
        # As little as possible here: the row is built when the batch is written, on the pool.
        event = (self.clock.seconds(), kind, identity, address, gate, detail)
        with self._lock:
            if len(self._pending) < QUEUE_LIMIT:
                self._pending.append(event)
            else:
                self._dropped += 1
                self.dropped_total += 1

    def queued(self) -> int:
        """How many events wait to be written."""
        return len(self._pending)

    def flush(self) -> defer.Deferred:
        """Write the queued events on the blocking pool."""
        with self._lock:
            idle = not self._pending
        if idle:
            return defer.succeed(None)
        d = self.run_blocking(self.write_pending)
        d.addErrback(lambda failure: None)  # write_pending logged the outage once; the events wait
        return d

    def startService(self):
        super().startService()
        self.flush_timer.start(now=False)
        self.prune_timer.start(now=True)

    def stopService(self):
        super().stopService()
        stopped = defer.gatherResults([self.flush_timer.stop(), self.prune_timer.stop()])
        return stopped.addCallback(lambda _: self.flush())

    # --- blocking ---------------------------------------------------------------------------
    def write_pending(self) -> None:
        """Blocking.  Insert the queued events in one transaction.

        Writers take turns, so when this returns every event queued before the call is stored
        (one taken by a flush still running is committed before this call goes on).
        """
        with self._write_lock:
            with self._lock:
                events, self._pending = self._pending, []
            if not events:
                return
            try:
                with self.storage.write() as conn:
                    self._insert(conn, [_row(*event) for event in events])
            except Exception as exc:
                with self._lock:  # kept for the next flush, oldest first, within the bound
                    waiting = events + self._pending
                    self._pending = waiting[:QUEUE_LIMIT]
                    lost = len(waiting) - len(self._pending)
                    self._dropped += lost
                    self.dropped_total += lost
                    first, self._failing = not self._failing, True
                if first:  # one line for the whole outage, however long
                    log.error("security events could not be written (kept in memory, at most {limit}; "
                              "more are counted and dropped): {error}", limit=QUEUE_LIMIT, error=_one_line(exc))
                raise
            with self._lock:
                dropped, self._dropped = self._dropped, 0
                recovered, self._failing = self._failing, False
            if dropped:
                log.warn("{count} security events were dropped: more than {limit} waited to be written",
                         count=dropped, limit=QUEUE_LIMIT)
            elif recovered:
                log.info("security events are written again")

    def _insert(self, conn, rows: list[dict]) -> None:
        """One executemany through the driver: SQLAlchemy's per-row parameter processing would
        cost twice the insert itself, holding the GIL the reactor needs."""
        if self._statement is None:
            compiled = _events.insert().values({c: sa.bindparam(c) for c in _COLUMNS}).compile(dialect=conn.dialect)
            self._statement = (compiled.string, compiled.positiontup)
        sql, positions = self._statement
        if self.storage.is_sqlite:  # SQLAlchemy's own text form of a DateTime on SQLite
            for row in rows:
                row["at"] = row["at"].strftime("%Y-%m-%d %H:%M:%S.%f")
        if positions:
            conn.exec_driver_sql(sql, [tuple(row[name] for name in positions) for row in rows])
        else:
            conn.exec_driver_sql(sql, rows)

    def prune(self) -> int:
        """Blocking.  Delete events older than ``[audit] keep_days``; returns how many."""
        cutoff = utcnow(self.clock) - datetime.timedelta(days=self.config.get("audit", "keep_days"))
        with self.storage.write() as conn:
            return conn.execute(_events.delete().where(_events.c.at < cutoff)).rowcount

    def list(self, identity: Optional[Identity] = None, filters: Optional[dict] = None,
             limit: Optional[int] = None) -> list[SecurityEvent]:
        """Blocking.  Events newest first: of ``identity``'s account only when given, matching
        ``filters`` (``kind``, ``account``, ``site``, ``address``); at most ``limit`` (default 1000)."""
        if limit is not None and limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        self.write_pending()
        query = sa.select(_events).order_by(_events.c.at.desc(), _events.c.id.desc()).limit(limit or DEFAULT_LIMIT)
        if identity is not None:
            query = query.where(_events.c.user_id == identity.user_id, _events.c.account == identity.username,
                                _events.c.site.is_(None) if identity.site is None else _events.c.site == identity.site)
        for name, value in (filters or {}).items():
            if name not in FILTERS:
                raise InvalidArgument(f"filter: unknown key {name!r}; use {', '.join(FILTERS)}")
            if value is None or value == "":
                continue
            value = str(value)
            if name == "kind" and value not in KINDS:
                raise InvalidArgument(f"filter: unknown kind {value!r}; one of {', '.join(KINDS)}")
            column = _events.c[name]
            query = query.where(column == (value.strip().lower().rstrip(".") if name == "site" else value))
        with self.storage.read() as conn:
            rows = conn.execute(query).all()
        return [SecurityEvent(time=r.at, kind=r.kind, account=r.account, site=r.site, address=r.address,
                              gate=r.gate, detail=r.detail) for r in rows]


# --- the built-in plugin: event hooks -> trail ----------------------------------------------

def _record(api, kind: str, **fields) -> None:
    internal_api(api).security_events.record(kind, **fields)


@hookimpl
def apiserver_login_succeeded(api, identity, address, gate, method):
    """Trail: a successful login (key or password) of ``identity``."""
    _record(api, "login_succeeded", identity=identity, address=address, gate=gate, detail=f"method {method}")


@hookimpl
def apiserver_login_failed(api, address, gate, reason):
    """Trail: a failed authentication (``reason``: key, password, session, ip, blocked)."""
    detail = {"ip": "address refused by an IP restriction",
              "blocked": "attempt while the address is blocked"}.get(reason, f"method {reason}")
    _record(api, "login_failed", address=address, gate=gate, detail=detail)


@hookimpl
def apiserver_login_blocked(api, address, until):
    """Trail: Anvil blocks ``address``."""
    ends = datetime.datetime.fromtimestamp(until, datetime.timezone.utc)
    _record(api, "login_blocked", address=address, detail=f"blocked until {ends:%Y-%m-%d %H:%M:%S} UTC")


@hookimpl
def apiserver_login_unblocked(api, address):
    """Trail: Anvil's block of ``address`` ended."""
    _record(api, "login_unblocked", address=address)


@hookimpl
def apiserver_api_key_created(api, owner, actor, comment):
    """Trail: an API key of ``owner`` was created (never the key)."""
    _record(api, "api_key_created", identity=owner, detail=_by(actor))


@hookimpl
def apiserver_api_key_deleted(api, owner, actor):
    """Trail: an API key of ``owner`` was deleted (never the key)."""
    _record(api, "api_key_deleted", identity=owner, detail=_by(actor))


@hookimpl
def apiserver_password_changed(api, target, actor, reset, address):
    """Trail: ``target``'s password was changed or reset (never the password)."""
    _record(api, "password_reset" if reset else "password_changed", identity=target, address=address,
            detail=_by(actor))


@hookimpl
def apiserver_ip_restriction_added(api, identity, ip, gate, address):
    """Trail: ``identity`` allowed ``ip`` at ``gate``."""
    _record(api, "ip_restriction_added", identity=identity, address=address,
            detail=f"{ip} at gate {gate}" if gate else f"{ip} at every gate")


@hookimpl
def apiserver_ip_restriction_removed(api, identity, ip, gate, address):
    """Trail: ``identity`` removed the entry ``ip`` at ``gate``."""
    _record(api, "ip_restriction_removed", identity=identity, address=address,
            detail=f"{ip} at gate {gate}" if gate else f"{ip} at every gate")


@hookimpl
def apiserver_scope_changed(api, name, old, new, actor):
    """Trail: scope ``name`` changed (the name only: values may be secrets)."""
    _record(api, "scope_changed", identity=actor, detail=name)


@hookimpl
def apiserver_hijack_started(api, actor, target, gate, address):
    """Trail: ``actor`` opened a session acting as ``target``."""
    _record(api, "hijack_started", identity=target, address=address, gate=gate, detail=_by(actor))


@hookimpl
def apiserver_site_suspended(api, site, actor, reason):
    """Trail: ``actor`` suspended ``site`` (the reason is not kept here: it may name a person)."""
    _record(api, "site_suspended", identity=actor, detail=f"site {site}")


@hookimpl
def apiserver_site_activated(api, site, actor):
    """Trail: ``actor`` activated ``site`` again."""
    _record(api, "site_activated", identity=actor, detail=f"site {site}")
