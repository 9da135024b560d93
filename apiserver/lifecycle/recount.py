"""The storage figures of every site, kept fresh in the background and stored.

:class:`StorageRecount` is a Twisted service: when it starts, and every ``[usage]
recount_interval`` seconds of its clock after the previous round ended, it measures every
site one after the other, each on the blocking pool (so other work interleaves), and stores
the figures in ``site_usage``; ``admin_get_usage('storage')`` answers from those rows, never
from a walk made while the caller waits.

A site is measured by its group ``admin<N>`` (with ``[web] account_prefix``) when the server makes
system accounts and that group exists (a site's own files carry
it): the filesystem's group quota when ``[usage] group_quota`` allows and the filesystem keeps
one (:func:`apiserver.sites.count.group_quota`), else a walk of the site's home counting the
files of that group.  Without the group, the walk counts everything in the home.
"""

from __future__ import annotations

import grp
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.errors import NotFound
from apiserver.sites.count import TreeCount, count_tree, group_quota
from apiserver.storage import schema, utcnow
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.lifecycle.recount")


def site_group_of(site_accounts) -> Callable[[int], Optional[int]]:
    """Blocking lookup for :class:`StorageRecount`: site number -> the gid of the site's group
    (``admin<N>`` with ``[web] account_prefix``), None when the server makes no system accounts
    or the host has no such group (a same-named group of something else is never taken)."""

    def group_of(site_id: int) -> Optional[int]:
        if not site_accounts.enabled:
            return None
        try:
            return grp.getgrnam(site_accounts.group_name(site_id)).gr_gid
        except KeyError:
            return None

    return group_of


class StorageRecount(service.Service):
    """Recounts every site's storage on ``clock`` (see the module docstring).

    ``storage``: the rows; ``run_blocking``: the pool; ``site_homes``:
    :class:`apiserver.sites.SiteHomes`; ``settings``: the config (``[usage]``); ``group_of``:
    site number -> gid or None (blocking; :func:`site_group_of`; None: every file of the home).
    """

    def __init__(self, storage, clock, run_blocking: Callable, site_homes, settings,
                 group_of: Optional[Callable[[int], Optional[int]]] = None):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._site_homes = site_homes
        self._settings = settings
        self._group_of = group_of or (lambda site_id: None)
        #: The rounds, ``[usage] recount_interval`` after the end of the previous one (made at start;
        #: tests wait on its ``idle()``).
        self.timer: Optional[WorkTimer] = None
        self.rounds = 0  # rounds completed (for tests and logs)

    def startService(self):
        super().startService()
        self.timer = WorkTimer(self._clock, self._settings.get("usage", "recount_interval"), self._tick, None,
                               name="storage recount", from_end=True,
                               on_failure=lambda failure: log.failure("a storage recount round failed", failure))
        self.timer.start(now=True)

    def stopService(self):
        super().stopService()
        # The site being measured ends; the round stops after it.
        return self.timer.stop() if self.timer is not None else defer.succeed(None)

    def _tick(self) -> defer.Deferred:
        return defer.ensureDeferred(self.recount())

    async def recount(self, site_ids: Optional[list] = None) -> int:
        """Measure every site (or those of ``site_ids``) and store the figures; the number of
        sites measured.  A site that cannot be measured keeps its last figures (logged)."""
        sites = await self._run_blocking(self._sites, site_ids)
        done = 0
        for site_id, domain in sites:
            if not self.running and self.timer is not None:
                break
            try:
                await self._run_blocking(self.measure_and_store, site_id, domain)
                done += 1
            except NotFound:
                continue  # no home on disk (deleted meanwhile)
            except Exception as exc:
                log.error("measuring the storage of {domain} failed: {error}", domain=domain, error=exc)
        self.rounds += 1
        return done

    def _sites(self, site_ids: Optional[list]) -> list:
        """Blocking.  ``[(N, domain)]``."""
        sites = schema.sites
        query = sa.select(sites.c.id, sites.c.domain).order_by(sites.c.id)
        if site_ids is not None:
            query = query.where(sites.c.id.in_(site_ids))
        with self._storage.read() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def measure(self, site_id: int, domain: str) -> TreeCount:
        """Blocking.  What the site takes now (see the module docstring)."""
        home = self._site_homes.get(domain)
        gid = self._group_of(site_id)
        if gid is not None and self._settings.get("usage", "group_quota"):
            figures = group_quota(home.root, gid)
            if figures is not None:
                return figures
        return count_tree(home.root, gid)

    def measure_and_store(self, site_id: int, domain: str) -> TreeCount:
        """Blocking.  :meth:`measure`, then the figures stored for the site."""
        figures = self.measure(site_id, domain)
        table = schema.site_usage
        values = {"kilobytes": figures.kilobytes, "files": figures.files, "method": figures.method,
                  "counted_at": utcnow(self._clock)}
        with self._storage.write() as conn:
            if not conn.execute(sa.select(schema.sites.c.id).where(schema.sites.c.id == site_id)).first():
                return figures  # deleted while it was measured
            if conn.execute(table.update().where(table.c.site_id == site_id).values(**values)).rowcount == 0:
                conn.execute(table.insert().values(site_id=site_id, **values))
        return figures


def stored_storage(conn: sa.Connection, site_ids: list) -> dict:
    """``{N: (KB, files)}`` of the sites among ``site_ids`` that were measured."""
    table = schema.site_usage
    out = {}
    for start in range(0, len(site_ids), 500):
        chunk = site_ids[start:start + 500]
        for row in conn.execute(sa.select(table.c.site_id, table.c.kilobytes, table.c.files)
                                .where(table.c.site_id.in_(chunk))):
            out[row.site_id] = (int(row.kilobytes), int(row.files))
    return out
