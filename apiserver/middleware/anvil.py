"""Anvil: the brute-force throttle in front of every authentication gate.

What is counted: every failed authentication (bad API key, bad password, an ``esprit_id``
that names no live session, an address refused by an IP restriction), per client address.
IPv6 clients are counted per network of ``[anvil] ipv6_prefix`` bits (/64 by default), since
one host usually owns a whole /64.  Addresses in ``[anvil] whitelist`` are never counted,
delayed or blocked.

Window: the first failure from an address opens a window of ``ttl`` seconds; failures inside
it add up, and the count is forgotten when it closes.  A successful login does not erase
earlier failures inside the window.

Delay (before the attempt is answered, on the injected clock, never holding up other clients)::

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
refused while blocked are not counted, except at gate DAV, where each one counts again
(reason ``blocked``, see :class:`apiserver.middleware.GateKeeper`); either way the block ends
by itself ``ttl`` seconds after it began.  Each block is logged once (warn) and each unblock
once (info) with the address, by the node that saw the blocking failure; neither ever mentions
a key or password.
``apiserver_login_failed`` is called for every failure and ``apiserver_login_blocked`` once
per block.

State lives behind :class:`~apiserver.middleware.anvil_store.AnvilStore`, handed in
(:func:`make_anvil_store` picks the one ``[anvil] backend`` names): the memory store (one
node, the default) or ``apiserver.middleware.anvil_redis.RedisAnvilStore`` (``[anvil]
backend=redis``; nodes share counters and blocks).  While the store fails (Redis down), Anvil
cannot tell a blocked address, so authentication fails closed: every attempt from a
non-whitelisted address is answered ``Server.Internal`` (:data:`STORE_DOWN_MESSAGE`) until the
store answers again (asked at most every :data:`STORE_RETRY_SECONDS` meanwhile); the outage is
logged once when it starts and once when it ends.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
from typing import Callable, Optional

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from apiserver.addresses import parse_address
from apiserver.errors import ServerError, Throttled
from apiserver.middleware.anvil_store import NOT_AT_ONCE, AnvilState, AnvilStore, MemoryAnvilStore

log = Logger(namespace="apiserver.middleware.anvil")

#: What a caller is told while the store (Redis) does not answer.
STORE_DOWN_MESSAGE = "authentication is unavailable: the login throttle cannot reach its store; try again later"

#: Seconds between attempts to reach a failed store (the answers in between fail at once).
STORE_RETRY_SECONDS = 1.0

#: Addresses whose Anvil key is remembered at once (a few hundred KB at most).
KEY_CACHE_SIZE = 4096

#: Longest non-IP address text (a UNIX socket peer name) kept as a key.
MAX_KEY_LENGTH = 100


def make_anvil_store(settings, clock, run_blocking: Callable) -> AnvilStore:
    """The store ``[anvil] backend`` names: memory (bounded by ``[anvil] max_tracked``) or redis
    (at ``[anvil] redis_url``; its blocking client runs on ``run_blocking``)."""
    if settings.get("anvil", "backend") == "redis":
        from apiserver.middleware.anvil_redis import RedisAnvilStore  # needs the optional redis package

        return RedisAnvilStore(settings.get("anvil", "redis_url"), clock, run_blocking)
    return MemoryAnvilStore(clock, settings.get("anvil", "max_tracked"))


class Anvil:
    """Counts failed logins per address, delays and blocks; see the module docstring.

    ``clock``: what delays, windows and blocks are measured on; ``settings``: the config
    (``[anvil]``, read per use); ``fire(event, **kwargs)``: calls the event hooks
    (``apiserver_login_failed``, ``..._blocked``, ``..._unblocked``); ``store``: where the
    counters live (:func:`make_anvil_store`); ``whitelist``: addresses whitelisted at run time
    besides ``[anvil] whitelist`` (``rampart_whitelist``; anything with ``contains(address)``).
    """

    def __init__(self, clock, settings, fire: Callable, store: AnvilStore, whitelist=None):
        self.clock = clock
        self.config = settings
        self._fire = fire
        self.store = store
        self._whitelist = whitelist
        store.watch_evictions(self._evicted)
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
            key = self._keys[address]
        except KeyError:
            key = self._key_for(address)
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()  # bounded; refilled by the addresses that keep coming
            self._keys[address] = key
        if key is not None and self._whitelist is not None and self._whitelist.contains(address):
            return None
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
            self._fire("apiserver_login_failed", address=address, gate=gate, reason=reason)
            return defer.succeed(None)
        ttl, limit = self.config.get("anvil", "ttl"), self.config.get("anvil", "limit")
        d = self._ask(self.store.record_failure, key, self.clock.seconds(), ttl, limit)
        return d.addCallback(self._counted, key, address, gate, reason)

    def blocked(self, address: str) -> defer.Deferred:
        """Fires with whether Anvil refuses ``address`` now (never a whitelisted one)."""
        return self.status(address).addCallback(
            lambda state: state is not None and state.blocked(self.clock.seconds()))

    def unblock(self, address: str) -> defer.Deferred:
        """Forget ``address``'s failures and block (``rampart_unban``); fires with whether it had any."""
        key = self._key_for(address)
        if key is None:
            return defer.succeed(False)
        d = self._ask(self.store.forget, key)

        def forgotten(had: bool) -> bool:
            if self._announced.pop(key, None) is not None:
                log.info("anvil: unblocked {address} (unbanned)", address=key)
                self._fire("apiserver_login_unblocked", address=key)
            return had

        return d.addCallback(forgotten)

    def delay_for(self, count: int) -> float:
        """Seconds to wait before answering an attempt after ``count`` failures (the formula above)."""
        config = self.config
        min_attempts = max(config.get("anvil", "min_attempts"), 1)
        if count < min_attempts or count >= config.get("anvil", "limit"):
            return 0.0
        cap = config.get("anvil", "max_delay")
        exponent = min(count - min_attempts, 32)  # 2**32 * base exceeds any cap
        return min(cap, config.get("anvil", "base_delay") * 2 ** exponent) / 1000.0

    def tracked(self) -> Optional[int]:
        """How many addresses this node's store tracks (None for a shared store, not counted here)."""
        try:
            return len(self.store)
        except TypeError:
            return None

    def blocked_here(self) -> int:
        """How many addresses this node saw blocked and has not yet seen unblocked."""
        return len(self._announced)

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
        self._fire("apiserver_login_failed", address=address, gate=gate, reason=reason)
        return self._throttled(state)

    def _announce_block(self, key: str, state: AnvilState) -> None:
        until = state.blocked_until
        log.warn("anvil: blocking {address} for {seconds}s after {count} failed logins",
                 address=key, seconds=round(until - self.clock.seconds()), count=state.count)
        self._announced[key] = until
        heapq.heappush(self._unblocks, (until, key))
        self._schedule_unblocks()
        self._fire("apiserver_login_blocked", address=key, until=until)

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
                self._fire("apiserver_login_unblocked", address=key)
        self._schedule_unblocks()

    def _evicted(self, key: str, state: AnvilState) -> None:
        if self._announced.pop(key, None) is not None:
            log.info("anvil: unblocked {address} early: [anvil] max_tracked addresses are tracked", address=key)
            self._fire("apiserver_login_unblocked", address=key)
