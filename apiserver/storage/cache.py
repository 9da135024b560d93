"""Read-through caches of small rows, shared by the reactor thread and the blocking pool.

Most calls read a few small rows of one account (its email address, its IP restrictions) that
rarely change.  Read through the blocking pool, each costs two thread hand-offs and the GIL
passing back and forth, several times the read itself (``benchmarks/README.md``).  A
:class:`ReadThroughCache` keeps such values per key in this process:

* a hit is answered where it is asked, without a thread: :meth:`~ReadThroughCache.peek` and
  :meth:`~ReadThroughCache.get` (an already fired Deferred) on the reactor thread,
  :meth:`~ReadThroughCache.get_blocking` on the pool;
* a miss asked on the reactor thread loads on the blocking pool, once per key however many
  requests wait for it;
* a write on this node calls :meth:`~ReadThroughCache.invalidate` after its commit, so the
  change shows at once; a load that ran meanwhile is not kept, since it may have read the old
  rows.  Or it calls :meth:`~ReadThroughCache.update` with the change to apply to the cached
  value, which is applied to a load running meanwhile too, so frequent writes of one key never
  keep its cache empty (which would make every request read all of the key's rows);
* other nodes' writes show after at most ``ttl()`` seconds (read at every fill, so a change
  at run time applies); a ttl of 0 caches nothing;
* with ``revalidate``, an expired value is not dropped: the next request runs
  ``revalidate(key, stale)`` (Blocking) instead of ``load(key)``, which may answer ``stale``
  itself after a cheap check that nothing changed (a value that takes long to load, such as
  thousands of rows, then costs one small read per ``ttl()``); this node's updates still apply
  to it meanwhile;
* :meth:`~ReadThroughCache.refresh` reads a key again in the background while its current
  value keeps being answered (for a value that must be read in full now and then anyway);
* at most ``max_entries`` keys: the longest cached (first to expire) make room, O(1) per fill.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["ReadThroughCache", "MISSING"]

#: What :meth:`ReadThroughCache.peek` answers for a key it does not hold (None may be a value).
MISSING = object()


class ReadThroughCache:
    """Values of ``load(key)`` (Blocking) kept for ``ttl()`` seconds of ``clock``; see the module docstring."""

    def __init__(self, clock, run_blocking: Callable[..., defer.Deferred], load: Callable[[Hashable], Any],
                 ttl: Callable[[], float], max_entries: int = 10_000,
                 revalidate: Optional[Callable[[Hashable, Any], Any]] = None):
        self._clock = clock
        self._run_blocking = run_blocking
        self._load = load
        self._revalidate = revalidate
        self._ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # key -> (expires, value).  Every fill re-inserts its key, so the order is that of the
        # fills: the front holds the entries that expire first (while the ttl is unchanged).
        # An OrderedDict, as a plain dict takes time growing with the dropped entries to find
        # its first live one.
        self._entries: OrderedDict = OrderedDict()
        self._loading: dict = {}    # key -> Deferreds waiting for the load running on the pool
        self._changes: dict = {}    # key -> update() changes made while that load ran
        self._generation = 0        # bumped by every invalidation: loads that overlap one are not kept

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable):
        """The live cached value of ``key``, or :data:`MISSING`.  Any thread; never blocks."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock.seconds():
            return entry[1]
        return MISSING

    def get(self, key: Hashable) -> defer.Deferred:
        """Reactor thread: a Deferred firing with the value of ``key`` (loaded on the pool on a miss)."""
        value = self.peek(key)
        if value is not MISSING:
            return defer.succeed(value)
        waiter = defer.Deferred()
        with self._lock:
            waiters = self._loading.get(key)
            if waiters is not None:  # one load per key at a time; concurrent callers wait for it
                waiters.append(waiter)
                return waiter
            waiters = self._loading[key] = [waiter]
        d = self._run_blocking(*self._reader(key))
        d.addBoth(self._loaded, key, waiters)
        return waiter

    def refresh(self, key: Hashable) -> None:
        """Reactor thread: load ``key`` again on the pool while its current value keeps being
        answered; the load replaces it when done (unless invalidated meanwhile, and with this
        node's updates applied).  Nothing when a read of ``key`` is running already."""
        with self._lock:
            if key in self._loading:
                return
            waiters = self._loading[key] = []
        # A failed refresh reaches only requests that began waiting for it; the value it was
        # to replace stays until it expires.
        self._run_blocking(self._load, key).addBoth(self._loaded, key, waiters)

    def get_blocking(self, key: Hashable):
        """Blocking (pool thread): the value of ``key``, cached or loaded here."""
        value = self.peek(key)
        if value is not MISSING:
            return value
        with self._lock:
            generation = self._generation
        read, *args = self._reader(key)
        value = read(*args)
        with self._lock:
            if generation == self._generation:
                self._store(key, value)
        return value

    def invalidate(self, key: Hashable) -> None:
        """Forget ``key`` (call after a write commits).  Any thread."""
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)
            self._loading.pop(key, None)
            self._changes.pop(key, None)

    def update(self, key: Hashable, change: Callable[[Any], Any]) -> None:
        """After a write of ``key`` commits: replace a live cached value with ``change(value)``
        (keeping its expiry, so other nodes' writes still show within the ttl) instead of
        reading every row again.  Any thread; ``change`` must be quick and must not block.

        A load of ``key`` running meanwhile may or may not have seen the write: its value gets
        ``change`` too, so ``change`` must be idempotent (a value that already shows the write
        comes back equal), as adding or removing one member of a set is.
        """
        with self._lock:
            self._generation += 1
            if key in self._loading:
                self._changes.setdefault(key, []).append(change)
            entry = self._entries.get(key)
            if entry is None:
                return
            if entry[0] <= self._clock.seconds() and self._revalidate is None:
                del self._entries[key]
                return
            self._entries[key] = (entry[0], change(entry[1]))  # an expired one stays, to revalidate

    def clear(self) -> None:
        """Forget every key.  Any thread."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._loading.clear()
            self._changes.clear()

    # --- internals ---------------------------------------------------------------------------
    def _reader(self, key: Hashable) -> tuple:
        """``(function, *args)`` reading ``key`` on a miss: revalidate an expired value, else load."""
        entry = self._entries.get(key) if self._revalidate is not None else None
        if entry is not None:
            return self._revalidate, key, entry[1]
        return self._load, key

    def _loaded(self, result, key: Hashable, waiters: list) -> None:
        with self._lock:
            if self._loading.get(key) is waiters:  # not invalidated meanwhile: safe to keep
                del self._loading[key]
                changes = self._changes.pop(key, ())
                if not isinstance(result, Failure):
                    try:
                        for change in changes:
                            result = change(result)
                    except Exception:
                        result = Failure()
                    else:
                        self._store(key, result)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _store(self, key: Hashable, value) -> None:
        """Under the lock: keep ``value`` for ``ttl()`` seconds, making room first."""
        ttl = self._ttl()
        if ttl <= 0:
            return
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self.max_entries:  # the front expires first: O(1) per fill
            entries.popitem(last=False)
        entries[key] = (self._clock.seconds() + ttl, value)
