"""Per-gate IP restrictions: the second factor that ``auth_restrict_ip`` stores.

All-or-nothing enablement (seed, "Restricting authorization"): an identity without entries
logs in from anywhere; once it has any entry, every gate checks, and a gate admits an address
only when it matches an entry for that gate or an entry with no gate.  A refusal raises
``AuthenticationFailed("ip")``, which the caller sees exactly like a bad password and Anvil
counts as a failed login.

The entries of an account are loaded once (``app.accounts.load_ip_restrictions`` on the
blocking pool) and compiled into sorted, merged integer ranges per gate and IP version, so a
check is a dictionary look-up and a binary search whatever the number of entries.  Compiled
entries are cached per account (``apiserver.storage.cache``) for ``[auth]
ip_restriction_cache_ttl`` seconds, so that a change made on another node shows here after at
most that long; a change made on this node shows at once: the accounts service calls
:meth:`IPRestrictions.added` / :meth:`IPRestrictions.removed` after its commit, which change the
cached form by that one entry (a write costs the same however many entries the account has).

Whose entries are checked: the identity that authenticated.  For a hijacked session that is
the appliance administrator who opened it (``Identity.impersonator``), not the site it acts
as, so a site's restrictions never lock the appliance administrator out.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import socket
from typing import Iterable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from apiserver.config import unmap_network
from apiserver.context import Gate, Identity
from apiserver.errors import AuthenticationFailed, InvalidArgument
from apiserver.middleware.address import parse_address
from apiserver.storage.cache import MISSING, ReadThroughCache

log = Logger(namespace="apiserver.middleware.ip_restrictions")

#: Most accounts whose compiled entries are cached at once (expired ones go first).
MAX_CACHED_ACCOUNTS = 10_000


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


@dataclasses.dataclass(frozen=True)
class _Ranges:
    """Sorted, non-overlapping, non-adjacent inclusive integer ranges of one IP version."""

    starts: tuple
    ends: tuple

    @classmethod
    def merge(cls, spans: Iterable[tuple]) -> "_Ranges":
        """The ranges covering ``(start, end)`` spans."""
        starts, ends = [], []
        for start, end in sorted(spans):
            if starts and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        return cls(tuple(starts), tuple(ends))

    def with_span(self, start: int, end: int) -> "_Ranges":
        """These ranges and ``start..end``: the ranges it touches merge with it (O(log n) search)."""
        lo = bisect.bisect_left(self.ends, start - 1)    # first range ending at or after start - 1
        hi = bisect.bisect_right(self.starts, end + 1)   # past the last starting at or before end + 1
        if lo < hi:
            start, end = min(start, self.starts[lo]), max(end, self.ends[hi - 1])
        return _Ranges(self.starts[:lo] + (start,) + self.starts[hi:], self.ends[:lo] + (end,) + self.ends[hi:])

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self.starts, value) - 1
        return i >= 0 and value <= self.ends[i]


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

    ``entries`` keeps the stored ``(network, gate)`` pairs in their order, for listing them.
    :meth:`with_entry` and :meth:`without_entry` give the compiled form after one change
    without parsing the other entries again, so a write costs the same however many there are.
    """

    def __init__(self, entries: Iterable[tuple]):
        self.entries = tuple(entries)
        self._spans = tuple(_span(ip, gate) for ip, gate in self.entries)
        # Membership for with_entry, shared with the versions made from this one (only the
        # newest is ever changed: the cache replaces it under its lock).
        self._members = set(self.entries)
        self._build()

    def _build(self) -> None:
        self.enabled = bool(self.entries)
        grouped: dict = {}  # (gate or None, version) -> [(first, last), ...]
        for span in self._spans:
            if span is not None:
                grouped.setdefault(span[:2], []).append(span[2:])
        self._ranges = {gate: {v: _Ranges.merge(grouped.get((None, v), []) + grouped.get((gate, v), []))
                               for v in (4, 6)}
                        for gate in Gate}

    def with_entry(self, ip: str, gate: Optional[str]) -> "CompiledRestrictions":
        """These entries and one more (stored after them); these if it is among them already."""
        if (ip, gate) in self._members:
            return self
        new = object.__new__(CompiledRestrictions)
        span = _span(ip, gate)
        new.entries, new._spans, new.enabled = self.entries + ((ip, gate),), self._spans + (span,), True
        new._members = self._members
        new._members.add((ip, gate))
        new._ranges = dict(self._ranges)
        if span is not None:
            entry_gate, version, first, last = span
            for each in (Gate if entry_gate is None else (entry_gate,)):
                new._ranges[each] = dict(new._ranges[each])
                new._ranges[each][version] = new._ranges[each][version].with_span(first, last)
        return new

    def without_entry(self, ip: str, gate: Optional[str]) -> "CompiledRestrictions":
        """These entries less ``(ip, gate)`` (the ranges are merged again from the parsed spans)."""
        if (ip, gate) not in self._members:
            return self
        i = self.entries.index((ip, gate))
        new = object.__new__(CompiledRestrictions)
        new.entries, new._spans = self.entries[:i] + self.entries[i + 1:], self._spans[:i] + self._spans[i + 1:]
        new._members = set(new.entries)
        new._build()
        return new

    def allows(self, gate: Gate, address: str) -> bool:
        """True when ``address`` may log in through ``gate``."""
        if not self.enabled:
            return True
        ip = parse_address(address)
        if ip is None:  # a UNIX socket peer or garbage matches no restriction
            return False
        return int(ip) in self._ranges[gate][ip.version]


