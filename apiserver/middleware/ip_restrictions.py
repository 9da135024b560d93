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
ip_restriction_cache_ttl`` seconds.  A change made on this node shows at once: the accounts
service calls :meth:`IPRestrictions.added` / :meth:`IPRestrictions.removed` after its commit,
which change the cached form in place by that one entry (O(log n): a write costs about the
same however many entries the account has).  A change made on another node shows after at
most the ttl: every change draws a new random ``users.ip_restriction_generation``, and once
the ttl ends one read of that number decides whether the cached entries still hold (most of
the time: then nothing else is read) or must be read again.  Rows written behind the accounts
service draw no number, so the entries are read in full again after
:data:`FULL_RELOAD_SECONDS` regardless, in the background while requests keep using them.

Whose entries are checked: the identity that authenticated.  For a hijacked session that is
the appliance administrator who opened it (``Identity.impersonator``), not the site it acts
as, so a site's restrictions never lock the appliance administrator out.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Iterable, Optional

from sortedcontainers import SortedList
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.addresses import parse_address, unmap_network
from apiserver.context import Gate, Identity
from apiserver.errors import AuthenticationFailed, InvalidArgument
from apiserver.storage.cache import MISSING, ReadThroughCache

log = Logger(namespace="apiserver.middleware.ip_restrictions")

#: Most accounts whose compiled entries are cached at once (expired ones go first).
MAX_CACHED_ACCOUNTS = 10_000

#: Cached entries are read again in full (in the background) once this old, or
#: ``ip_restriction_cache_ttl`` when longer, even when their generation shows no change: rows
#: written behind the accounts service (by hand, or by a plugin's own SQL) draw none.
FULL_RELOAD_SECONDS = 60


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


class IPRestrictions:
    """Checks logins against their account's IP restrictions; validates new entries."""

    def __init__(self, app):
        self.app = app
        config = app.config
        # app.run_blocking is looked up at each load: tests replace it after the app is built.
        self._cache = ReadThroughCache(app.clock, lambda fn, *a: app.run_blocking(fn, *a), self._load,
                                       lambda: config.get("auth", "ip_restriction_cache_ttl"), MAX_CACHED_ACCOUNTS,
                                       revalidate=self._revalidate)

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
        d.addCallback(self._refreshed_if_old, identity.user_id)
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
        self._decide(self._refreshed_if_old(compiled, owner.user_id), owner, gate, address)
        return None

    def entries(self, user_id: int) -> defer.Deferred:
        """Reactor thread: fires with the stored ``((network, gate or None), ...)`` of account
        ``user_id`` in their order (cached like the checks' entries; no thread when cached)."""
        d = self._cache.get(user_id).addCallback(self._refreshed_if_old, user_id)
        return d.addCallback(lambda compiled: compiled.entries)

    def invalidate(self, user_id: int) -> None:
        """Forget the cached entries of ``user_id`` (call after changing them).  Any thread."""
        self._cache.invalidate(user_id)

    def added(self, user_id: int, network: str, gate: Optional[str], generations: Optional[tuple] = None) -> None:
        """After entry ``(network, gate)`` of ``user_id`` is stored, by the change that took
        ``users.ip_restriction_generation`` from ``generations[0]`` to ``generations[1]``:
        cached entries gain it at once, without reading the others again.  Any thread."""
        self._cache.update(user_id, lambda compiled: compiled.add(network, gate, generations))

    def removed(self, user_id: int, network: str, gate: Optional[str], generations: Optional[tuple] = None) -> None:
        """After entry ``(network, gate)`` of ``user_id`` is deleted (``generations`` as for
        :meth:`added`): cached entries lose it at once.  Any thread."""
        self._cache.update(user_id, lambda compiled: compiled.remove(network, gate, generations))

    # --- internals ---------------------------------------------------------------------------
    def _load(self, user_id: int) -> CompiledRestrictions:
        """Blocking: read and compile (off the reactor thread) the entries of ``user_id``."""
        accounts, now = self.app.accounts, self.app.clock.seconds()
        generation = accounts.ip_restriction_generation(user_id)  # first: the entries then hold its changes
        return CompiledRestrictions(accounts.load_ip_restrictions(user_id), generation, now)

    def _revalidate(self, user_id: int, stale: CompiledRestrictions) -> CompiledRestrictions:
        """Blocking: once the cached entries expire, keep them when the account's generation
        shows no change since (one row read, whatever the number of entries), else read them
        all again.  Entries that are old (see :meth:`_age_limit`) are read again in the
        background by the request that finds them; entries twice that old (an account that
        was idle) are read again before use."""
        if self.app.clock.seconds() - stale.loaded_at < 2 * self._age_limit() and stale.generation is not None:
            if self.app.accounts.ip_restriction_generation(user_id) == stale.generation:
                return stale
        return self._load(user_id)

    def _age_limit(self) -> float:
        """Seconds after which cached entries are read in full again whatever their generation,
        for rows written behind the accounts service (by hand, or a plugin's own SQL), which
        draw none: :data:`FULL_RELOAD_SECONDS`, or the ttl when longer."""
        return max(FULL_RELOAD_SECONDS, self.app.config.get("auth", "ip_restriction_cache_ttl"))

    def _refreshed_if_old(self, compiled: CompiledRestrictions, user_id: int) -> CompiledRestrictions:
        """Reactor thread: ``compiled``, read again in the background when it is old (this and
        later requests still decide by it meanwhile, so no request waits for every row)."""
        if self.app.clock.seconds() - compiled.loaded_at >= self._age_limit():
            self._cache.refresh(user_id)
        return compiled

    @staticmethod
    def _decide(compiled: CompiledRestrictions, identity: Identity, gate: Gate, address: str) -> None:
        if not compiled.allows(gate, address):
            log.info("login of {who} through {gate} refused: {address} is not in its IP restrictions",
                     who=identity.describe(), gate=gate.value, address=address)
            raise AuthenticationFailed("ip")
