"""Anvil: the brute-force throttle in front of every authentication gate.

What is counted: every failed authentication (bad API key, bad password, an ``esprit_id``
that names no live session, an address refused by an IP restriction), per client address.
IPv6 clients are counted per network of ``[anvil] ipv6_prefix`` bits (/64 by default), since
one host usually owns a whole /64.  Addresses in ``[anvil] whitelist`` are never counted,
delayed or blocked.

Window: the first failure from an address opens a window of ``ttl`` seconds; failures inside
it add up, and the count is forgotten when it closes.  A successful login does not erase
earlier failures inside the window.

Delay (before the attempt is answered, on ``app.clock``, never holding up other clients)::

    delay(n) = min(max_delay, base_delay * 2 ** (n - m))   milliseconds
               for m <= n < limit, else 0;  m = max(min_attempts, 1)

where ``n`` is the number of failures from that address already counted in the window.
With the defaults (``min_attempts=3``, ``base_delay=250``, ``max_delay=8000``, ``limit=20``):
the first three attempts are answered at once, the 4th after 0.25 s, then 0.5, 1, 2, 4 s, and
from the 9th on 8 s each.

Block: the failure that brings the count to ``limit`` blocks the address for ``ttl`` seconds
from that moment; that attempt and every authentication from the address until then is
refused with ``Client.Throttled`` (``retry_after`` = seconds left), even with correct
credentials, without touching the credentials; an attempt of a concurrent burst whose
credentials turn out right after the block began is refused the same way
(:meth:`Anvil.refuse_if_blocked_now`), so a burst learns nothing past ``limit``.  Attempts
refused while blocked are not counted, so the block ends by itself ``ttl`` seconds after it
began.  Each block is logged once (warn) and each unblock once (info) with the address, by
the node that saw the blocking failure; neither ever mentions a key or password.
``apiserver_login_failed`` is called for every failure and ``apiserver_login_blocked`` once
per block.

State lives behind :class:`AnvilStore`: :class:`MemoryAnvilStore` (one node, the default) or
``apiserver.middleware.anvil_redis.RedisAnvilStore`` (``[anvil] backend=redis``; nodes share
counters and blocks).  While the store fails (Redis down), Anvil cannot tell a blocked address,
so authentication fails closed: every attempt from a non-whitelisted address is answered
``Server.Internal`` (:data:`STORE_DOWN_MESSAGE`) until the store answers again (asked at most
every :data:`STORE_RETRY_SECONDS` meanwhile); the outage is logged once when it starts and once
when it ends.

Memory (memory store): one tracked address costs about 110 bytes (the address as an int ~32,
its state packed into one int ~40, a dict slot ~40; measured with tracemalloc by
``tests/middleware/test_anvil.py``, which asserts at most 150, and for a million addresses
by ``benchmarks/bench_anvil_memory.py``), so the default bound ``[anvil] max_tracked=200000``
takes about 22 MB and a million addresses about 110 MB.  Times are kept to the millisecond,
rounded up.  Expired entries are dropped when met and, once ``max_tracked`` is reached, the
least recently failing addresses are dropped to make room (a block among them ends early and
is logged as such).
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import socket
from typing import Callable, NamedTuple, Optional

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from apiserver.errors import ServerError, Throttled
from apiserver.addresses import parse_address

log = Logger(namespace="apiserver.middleware.anvil")

#: What a caller is told while the store (Redis) does not answer.
STORE_DOWN_MESSAGE = "authentication is unavailable: the login throttle cannot reach its store; try again later"

#: Seconds between attempts to reach a failed store (the answers in between fail at once).
STORE_RETRY_SECONDS = 1.0

#: Addresses whose Anvil key is remembered at once (a few hundred KB at most).
KEY_CACHE_SIZE = 4096

#: Longest non-IP address text (a UNIX socket peer name) kept as a key.
MAX_KEY_LENGTH = 100


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

    def peek(self, key: str):
        """The live state of ``key`` (or None) when the store can answer at once, else
        :data:`NOT_AT_ONCE`; lets the common case skip Deferred machinery."""
        return NOT_AT_ONCE


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


def make_store(app, on_evict: Callable[[str, AnvilState], None]) -> AnvilStore:
    """The store ``[anvil] backend`` names."""
    config = app.config
    if config.get("anvil", "backend") == "redis":
        from apiserver.middleware.anvil_redis import RedisAnvilStore  # needs the optional redis package

        return RedisAnvilStore(app, config.get("anvil", "redis_url"))
    return MemoryAnvilStore(app.clock, config.get("anvil", "max_tracked"), on_evict)


class Anvil:
    """Counts failed logins per address, delays and blocks; see the module docstring."""

    def __init__(self, app, store: Optional[AnvilStore] = None):
        self.app = app
        self.clock = app.clock
        self.config = app.config
        self.store = store if store is not None else make_store(app, self._evicted)
        self._announced: dict[str, float] = {}   # blocks this node logged: key -> until
        self._unblocks: list[tuple[float, str]] = []  # heap of (until, key) for the unblock log
        self._timer = None
        self._store_down = False  # an outage is logged when it starts and when it ends
        # key_for is asked twice per login and depends only on the address and two config
        # keys: remember its answers until those keys change.
        self._keys: dict[str, Optional[str]] = {}
        self.config.observe(self._config_changed)
        self._store_retry_at = 0.0  # during an outage the store is asked again from then on

    # --- what a gate asks -------------------------------------------------------------------
    def key_for(self, address: str) -> Optional[str]:
        """What ``address`` is counted as (its IPv6 network), or None when it is whitelisted."""
        try:
            return self._keys[address]
        except KeyError:
            pass
        key = self._key_for(address)
        if len(self._keys) >= KEY_CACHE_SIZE:
            self._keys.clear()  # bounded; refilled by the addresses that keep coming
        self._keys[address] = key
        return key

    def _config_changed(self, section: str, key: str, old, new) -> None:
        if section == "anvil" and key in ("whitelist", "ipv6_prefix"):
            self._keys.clear()

    def _key_for(self, address: str) -> Optional[str]:
        ip = parse_address(address)
        if ip is None:
            return address[:MAX_KEY_LENGTH]
        if any(ip in net for net in self.config.get("anvil", "whitelist")):
            return None
        prefix = self.config.get("anvil", "ipv6_prefix")
        if ip.version == 6 and prefix < 128:
            network = int(ip) >> (128 - prefix) << (128 - prefix)
            return f"{ipaddress.IPv6Address(network)}/{prefix}"
        return str(ip)

    def check(self, address: str) -> defer.Deferred:
        """Fires with None when ``address`` may try to authenticate now (after its delay, if any);
        fails with :class:`Throttled` while it is blocked."""
        key = self.key_for(address)
        if key is None:
            return defer.succeed(None)
        return self._ask(self.store.get, key).addCallback(self._admit_or_delay, key)

    def check_now(self, address: str) -> Optional[defer.Deferred]:
        """Like :meth:`check` without a Deferred when none is needed: None when ``address`` may
        try now, raises :class:`Throttled` while it is blocked, a Deferred when it must wait."""
        return self._decide_now(address, self._admit_or_delay)

    def refuse_if_blocked_now(self, address: str) -> Optional[defer.Deferred]:
        """None when ``address`` is not blocked, raises :class:`Throttled` when it is, a Deferred
        (None or Throttled) when the store must be asked.  No delay: for an attempt that has
        been checked and authenticated already."""
        return self._decide_now(address, lambda state, key: self._refuse_if_blocked(state))

    def fail(self, address: str, gate, reason: str) -> defer.Deferred:
        """Count one failed authentication; fires with the :class:`Throttled` error to raise
        when the address is blocked now, else None."""
        key = self.key_for(address)
        if key is None:
            self.app.fire("apiserver_login_failed", address=address, gate=gate, reason=reason)
            return defer.succeed(None)
        ttl, limit = self.config.get("anvil", "ttl"), self.config.get("anvil", "limit")
        d = self._ask(self.store.record_failure, key, self.clock.seconds(), ttl, limit)
        return d.addCallback(self._counted, key, address, gate, reason)

    def delay_for(self, count: int) -> float:
        """Seconds to wait before answering an attempt after ``count`` failures (the formula above)."""
        config = self.config
        min_attempts = max(config.get("anvil", "min_attempts"), 1)
        if count < min_attempts or count >= config.get("anvil", "limit"):
            return 0.0
        cap = config.get("anvil", "max_delay")
        exponent = min(count - min_attempts, 32)  # 2**32 * base exceeds any cap
        return min(cap, config.get("anvil", "base_delay") * 2 ** exponent) / 1000.0

    def status(self, address: str) -> defer.Deferred:
        """Fires with the live :class:`AnvilState` of ``address`` (None: clean or whitelisted)."""
        key = self.key_for(address)
        return defer.succeed(None) if key is None else self._ask(self.store.get, key)

    # --- internals ---------------------------------------------------------------------------
    # Plain callbacks rather than coroutines: this runs on every authenticated request.
    def _decide_now(self, address: str, decide: Callable[[Optional[AnvilState], str], Optional[defer.Deferred]]):
        key = self.key_for(address)
        if key is None:
            return None
        state = self.store.peek(key)
        if state is NOT_AT_ONCE:
            return self._ask(self.store.get, key).addCallback(decide, key)
        return decide(state, key)

    def _admit_or_delay(self, state: Optional[AnvilState], key: str):
        if state is None:
            return None
        self._refuse_if_blocked(state)
        delay = self.delay_for(state.count)
        if not delay:
            return None
        log.debug("anvil: delaying {address} {seconds}s after {count} failed logins",
                  address=key, seconds=delay, count=state.count)
        d = task.deferLater(self.clock, delay, self._ask, self.store.get, key)
        return d.addCallback(self._refuse_if_blocked)  # blocked by a concurrent attempt meanwhile?

    def _ask(self, method, *args) -> defer.Deferred:
        """``method(*args)`` of the store, its errors turned into :class:`ServerError`: without its
        state Anvil cannot tell a blocked address, so authentication fails closed.  During an
        outage the store is asked at most every :data:`STORE_RETRY_SECONDS`; the requests in
        between fail at once instead of each holding a blocking-pool thread until a timeout."""
        if self._store_down and self.clock.seconds() < self._store_retry_at:
            return defer.fail(ServerError(STORE_DOWN_MESSAGE))
        return method(*args).addCallbacks(self._store_answered, self._store_failed)

    def _store_answered(self, result):
        if self._store_down:
            self._store_down = False
            log.info("anvil: its store answers again; authentication resumes")
        return result

    def _store_failed(self, failure: Failure):
        self._store_retry_at = self.clock.seconds() + STORE_RETRY_SECONDS
        if not self._store_down:  # once per outage, not once per request
            self._store_down = True
            log.error("anvil: its store failed ({error}); authentications are refused until it answers",
                      error=failure.getErrorMessage() or failure.type.__name__)
        raise ServerError(STORE_DOWN_MESSAGE)

    def _refuse_if_blocked(self, state: Optional[AnvilState]) -> None:
        throttled = self._throttled(state) if state is not None else None
        if throttled is not None:
            raise throttled

    def _throttled(self, state: AnvilState) -> Optional[Throttled]:
        now = self.clock.seconds()
        if not state.blocked(now):
            return None
        return Throttled(retry_after=max(1, math.ceil(state.blocked_until - now)))

    def _counted(self, result: tuple, key: str, address: str, gate, reason: str) -> Optional[Throttled]:
        state, started = result
        if started:
            self._announce_block(key, state)
        self.app.fire("apiserver_login_failed", address=address, gate=gate, reason=reason)
        return self._throttled(state)

    def _announce_block(self, key: str, state: AnvilState) -> None:
        until = state.blocked_until
        log.warn("anvil: blocking {address} for {seconds}s after {count} failed logins",
                 address=key, seconds=round(until - self.clock.seconds()), count=state.count)
        self._announced[key] = until
        heapq.heappush(self._unblocks, (until, key))
        self._schedule_unblocks()
        self.app.fire("apiserver_login_blocked", address=key, until=until)

    def _schedule_unblocks(self) -> None:
        if not self._unblocks:
            return
        due = self._unblocks[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._release_due)

    def _release_due(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        while self._unblocks and self._unblocks[0][0] <= now:
            until, key = heapq.heappop(self._unblocks)
            if self._announced.get(key) == until:
                del self._announced[key]
                log.info("anvil: unblocked {address}", address=key)
                self.app.fire("apiserver_login_unblocked", address=key)
        self._schedule_unblocks()

    def _evicted(self, key: str, state: AnvilState) -> None:
        if self._announced.pop(key, None) is not None:
            log.info("anvil: unblocked {address} early: [anvil] max_tracked addresses are tracked", address=key)
            self.app.fire("apiserver_login_unblocked", address=key)
