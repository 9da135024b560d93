"""The traffic each site carried: counted at the gates in memory, stored per day.

:class:`TrafficMeter` adds up, on the reactor thread, the bytes of every request answered for
a site (:meth:`TrafficMeter.observe_request`, a request observer of the HTTP site: the request
body received plus the response body sent, DAV uploads and downloads above all, SOAP and
XML-RPC calls too), and what plugins report through ``apiserver_report_traffic`` (traffic
measured outside apiserver's gates).  Every ``[usage] flush_interval`` seconds of its clock,
and when it stops, it adds what it holds to ``site_traffic`` (one row per site and UTC day of
the flush) on the blocking pool; a flush that fails keeps the bytes for the next one.
:meth:`TrafficMeter.pending` is what is held and not stored yet, which the answers add.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.lifecycle import store
from apiserver.storage import schema
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.lifecycle.traffic")

DAY = 86400


class TrafficMeter(service.Service):
    """Bytes carried per site, in memory until flushed (see the module docstring).

    ``storage``: the rows; ``clock``: the flush timer and the day; ``run_blocking``: the pool;
    ``settings``: the config (``[usage] flush_interval``); ``fire``: the event hooks (plugins'
    reports).
    """

    def __init__(self, storage, clock, run_blocking: Callable, settings, fire: Callable):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._settings = settings
        self._fire = fire
        self._pending: dict = {}  # site number -> bytes
        #: Flushes every ``[usage] flush_interval`` (made at start; tests wait on its ``idle()``).
        self.timer: Optional[WorkTimer] = None
        self._flushing: Optional[defer.Deferred] = None
        self._reports_kept: dict = {}  # plugins' reports a failed flush could not store

    # --- counting (reactor thread) ------------------------------------------------------------
    def carried(self, site_id: int, nbytes: int) -> None:
        """Count ``nbytes`` carried for site number ``site_id``."""
        if nbytes > 0:
            self._pending[site_id] = self._pending.get(site_id, 0) + nbytes

    def observe_request(self, request) -> None:
        """A request observer: an answered request that acted for a site (``api_site_id``, noted
        by the gate once the caller was admitted) counts its request and response bodies."""
        site_id = getattr(request, "api_site_id", None)
        if site_id is not None:
            self.carried(site_id, getattr(request, "body_length", 0) + (request.sentLength or 0))

    def pending(self) -> dict:
        """``{N: bytes}`` counted and not stored yet (any thread: a copy)."""
        return dict(self._pending)

    # --- storing --------------------------------------------------------------------------------
    def startService(self):
        super().startService()
        self.timer = WorkTimer(self._clock, self._settings.get("usage", "flush_interval"), self.flush, None,
                               name="traffic flush")
        self.timer.start(now=False)

    def stopService(self):
        super().stopService()
        stopped = self.timer.stop() if self.timer is not None else defer.succeed(None)
        return stopped.addCallback(lambda _: self.flush())  # after a flush under way: the rest

    def flush(self) -> defer.Deferred:
        """Collect the plugins' reports, then store what is held; fires when stored (or when it
        failed: logged, the bytes stay for the next flush).  A flush under way is waited for."""
        if self._flushing is not None:
            return self._flushing
        flushing = self._flushing = defer.ensureDeferred(self._flush())
        flushing.addBoth(self._flushed)
        return flushing

    def _flushed(self, result):
        self._flushing = None
        return result

    async def _flush(self) -> None:
        reports = await self._reports()
        held, self._pending = self._pending, {}
        if not held and not reports:
            return
        day = int(self._clock.seconds() // DAY)
        try:
            unknown = await self._run_blocking(store_traffic, self._storage, day, held, reports)
        except Exception as exc:
            log.error("storing the traffic of {count} site(s) failed; kept for the next flush: {error}",
                      count=len(held) + len(reports), error=exc)
            for site_id, nbytes in held.items():
                self.carried(site_id, nbytes)
            self._reports_kept = reports
            return
        for name in unknown:
            log.warn("a plugin reported traffic of {site!r}, which is no site; dropped", site=name)

    async def _reports(self) -> dict:
        """``{site name: bytes}`` the plugins report (and what a failed flush kept of them)."""
        total, self._reports_kept = dict(self._reports_kept), {}
        results = self._fire("apiserver_report_traffic")
        for result in results:
            if isinstance(result, defer.Deferred):
                try:
                    result = await result
                except Exception:
                    continue  # logged by fire_event's errback
            if not result:
                continue
            if not isinstance(result, dict):
                log.error("apiserver_report_traffic must answer {{site: bytes}}, got {type}",
                          type=type(result).__name__)
                continue
            for site, nbytes in result.items():
                amount = _bytes(nbytes)
                if amount is None:
                    log.error("apiserver_report_traffic: {site!r}: not a number of bytes: {value!r}", site=site,
                              value=nbytes)
                    continue
                total[str(site)] = total.get(str(site), 0) + amount
        return total


def _bytes(value) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return int(value)
    return None


def store_traffic(storage, day: int, counted: dict, reported: dict) -> list:
    """Blocking.  Add ``counted`` (``{N: bytes}``) and ``reported`` (``{site id or domain: bytes}``)
    to day ``day``'s rows, in one transaction; the names of ``reported`` that are no site."""
    table = schema.site_traffic
    unknown = []
    with storage.write() as conn:
        amounts = dict(counted)
        for name, nbytes in reported.items():
            found = store.resolve_many(conn, [name]) if name else []
            if len(found) != 1:
                unknown.append(name)
                continue
            amounts[found[0].id] = amounts.get(found[0].id, 0) + nbytes
        existing = {row.site_id for row in conn.execute(sa.select(schema.sites.c.id.label("site_id")).where(
            schema.sites.c.id.in_(list(amounts))))} if amounts else set()
        for site_id, nbytes in amounts.items():
            if site_id not in existing or nbytes <= 0:
                continue  # deleted since
            where = (table.c.site_id == site_id) & (table.c.day == day)
            if conn.execute(table.update().where(where).values(bytes=table.c.bytes + nbytes)).rowcount == 0:
                conn.execute(table.insert().values(site_id=site_id, day=day, bytes=nbytes))
    return unknown


def stored_traffic(conn: sa.Connection, periods: dict) -> dict:
    """``{N: bytes}`` stored for each site within its period (``periods[N] = (begin, end)``, Unix
    seconds at 00:00 UTC)."""
    table = schema.site_traffic
    out = {site_id: 0 for site_id in periods}
    if not periods:
        return out
    first = min(begin for begin, _ in periods.values()) // DAY
    last = max(end for _, end in periods.values()) // DAY
    ids = list(periods)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows = conn.execute(sa.select(table.c.site_id, table.c.day, table.c.bytes).where(
            table.c.site_id.in_(chunk), table.c.day >= first, table.c.day < last))
        for row in rows:
            begin, end = periods[row.site_id]
            if begin // DAY <= row.day < end // DAY:
                out[row.site_id] += int(row.bytes)
    return out
