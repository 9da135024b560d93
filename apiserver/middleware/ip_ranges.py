"""IP restriction entries as data: parsing, canonical text, and an account's entries compiled for matching.

:class:`CompiledRestrictions` keeps one account's entries as sorted, merged integer ranges per
gate and IP version, so a check is a dictionary look-up and a binary search whatever the number
of entries, and an entry added or removed changes them in place in O(log n).  The component
that stores, caches and checks them is :mod:`apiserver.middleware.ip_restrictions`.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Iterable, Optional

from sortedcontainers import SortedList
from twisted.logger import Logger

from apiserver.addresses import parse_address, unmap_network
from apiserver.context import Gate

log = Logger(namespace="apiserver.middleware.ip_restrictions")


def parse_entry(ip) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR network as a network (host bits cleared); ValueError if it is neither.

    ``::ffff:192.0.2.0/120`` is the IPv4 network ``192.0.2.0/24``, as the address it maps is.
    """
    if not isinstance(ip, str):
        raise ValueError(ip)
    address, slash, prefix = ip.strip().partition("/")
    if "%" in address or (slash and not (prefix.isdigit() and len(prefix) <= 3)):
        raise ValueError(ip)
    host = ipaddress.ip_address(address)
    prefix_len = int(prefix) if slash else host.max_prefixlen
    if host.version == 6 and host.ipv4_mapped is not None and prefix_len < 96:
        raise ValueError(ip)  # wider than the mapped range: half IPv4, half IPv6
    return unmap_network(ipaddress.ip_network((host, prefix_len), strict=False))


def normalise_entry(ip) -> str:
    """Canonical text of an entry: ``192.0.2.1`` for an address, ``192.0.2.0/24`` for a network."""
    net = parse_entry(ip)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _merged(spans: Iterable[tuple]) -> list:
    """Sorted, non-overlapping, non-adjacent inclusive ``(first, last)`` ranges covering ``spans``."""
    ranges: list = []
    for first, last in sorted(spans):
        if ranges and first <= ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
        else:
            ranges.append((first, last))
    return ranges


#: Above every address: ``(value, _AFTER)`` sorts after each ``(value, last)`` pair.
_AFTER = float("inf")


_GATES = {None: None, **{g.value: g for g in Gate}}


def _canonical_span(ip) -> Optional[tuple]:
    """``(version, first, last)`` of an entry in the canonical text :func:`normalise_entry`
    stores, parsed with ``inet_pton`` (an account's entries are all compiled again when its
    cache expires, and ``ipaddress`` takes ten times as long); None for any other text."""
    if not isinstance(ip, str):
        return None
    address, slash, prefix = ip.partition("/")
    family, version, bits = (socket.AF_INET6, 6, 128) if ":" in address else (socket.AF_INET, 4, 32)
    try:
        packed = socket.inet_pton(family, address)
    except OSError:
        return None
    if socket.inet_ntop(family, packed) != address or (version == 6 and packed[:12] == _MAPPED_PREFIX):
        return None
    length = bits
    if slash:
        if not (prefix.isdigit() and str(int(prefix)) == prefix and int(prefix) < bits):
            return None
        length = int(prefix)
    first, host = int.from_bytes(packed, "big"), (1 << (bits - length)) - 1
    if first & host:
        return None
    return version, first, first | host


_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def _span(ip, gate) -> Optional[tuple]:
    """``(gate or None, IP version, first, last)`` of a stored entry; None (and a warning) if invalid."""
    fast = _canonical_span(ip)
    if fast is not None and gate in _GATES:
        return (_GATES[gate], *fast)
    try:
        net = parse_entry(ip)
        return Gate.parse(gate), net.version, int(net.network_address), int(net.broadcast_address)
    except ValueError:  # stored before validation existed, or edited by hand: matches nothing
        log.warn("ignoring invalid stored IP restriction {ip!r} (gate {gate!r})", ip=ip, gate=gate)
        return None


