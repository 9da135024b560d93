"""Usage of storage and traffic per site: the figures ``admin_get_usage`` and the ``site`` module
answer, and the seam where measurements come in.

Limits come from the site's stored values (``diskquota.*``, ``bandwidth.*``), converted to the
units ApisCP answers in: storage in KB and inodes (``qsoft``/``qhard``, ``fsoft``/``fhard``),
traffic in bytes per period (``threshold``; the period runs from ``bandwidth.rollover``, else the
day of the month the site was made, to the same day a month later, 00:00 UTC).  A null limit
means unlimited (a disabled service has none).

What a site *uses* comes from a :class:`UsageSource`: :class:`MeasuredUsage` answers the
figures stored by the background recount (:mod:`apiserver.lifecycle.recount`) and the traffic
stored and held by the meter (:mod:`apiserver.lifecycle.traffic`).  A new site is measured
when it is made (its near-empty home: a quick count); a site still not measured (that count
failed) has null storage figures ("not measured"), never a made-up zero.
"""

from __future__ import annotations

import calendar
import datetime
import json
import math
from typing import Optional

from apiserver.lifecycle import services
from apiserver.lifecycle.recount import stored_storage
from apiserver.lifecycle.store import SiteRecord
from apiserver.lifecycle.traffic import stored_traffic

STORAGE, BANDWIDTH = "storage", "bandwidth"
FIELDS = (STORAGE, BANDWIDTH)


class UsageSource:
    """Where measured use comes from.  Both methods block and answer ``{site number: figure}``,
    a figure being None when that site's use is not known."""

    def storage(self, sites: list) -> dict:
        """``{N: (KB used, files used)}``."""
        raise NotImplementedError

    def bandwidth(self, sites: list, periods: dict) -> dict:
        """``{N: bytes carried}`` within ``periods[N] = (begin, end)`` (Unix seconds)."""
        raise NotImplementedError


class MeasuredUsage(UsageSource):
    """What was measured: the stored storage counts, and the traffic stored plus what ``meter``
    (:class:`apiserver.lifecycle.traffic.TrafficMeter`) holds and has not stored yet."""

    def __init__(self, storage, meter):
        self._storage = storage
        self._meter = meter

    def storage(self, sites: list) -> dict:
        with self._storage.read() as conn:
            stored = stored_storage(conn, [site.id for site in sites])
        return {site.id: stored.get(site.id) for site in sites}

    def bandwidth(self, sites: list, periods: dict) -> dict:
        with self._storage.read() as conn:
            carried = stored_traffic(conn, {site.id: periods[site.id] for site in sites})
        for site_id, nbytes in self._meter.pending().items():
            if site_id in carried:
                carried[site_id] += nbytes
        return carried


def _value(site: SiteRecord, service: str, name: str):
    return site.value(services.param(service, name))


def storage_limits(site: SiteRecord) -> tuple:
    """``(KB, files)`` the site may use; None for unlimited (or a disabled quota)."""
    return _storage_limits(lambda name: _value(site, "diskquota", name))


def _storage_limits(value) -> tuple:
    if not value("enabled"):
        return None, None
    quota, files = value("quota"), value("fquota")
    units = services.UNIT_BYTES.get(value("units") or "MB", 1024 ** 2)
    kilobytes = None if quota is None else math.ceil(quota * units / 1024)
    return kilobytes, files


#: stored services text -> (KB, files) limits: sites of one plan store the same text, so a
#: thousand sites' limits cost a handful of JSON parses (bounded: cleared past this size)
_LIMITS_BY_TEXT: dict = {}
_LIMITS_CACHE_SIZE = 8192


def storage_limits_of_stored(text: Optional[str]) -> tuple:
    """:func:`storage_limits` of a site from its stored ``services`` column alone."""
    key = text or ""
    limits = _LIMITS_BY_TEXT.get(key)
    if limits is None:
        stored = (json.loads(key) if key else None) or {}
        quota = stored.get("diskquota") or {}
        limits = _storage_limits(lambda name: quota.get(name, services.param("diskquota", name).default))
        if len(_LIMITS_BY_TEXT) >= _LIMITS_CACHE_SIZE:
            _LIMITS_BY_TEXT.clear()
        _LIMITS_BY_TEXT[key] = limits
    return limits


def storage_answer(limits: tuple, used: Optional[tuple]) -> dict:
    """``{qused, qsoft, qhard, fused, fsoft, fhard}`` of ``limits`` (KB, files) and ``used``."""
    kilobytes, files = limits
    return {"qused": used[0] if used else None, "qsoft": kilobytes, "qhard": kilobytes,
            "fused": used[1] if used else None, "fsoft": files, "fhard": files}


def storage_figures(site: SiteRecord, used: Optional[tuple]) -> dict:
    """ApisCP's storage answer: ``{qused, qsoft, qhard, fused, fsoft, fhard}`` (KB and inodes);
    the ``*used`` figures are null when ``used`` is None (not measured)."""
    return storage_answer(storage_limits(site), used)


def bandwidth_threshold(site: SiteRecord) -> Optional[int]:
    """Bytes the site may carry per period; None for unlimited (or disabled)."""
    if not _value(site, "bandwidth", "enabled"):
        return None
    threshold = _value(site, "bandwidth", "threshold")
    if threshold is None:
        return None
    return int(threshold * services.UNIT_BYTES.get(_value(site, "bandwidth", "units") or "GB", 1024 ** 3))


def bandwidth_period(site: SiteRecord, now: float) -> tuple:
    """``(begin, end)`` Unix seconds of the period holding ``now``."""
    day = _value(site, "bandwidth", "rollover") or site.created_at.day
    current = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    begin = _on_day(current.year, current.month, day)
    if begin > current:
        begin = _on_day(*_shift(current.year, current.month, -1), day)
    end = _on_day(*_shift(begin.year, begin.month, 1), day)
    return int(begin.timestamp()), int(end.timestamp())


def bandwidth_figures(site: SiteRecord, used: Optional[int], period: tuple) -> dict:
    """ApisCP's bandwidth answer: ``{sum, threshold, begin, end}`` (bytes, Unix seconds); ``sum``
    is null when ``used`` is None (not measured)."""
    return {"sum": used, "threshold": bandwidth_threshold(site), "begin": period[0], "end": period[1]}


def _shift(year: int, month: int, months: int) -> tuple:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def _on_day(year: int, month: int, day: int) -> datetime.datetime:
    day = min(day, calendar.monthrange(year, month)[1])
    return datetime.datetime(year, month, day, tzinfo=datetime.timezone.utc)