class IPRestrictions:
    """Checks logins against their account's IP restrictions; validates new entries."""

    def __init__(self, app):
        self.app = app
        config = app.config
        # app.run_blocking is looked up at each load: tests replace it after the app is built.
        self._cache = ReadThroughCache(app.clock, lambda fn, *a: app.run_blocking(fn, *a), self._load,
                                       lambda: config.get("auth", "ip_restriction_cache_ttl"), MAX_CACHED_ACCOUNTS)

    @staticmethod
    def validate_entry(ip, gate) -> tuple[str, Optional[str]]:
        """``(normalised ip or CIDR, gate name or None)``; InvalidArgument naming the bad value."""
        try:
            normalised = normalise_entry(ip)
        except ValueError:
            raise InvalidArgument(f"{ip!r} is not an IP address or CIDR network") from None
        try:
            parsed_gate = Gate.parse(gate)
        except (ValueError, TypeError):
            raise InvalidArgument(f"unknown gate {gate!r}: expected one of UI, SOAP, DAV, CLI or null") from None
        return normalised, (parsed_gate.value if parsed_gate else None)

    def check(self, identity: Identity, gate: Gate, address: str) -> defer.Deferred:
        """Fires with None when ``identity`` may log in from ``address`` through ``gate``;
        fails with ``AuthenticationFailed("ip")`` otherwise."""
        while identity.impersonator is not None:
            identity = identity.impersonator
        d = self._cache.get(identity.user_id)
        d.addCallback(self._decide, identity, gate, address)
        return d

    def check_now(self, identity: Identity, gate: Gate, address: str) -> Optional[defer.Deferred]:
        """Like :meth:`check` without a Deferred when the account's entries are cached: None
        when allowed, raises ``AuthenticationFailed("ip")`` when refused, else a Deferred."""
        owner = identity
        while owner.impersonator is not None:
            owner = owner.impersonator
        compiled = self._cache.peek(owner.user_id)
        if compiled is MISSING:
            return self.check(identity, gate, address)
        self._decide(compiled, owner, gate, address)
        return None

    def entries(self, user_id: int) -> defer.Deferred:
        """Reactor thread: fires with the stored ``((network, gate or None), ...)`` of account
        ``user_id`` in their order (cached like the checks' entries; no thread when cached)."""
        return self._cache.get(user_id).addCallback(lambda compiled: compiled.entries)

    def invalidate(self, user_id: int) -> None:
        """Forget the cached entries of ``user_id`` (call after changing them).  Any thread."""
        self._cache.invalidate(user_id)

    def added(self, user_id: int, network: str, gate: Optional[str]) -> None:
        """After entry ``(network, gate)`` of ``user_id`` is stored: cached entries gain it at once,
        without reading the others again.  Any thread."""
        self._cache.update(user_id, lambda compiled: compiled.with_entry(network, gate))

    def removed(self, user_id: int, network: str, gate: Optional[str]) -> None:
        """After entry ``(network, gate)`` of ``user_id`` is deleted: cached entries lose it at once.  Any thread."""
        self._cache.update(user_id, lambda compiled: compiled.without_entry(network, gate))

    # --- internals ---------------------------------------------------------------------------
    def _load(self, user_id: int) -> CompiledRestrictions:
        """Blocking: read and compile (off the reactor thread) the entries of ``user_id``."""
        return CompiledRestrictions(self.app.accounts.load_ip_restrictions(user_id))

    @staticmethod
    def _decide(compiled: CompiledRestrictions, identity: Identity, gate: Gate, address: str) -> None:
        if not compiled.allows(gate, address):
            log.info("login of {who} through {gate} refused: {address} is not in its IP restrictions",
                     who=identity.describe(), gate=gate.value, address=address)
            raise AuthenticationFailed("ip")
