"""Per-gate IP restrictions: the second factor that ``auth_restrict_ip`` stores.

All-or-nothing enablement (seed, "Restricting authorization"): an identity without entries
logs in from anywhere; once it has any entry, every gate checks, and a gate admits an address
only when it matches an entry for that gate or an entry with no gate.  A refusal raises
``AuthenticationFailed("ip")``, which the caller sees exactly like a bad password and Anvil
counts as a failed login.

The entries of an account are loaded once (``app.accounts.load_ip_restrictions`` on the
blocking pool) and compiled into sorted, merged integer ranges per gate and IP version, so a
check is a dictionary look-up and a binary search whatever the number of entries.  Compiled
entries are cached per account for ``[auth] ip_restriction_cache_ttl`` seconds, so that a
change made on another node shows here after at most that long; a change made on this node
calls :meth:`IPRestrictions.invalidate` and shows at once.

Whose entries are checked: the identity that authenticated.  For a hijacked session that is
the appliance administrator who opened it (``Identity.impersonator``), not the site it acts
as, so a site's restrictions never lock the appliance administrator out.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
from typing import Iterable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from apiserver.config import unmap_network
from apiserver.context import Gate, Identity
from apiserver.errors import AuthenticationFailed, InvalidArgument
from apiserver.middleware.address import parse_address

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
    """Sorted, non-overlapping inclusive integer ranges of one IP version."""

    starts: tuple
    ends: tuple

    @classmethod
    def merge(cls, networks: Iterable) -> "_Ranges":
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
        starts, ends = [], []
        for start, end in spans:
            if starts and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        return cls(tuple(starts), tuple(ends))

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self.starts, value) - 1
        return i >= 0 and value <= self.ends[i]


class CompiledRestrictions:
    """One account's entries, ready to match: per gate and IP version, merged integer ranges."""

    def __init__(self, entries: Iterable[tuple]):
        entries = list(entries)
        self.enabled = bool(entries)
        parsed: dict[Optional[Gate], list] = {}
        for ip, gate in entries:
            try:
                parsed.setdefault(Gate.parse(gate), []).append(parse_entry(ip))
            except ValueError:  # stored before validation existed, or edited by hand: matches nothing
                log.warn("ignoring invalid stored IP restriction {ip!r} (gate {gate!r})", ip=ip, gate=gate)
        self._ranges = {}
        for gate in Gate:
            nets = parsed.get(None, []) + parsed.get(gate, [])
            self._ranges[gate] = {v: _Ranges.merge(n for n in nets if n.version == v) for v in (4, 6)}

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
        self._cache: dict[int, tuple[float, CompiledRestrictions]] = {}
        self._loading: dict[int, list] = {}

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
        d = self._compiled(identity.user_id)
        d.addCallback(self._decide, identity, gate, address)
        return d

    def check_now(self, identity: Identity, gate: Gate, address: str) -> Optional[defer.Deferred]:
        """Like :meth:`check` without a Deferred when the account's entries are cached: None
        when allowed, raises ``AuthenticationFailed("ip")`` when refused, else a Deferred."""
        owner = identity
        while owner.impersonator is not None:
            owner = owner.impersonator
        cached = self._cache.get(owner.user_id)
        if cached is None or cached[0] <= self.app.clock.seconds():
            return self.check(identity, gate, address)
        self._decide(cached[1], owner, gate, address)
        return None

    def invalidate(self, user_id: int) -> None:
        """Forget the cached entries of ``user_id`` (call after changing them)."""
        self._cache.pop(user_id, None)
        self._loading.pop(user_id, None)

    # --- internals ---------------------------------------------------------------------------
    @staticmethod
    def _decide(compiled: CompiledRestrictions, identity: Identity, gate: Gate, address: str) -> None:
        if not compiled.allows(gate, address):
            log.info("login of {who} through {gate} refused: {address} is not in its IP restrictions",
                     who=identity.describe(), gate=gate.value, address=address)
            raise AuthenticationFailed("ip")

    def _compiled(self, user_id: int) -> defer.Deferred:
        now = self.app.clock.seconds()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return defer.succeed(cached[1])
        waiter = defer.Deferred()
        waiters = self._loading.get(user_id)
        if waiters is not None:  # one load per account at a time; concurrent checks wait for it
            waiters.append(waiter)
            return waiter
        waiters = self._loading[user_id] = [waiter]
        load = self.app.run_blocking(self.app.accounts.load_ip_restrictions, user_id)
        load.addCallback(CompiledRestrictions)
        load.addBoth(self._loaded, user_id, waiters)
        return waiter

    def _loaded(self, result, user_id: int, waiters: list) -> None:
        if self._loading.get(user_id) is waiters:  # not invalidated meanwhile: safe to cache
            del self._loading[user_id]
            ttl = self.app.config.get("auth", "ip_restriction_cache_ttl")
            if isinstance(result, CompiledRestrictions) and ttl > 0:
                self._remember(user_id, result, self.app.clock.seconds() + ttl)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _remember(self, user_id: int, compiled: CompiledRestrictions, expires: float) -> None:
        if len(self._cache) >= MAX_CACHED_ACCOUNTS:
            now = self.app.clock.seconds()
            for uid in [u for u, (until, _) in self._cache.items() if until <= now]:
                del self._cache[uid]
            while len(self._cache) >= MAX_CACHED_ACCOUNTS:
                del self._cache[next(iter(self._cache))]
        self._cache[user_id] = (expires, compiled)
