"""Where Anvil keeps its per-address state: the :class:`AnvilStore` interface and the memory store.

:class:`MemoryAnvilStore` (one node, the default) keeps each address compactly in this process;
``apiserver.middleware.anvil_redis.RedisAnvilStore`` (``[anvil] backend=redis``) shares counters
and blocks between nodes.  Both make the same transition per failure (:func:`after_failure`).

Memory (memory store): one tracked address costs about 110 bytes (the address as an int ~32,
its state packed into one int ~40, a dict slot ~40; measured with tracemalloc by
``tests/middleware/test_anvil.py``, which asserts at most 150, and for a million addresses
by ``benchmarks/bench_memory.py``), so the default bound ``[anvil] max_tracked=200000``
takes about 22 MB and a million addresses about 110 MB.  Times are kept to the millisecond,
rounded up.  Expired entries are dropped when met and, once ``max_tracked`` is reached, the
least recently failing addresses are dropped to make room (a block among them ends early and
is logged as such).
"""

from __future__ import annotations

import math
import socket
from typing import Callable, NamedTuple, Optional

from twisted.internet import defer


class AnvilState(NamedTuple):
    """What Anvil knows about one address: failures in the window, when it closes, block end (0: none)."""

    count: int
    window_end: float
    blocked_until: float = 0.0

    def live(self, now: float) -> bool:
        """Still relevant at ``now``: blocked, or inside its window."""
        return self.blocked_until > now if self.blocked_until else self.window_end > now

    def blocked(self, now: float) -> bool:
        return self.blocked_until > now


def after_failure(state: Optional[AnvilState], now: float, ttl: float, limit: int) -> tuple[AnvilState, bool]:
    """The state after one more failure, and whether this failure started a block."""
    if state is None or not state.live(now):
        state = AnvilState(0, now + ttl)
    count = state.count + 1
    if not state.blocked_until and count >= limit:
        return AnvilState(count, state.window_end, now + ttl), True
    return AnvilState(count, state.window_end, state.blocked_until), False


#: What :meth:`AnvilStore.peek` answers when only :meth:`AnvilStore.get` can tell.
NOT_AT_ONCE = object()


class AnvilStore:
    """Where Anvil keeps its per-address state.  Every method returns a Deferred.

    Implementations must make ``record_failure`` atomic per key (several requests, or several
    nodes, may fail at the same moment and every failure must count).
    """

    def get(self, key: str) -> defer.Deferred:
        """Fires with the live :class:`AnvilState` of ``key`` at ``now``, or None."""
        raise NotImplementedError

    def record_failure(self, key: str, now: float, ttl: int, limit: int) -> defer.Deferred:
        """Count one failure (see :func:`after_failure`); fires with ``(state, started_block)``."""
        raise NotImplementedError

    def forget(self, key: str) -> defer.Deferred:
        """Drop ``key``'s failures and block (an unban); fires with whether it had live state."""
        raise NotImplementedError

    def peek(self, key: str):
        """The live state of ``key`` (or None) when the store can answer at once, else
        :data:`NOT_AT_ONCE`; lets the common case skip Deferred machinery."""
        return NOT_AT_ONCE

    def watch_evictions(self, callback: Callable[[str, AnvilState], None]) -> None:
        """Call ``callback(key, state)`` when a live entry is dropped to make room (a block that
        ends early).  Stores that never drop live entries ignore it."""


# --- the memory store's compact form ------------------------------------------------------
# A million tracked addresses must fit in well under 200 MB, so the memory store keeps neither
# key strings nor state tuples: a key in the canonical text Anvil makes is kept as an int
# (IPv4: the address; IPv6 network: its prefix bits and length, negated so it never equals
# an IPv4 int), any other key as the string; the state is one int of the failure count and
# the two times in milliseconds, rounded up (a block never ends early).

_COUNT_BITS, _TIME_BITS = 20, 42
_COUNT_MASK, _TIME_MASK = (1 << _COUNT_BITS) - 1, (1 << _TIME_BITS) - 1
_BLOCK_SHIFT = _COUNT_BITS + _TIME_BITS


