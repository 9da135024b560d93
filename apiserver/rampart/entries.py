"""What ``rampart_whitelist`` and ``rampart_unban`` leave behind: rows of ``rampart_entries``.

* ``whitelist`` rows (one per site and address; site NULL for the appliance administrator) are
  kept until removed.  An address on any row is whitelisted: Anvil never counts it and fail2ban's
  jails ignore it.  :class:`Whitelist` answers Anvil from a snapshot on the reactor thread and
  reads the rows again every ``[rampart] whitelist_ttl`` seconds (in the background; other nodes'
  changes show within that), at once after this node's own changes.
* ``unban`` rows record which addresses a site's administrator unbanned, for ``rampart.max``
  (rows older than a day no longer count and are pruned).

Methods documented as blocking touch the database.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.logger import Logger

from apiserver.addresses import parse_address
from apiserver.storage import schema, utcnow

log = Logger(namespace="apiserver.rampart")

WHITELIST, UNBAN = "whitelist", "unban"
#: How long an unban counts against the site's rampart.max.
UNBAN_WINDOW = datetime.timedelta(days=1)

_entries = schema.rampart_entries


class Whitelist:
    """The stored whitelist and the snapshot Anvil asks (see the module docstring).

    ``storage``, ``clock``, ``run_blocking``: the rows, the dates and reads off the reactor;
    ``ttl()``: seconds a snapshot is used before the rows are read again.
    """

    def __init__(self, storage, clock, run_blocking: Callable, ttl: Callable[[], float]):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._ttl = ttl
        self._exact: frozenset = frozenset()
        self._networks: tuple = ()
        self._read_at: Optional[float] = None
        self._reading = False

    # --- what Anvil asks (reactor thread) -------------------------------------------------------
    def contains(self, address: str) -> bool:
        """``address`` is whitelisted (as of the last read of the rows)."""
        self._refresh_if_due()
        if not self._exact and not self._networks:
            return False
        if address in self._exact:
            return True
        ip = parse_address(address)
        if ip is None:
            return False
        return str(ip) in self._exact or any(ip in network for network in self._networks)

    def _refresh_if_due(self) -> None:
        if self._reading:
            return
        if self._read_at is not None and self._clock.seconds() - self._read_at < self._ttl():
            return
        self._reading = True
        d = self._run_blocking(self.reload)
        d.addErrback(lambda failure: log.failure("reading rampart's whitelist failed", failure))
        d.addBoth(lambda _: setattr(self, "_reading", False))

    # --- rows (blocking) ------------------------------------------------------------------------
    def reload(self) -> None:
        """Blocking.  Read every whitelisted address into the snapshot."""
        with self._storage.read() as conn:
            addresses = set(conn.execute(sa.select(_entries.c.address).where(_entries.c.kind == WHITELIST)).scalars())
        exact, networks = set(), []
        for text in addresses:
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            if network.num_addresses == 1:
                exact.add(str(network.network_address))
            else:
                networks.append(network)
        self._exact, self._networks = frozenset(exact), tuple(networks)
        self._read_at = self._clock.seconds()

    def add(self, site_id: Optional[int], address: str) -> bool:
        """Blocking.  Whitelist ``address`` for ``site_id`` (None: the appliance); False when that
        entry exists already.  The snapshot is read again."""
        with self._storage.write() as conn:
            if self._has(conn, site_id, address, WHITELIST):
                return False
            conn.execute(_entries.insert().values(site_id=site_id, address=address, kind=WHITELIST,
                                                  created_at=utcnow(self._clock)))
        self.reload()
        return True

    def remove(self, site_id: Optional[int], address: str) -> bool:
        """Blocking.  Remove the entry of ``site_id`` for ``address``; whether there was one."""
        with self._storage.write() as conn:
            removed = conn.execute(_entries.delete().where(_site(site_id), _entries.c.address == address,
                                                           _entries.c.kind == WHITELIST)).rowcount
        self.reload()
        return bool(removed)

    def referenced(self, address: str) -> bool:
        """Blocking.  Some entry (of any site) still whitelists ``address``."""
        with self._storage.read() as conn:
            found = conn.execute(sa.select(_entries.c.id).where(_entries.c.address == address,
                                                                _entries.c.kind == WHITELIST).limit(1)).first()
        return found is not None

    def every(self) -> list:
        """Blocking.  Every whitelisted address, once each."""
        with self._storage.read() as conn:
            return sorted(set(conn.execute(sa.select(_entries.c.address)
                                           .where(_entries.c.kind == WHITELIST)).scalars()))

    def of_site(self, site_id: int) -> list:
        """Blocking.  The addresses site ``site_id`` whitelisted."""
        with self._storage.read() as conn:
            return sorted(conn.execute(sa.select(_entries.c.address).where(
                _entries.c.site_id == site_id, _entries.c.kind == WHITELIST)).scalars())

    def counted(self, site_id: int) -> set:
        """Blocking.  The addresses that count against site ``site_id``'s ``rampart.max``: its
        whitelist entries and what it unbanned within :data:`UNBAN_WINDOW` (older unbans are pruned)."""
        since = utcnow(self._clock) - UNBAN_WINDOW
        with self._storage.write() as conn:
            conn.execute(_entries.delete().where(_entries.c.kind == UNBAN, _entries.c.created_at < since))
            return set(conn.execute(sa.select(_entries.c.address).where(_entries.c.site_id == site_id)).scalars())

    def note_unban(self, site_id: int, address: str) -> None:
        """Blocking.  Count an unban by site ``site_id``'s administrator."""
        with self._storage.write() as conn:
            conn.execute(_entries.delete().where(_site(site_id), _entries.c.address == address,
                                                 _entries.c.kind == UNBAN))
            conn.execute(_entries.insert().values(site_id=site_id, address=address, kind=UNBAN,
                                                  created_at=utcnow(self._clock)))

    @staticmethod
    def _has(conn, site_id: Optional[int], address: str, kind: str) -> bool:
        return conn.execute(sa.select(_entries.c.id).where(_site(site_id), _entries.c.address == address,
                                                           _entries.c.kind == kind).limit(1)).first() is not None


def _site(site_id: Optional[int]):
    return _entries.c.site_id.is_(None) if site_id is None else _entries.c.site_id == site_id
