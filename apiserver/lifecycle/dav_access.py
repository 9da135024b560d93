"""Which sites may use ``/dav/``: the ``dav.enabled`` service value, for the DAV gate.

:class:`DavAccess` keeps the set of site numbers whose ``dav.enabled`` is 0 (usually none or a
few) through a :class:`~apiserver.storage.cache.ReadThroughCache`: answered on the reactor
thread, read again after ``[auth] account_cache_ttl`` seconds (other nodes' edits show within
that) and dropped at once when this node changes the value (:class:`DavApplier`, the ``dav``
applier).  The rows are found by the stored text (``"dav":{"enabled":0``, the services column
is written with sorted keys), each checked by parsing it.
"""

from __future__ import annotations

import json
from typing import Callable

import sqlalchemy as sa
from apiserver.lifecycle import services
from apiserver.lifecycle.appliers import Applier
from apiserver.storage import schema
from apiserver.storage.cache import MISSING, ReadThroughCache

_ALL = "dav-off"


class DavAccess:
    """The sites whose accounts may not use ``/dav/`` (see the module docstring).  ``storage``: the
    rows; ``clock``, ``run_blocking``: the cache's; ``settings``: ``[auth] account_cache_ttl``."""

    def __init__(self, storage, clock, run_blocking: Callable, settings):
        self._storage = storage
        self._cache = ReadThroughCache(clock, run_blocking, self._load,
                                       lambda: settings.get("auth", "account_cache_ttl"), max_entries=1)

    def _load(self, _key) -> frozenset:
        """Blocking.  Numbers of the sites whose ``dav.enabled`` is 0."""
        sites = schema.sites
        with self._storage.read() as conn:
            rows = conn.execute(sa.select(sites.c.id, sites.c.services)
                                .where(sites.c.services.like('%"dav":{"enabled":0%'))).all()
        return frozenset(row[0] for row in rows if not (json.loads(row[1]).get("dav") or {}).get("enabled", 1))

    def allowed(self, site_id: int):
        """True or False at once when known, else a Deferred firing with it (reactor thread)."""
        known = self._cache.peek(_ALL)
        if known is not MISSING:
            return site_id not in known
        return self._cache.get(_ALL).addCallback(lambda off: site_id not in off)

    def changed(self) -> None:
        """After this node changed a site's ``dav.enabled`` (any thread)."""
        self._cache.invalidate(_ALL)


class DavApplier(Applier):
    """The ``dav`` applier: a change of ``dav.enabled`` takes effect at the DAV gate at once."""

    name = "dav"

    def __init__(self, access: DavAccess):
        self._access = access

    def add(self, site, values: dict) -> None:
        if not values.get(services.param("dav", "enabled"), 1):
            self._access.changed()

    def edit(self, site, before, values: dict, changed: dict) -> None:
        if services.param("dav", "enabled") in changed:
            self._access.changed()

    def delete(self, site) -> None:
        self._access.changed()