def pack_key(key: str):
    """The compact form of a store key: an int for canonical IPv4 or IPv6 (network) text, else ``key``."""
    address, slash, prefix = key.partition("/")
    try:
        if not slash and "." in address and ":" not in address:
            packed = socket.inet_pton(socket.AF_INET, address)
            if socket.inet_ntop(socket.AF_INET, packed) == address:
                return int.from_bytes(packed, "big")
            return key
        if ":" in address and (not slash or (prefix.isdigit() and prefix[0] != "0" and int(prefix) < 128)):
            bits = int(prefix) if slash else 128
            packed = socket.inet_pton(socket.AF_INET6, address)
            value = int.from_bytes(packed, "big")
            if socket.inet_ntop(socket.AF_INET6, packed) == address and not value & ((1 << (128 - bits)) - 1):
                return -(((value >> (128 - bits)) << 8 | bits) + 1)
    except (OSError, ValueError):
        pass
    return key


def unpack_key(packed) -> str:
    """The key text :func:`pack_key` was given."""
    if isinstance(packed, str):
        return packed
    if packed >= 0:
        return socket.inet_ntop(socket.AF_INET, packed.to_bytes(4, "big"))
    packed = -packed - 1
    bits = packed & 0xFF
    text = socket.inet_ntop(socket.AF_INET6, ((packed >> 8) << (128 - bits)).to_bytes(16, "big"))
    return text if bits == 128 else f"{text}/{bits}"


def _ms(seconds: float) -> int:
    return min(math.ceil(seconds * 1000), _TIME_MASK) if seconds > 0 else 0


def pack_state(state: AnvilState) -> int:
    """One int of ``state`` (count capped at 2**20 - 1; times in ms, rounded up)."""
    return (min(state.count, _COUNT_MASK) | _ms(state.window_end) << _COUNT_BITS
            | _ms(state.blocked_until) << _BLOCK_SHIFT)


def unpack_state(packed: int) -> AnvilState:
    return AnvilState(packed & _COUNT_MASK, ((packed >> _COUNT_BITS) & _TIME_MASK) / 1000,
                      (packed >> _BLOCK_SHIFT) / 1000)


def _live_packed(packed: int, now_ms: float) -> bool:
    blocked = packed >> _BLOCK_SHIFT
    return blocked > now_ms if blocked else ((packed >> _COUNT_BITS) & _TIME_MASK) > now_ms


class MemoryAnvilStore(AnvilStore):
    """In-process state, bounded to ``max_tracked`` addresses (least recently failing dropped first).

    Compact (see :func:`pack_key`, :func:`pack_state`): about 110 bytes per address.  A plain
    dict keeps the order (a failure moves its key to the end); once full, the oldest
    ``max_tracked // 1000`` (at least one) and the expired ones behind them go in one pass, so
    making room costs O(1) per new address however many are tracked.
    """

    def __init__(self, clock, max_tracked: int, on_evict: Callable[[str, AnvilState], None] = lambda k, s: None):
        self.clock = clock
        self.max_tracked = max_tracked
        self.on_evict = on_evict
        self._states: dict = {}  # pack_key(key) -> pack_state(state), least recently failing first

    def __len__(self) -> int:
        return len(self._states)

    def watch_evictions(self, callback: Callable[[str, AnvilState], None]) -> None:
        self.on_evict = callback

    def get(self, key: str) -> defer.Deferred:
        return defer.succeed(self.peek(key))

    def peek(self, key: str) -> Optional[AnvilState]:
        packed_key = pack_key(key)
        packed = self._states.get(packed_key)
        if packed is None:
            return None
        if not _live_packed(packed, self.clock.seconds() * 1000):
            del self._states[packed_key]
            return None
        return unpack_state(packed)

    def forget(self, key: str) -> defer.Deferred:
        had = self.peek(key) is not None
        self._states.pop(pack_key(key), None)
        return defer.succeed(had)

    def record_failure(self, key: str, now: float, ttl: int, limit: int) -> defer.Deferred:
        states = self._states
        packed_key = pack_key(key)
        old = states.pop(packed_key, None)  # re-inserted below: now the most recent
        if old is None:
            self._make_room(now)
        state, started = after_failure(unpack_state(old) if old is not None else None, now, ttl, limit)
        packed = states[packed_key] = pack_state(state)
        return defer.succeed((unpack_state(packed), started))

    def _make_room(self, now: float) -> None:
        states = self._states
        if len(states) < self.max_tracked:
            return
        batch, now_ms = max(1, self.max_tracked // 1000), now * 1000
        doomed = []
        for packed_key, packed in states.items():  # from the front: least recently failing first
            if len(doomed) >= batch and _live_packed(packed, now_ms):
                break
            doomed.append(packed_key)
        for packed_key in doomed:
            packed = states.pop(packed_key)
            if _live_packed(packed, now_ms):
                self.on_evict(unpack_key(packed_key), unpack_state(packed))