class CompiledRestrictions:
    """One account's entries, ready to match: per gate and IP version, merged integer ranges.

    :meth:`add` and :meth:`remove` change them in place by one entry, in time that grows with
    the logarithm of the number of entries: an entry goes into or out of an insertion-ordered
    dict, its span into or out of the spans sorted per gate and version, and only the merged
    range it touches is rebuilt.  (Immutable copies cost a copy of every entry per write, and
    plain sorted lists a move of every later range: both grew with the account.)  The sorted
    sequences are ``sortedcontainers.SortedList``.  The cache hands one instance both to the
    reactor thread's checks and to the pool threads' writes, so every access holds a lock,
    which is held for microseconds (nothing is parsed or read under it).
    """

    def __init__(self, entries: Iterable[tuple], generation: Optional[int] = None, loaded_at: float = 0.0):
        self._lock = threading.Lock()
        #: ``users.ip_restriction_generation`` read before the entries (None: unknown), kept
        #: in step by this node's changes; ``loaded_at``: when the entries were read.
        self.generation, self.loaded_at = generation, loaded_at
        # (network, gate or None) -> its span or None (invalid), in the stored order, for listing.
        self._entries: dict = {}
        for ip, gate in entries:
            self._entries.setdefault((ip, gate), _span(ip, gate))
        spans: dict = {(gate, version): [] for gate in _GATES.values() for version in (4, 6)}
        for span in self._entries.values():
            if span is not None:
                spans[span[:2]].append(span[2:])
        # (gate or None, version) -> the (first, last) spans of the entries for that gate.
        self._spans = {key: SortedList(each) for key, each in spans.items()}
        # gate -> version -> the ranges merged from its spans and those of gate None.
        self._ranges = {gate: {version: SortedList(_merged(spans[None, version] + spans[gate, version]))
                               for version in (4, 6)}
                        for gate in Gate}

    @property
    def entries(self) -> tuple:
        """The stored ``(network, gate or None)`` pairs, in their order."""
        with self._lock:
            return tuple(self._entries)

    def add(self, ip: str, gate: Optional[str], generations: Optional[tuple] = None) -> "CompiledRestrictions":
        """Add one entry (stored after the others); nothing if it is among them already.  Returns self.

        ``generations``: ``(before, after)`` the change that stored it; the generation follows
        when it was ``before`` (else another change is missing here and it stays).
        """
        span = _span(ip, gate)  # parsed before taking the lock
        with self._lock:
            self._follow(generations)
            if (ip, gate) in self._entries:
                return self
            self._entries[ip, gate] = span
            if span is None:
                return self
            entry_gate, version, first, last = span
            self._spans[entry_gate, version].add((first, last))
            for each in (Gate if entry_gate is None else (entry_gate,)):
                ranges = self._ranges[each][version]
                lo = ranges.bisect_right((first - 1, _AFTER))  # ranges before lo start at or before first - 1 ...
                if lo and ranges[lo - 1][1] >= first - 1:      # ... unless the last of them reaches it
                    lo -= 1
                hi = ranges.bisect_right((last + 1, _AFTER))   # past the last starting at or before last + 1
                merged = (first, last)
                if lo < hi:
                    merged = (min(first, ranges[lo][0]), max(last, ranges[hi - 1][1]))
                    del ranges[lo:hi]
                ranges.add(merged)
        return self

    def remove(self, ip: str, gate: Optional[str], generations: Optional[tuple] = None) -> "CompiledRestrictions":
        """Remove entry ``(ip, gate)``; nothing if it is not among them.  Returns self.
        ``generations`` as for :meth:`add`."""
        with self._lock:
            self._follow(generations)
            if (ip, gate) not in self._entries:
                return self
            span = self._entries.pop((ip, gate))
            if span is None:
                return self
            entry_gate, version, first, last = span
            self._spans[entry_gate, version].remove((first, last))
            for each in (Gate if entry_gate is None else (entry_gate,)):
                ranges = self._ranges[each][version]
                i = ranges.bisect_right((first, _AFTER)) - 1  # the merged range that held the span
                start, end = ranges[i]
                # The spans that made it up all start within it: merge those left again.
                rest = [span for key in ((None, version), (each, version))
                        for span in self._spans[key].irange((start,), (end, _AFTER))]
                del ranges[i]
                ranges.update(_merged(rest))
        return self

    def _follow(self, generations: Optional[tuple]) -> None:
        """Under the lock: take the generation after a change made on top of this one."""
        if generations is not None and self.generation is not None and self.generation == generations[0]:
            self.generation = generations[1]

    def allows(self, gate: Gate, address: str) -> bool:
        """True when ``address`` may log in through ``gate``."""
        if not self._entries:  # no entry: unrestricted
            return True
        ip = parse_address(address)
        if ip is None:  # a UNIX socket peer or garbage matches no restriction
            return False
        value = int(ip)
        with self._lock:
            ranges = self._ranges[gate][ip.version]
            i = ranges.bisect_right((value, _AFTER))
            return i > 0 and value <= ranges[i - 1][1]
