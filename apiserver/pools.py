"""The thread pools: where blocking work and password hashing run, off the reactor thread.

:class:`Pools` owns the blocking pool (database work, blocking module functions: ``[core]
db_threads``) and the hashing pool (``[auth] hash_threads``, at a lowered priority).  Every
component that blocks is handed :meth:`Pools.run_blocking` or :meth:`Pools.run_hashing` (or
the ``Pools`` itself), never a pool: these entry points are where the sharing policy is applied.

Fair shares (:class:`KeyedSlots`): work done for an account (:meth:`Pools.run_blocking_for`,
the blocking module functions) holds at most ``[core] account_threads`` of the blocking pool
at once, and hashing for one client address (:meth:`Pools.run_hashing_for`) at most ``[auth]
hashes_per_address`` of the hashing pool: the rest waits, holding no thread, behind the same
account's or address's own work, never in front of others'.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Hashable, Optional

import collections

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

#: Nice value of the hashing pool's threads (with SCHED_BATCH, or alone where that is unavailable).
HASH_NICE = 19

_thread_state = threading.local()


def lower_thread_priority(priority: str = "idle") -> str:
    """Lower the calling thread's CPU priority as ``[auth] hash_priority`` says; returns what it got.

    ``idle``: SCHED_IDLE: it runs on CPU that request handling leaves (a waking request thread
    preempts it at once).  ``batch``: SCHED_BATCH at nice 19: it never preempts request
    handling on wake-up but keeps a small share of a saturated core.  ``normal``: unchanged.
    Where a policy is unavailable, nice 19 alone.
    """
    tid = threading.get_native_id()
    if priority == "normal":
        return "normal"
    try:
        if priority == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # no such policy here: nice alone
    try:
        os.setpriority(os.PRIO_PROCESS, tid, HASH_NICE)
        return priority if priority == "batch" else "nice"
    except (AttributeError, OSError):  # no per-thread priorities here: hash at normal priority
        return "normal"


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask, as ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def at_low_priority(priority: str, slots: threading.Semaphore, fn: Callable, *args, **kwargs):
    """Blocking.  ``fn(*args, **kwargs)`` on a thread of lowered priority (lowered once per thread),
    holding one of ``slots`` unless the priority is normal.

    At most one lowered thread hashes per usable CPU: each needs the GIL for a moment when its
    hash ends, and while several share a core at low priority the one holding the GIL gets a
    fraction of it, so the reactor thread waits for its GIL (measured with 8 hashing at once
    on one core: p99 of other calls 1.6x; one at a time: 1.02x, logins completing as fast).
    """
    if not getattr(_thread_state, "lowered", False):
        _thread_state.lowered = True
        lower_thread_priority(priority)
    if priority == "normal":
        return fn(*args, **kwargs)
    with slots:
        return fn(*args, **kwargs)


class KeyedSlots:
    """At most ``limit()`` holders per key at once; the others wait in arrival order, holding no
    thread.  Reactor thread only.  Keys without holders or waiters are forgotten."""

    def __init__(self, limit: Callable[[], int]):
        self._limit = limit
        self._held: dict = {}
        self._waiting: dict = {}

    def acquire(self, key: Hashable) -> defer.Deferred:
        """Fires (with None) once ``key`` holds a slot; give it back with :meth:`release`."""
        if self._held.get(key, 0) < max(1, self._limit()):
            self._held[key] = self._held.get(key, 0) + 1
            return defer.succeed(None)
        d = defer.Deferred(lambda d: self._cancelled(key, d))
        self._waiting.setdefault(key, collections.deque()).append(d)
        return d

    def release(self, key: Hashable) -> None:
        queue = self._waiting.get(key)
        if queue:
            d = queue.popleft()
            if not queue:
                del self._waiting[key]
            d.callback(None)  # the slot passes on: the count stays
            return
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)

    def waiting(self, key: Hashable) -> int:
        """How many wait for a slot of ``key``."""
        return len(self._waiting.get(key, ()))

    def _cancelled(self, key: Hashable, d: defer.Deferred) -> None:
        queue = self._waiting.get(key)
        if queue is not None and d in queue:
            queue.remove(d)
            if not queue:
                del self._waiting[key]

    def run(self, key: Optional[Hashable], start: Callable[[], defer.Deferred]) -> defer.Deferred:
        """``start()`` once ``key`` holds a slot (at once for key None); the slot is given back
        when its Deferred fires."""
        if key is None:
            return start()

        def started(_):
            d = defer.maybeDeferred(start)

            def done(result):
                self.release(key)
                return result

            return d.addBoth(done)

        return self.acquire(key).addCallback(started)


def share_of(pool_threads: int, wanted: int) -> int:
    """Threads one key may hold of a pool of ``pool_threads``: ``wanted``, leaving one for others."""
    return max(1, min(wanted, pool_threads - 1))


class Pools:
    """The blocking and hashing pools of one server.

    ``reactor`` gets the results back; ``settings`` is the config (``[core] db_threads`` and
    ``[auth] hash_threads`` at construction, ``[auth] hash_priority`` read when a pool thread
    first hashes).  Started by the service tree before anything else and stopped after it.
    """

    def __init__(self, reactor, settings):
        self._reactor = reactor
        self._settings = settings
        self.blocking_pool = ThreadPool(minthreads=1, maxthreads=settings.get("core", "db_threads"),
                                        name="apiserver-blocking")
        self.hash_pool = ThreadPool(minthreads=1, maxthreads=settings.get("auth", "hash_threads"),
                                    name="apiserver-hashing")
        # Hashes computing at once at a lowered priority: one per usable CPU (see at_low_priority).
        self._hash_slots = threading.Semaphore(usable_cpus())
        self._started = False
        db_threads, hash_threads = settings.get("core", "db_threads"), settings.get("auth", "hash_threads")
        self.account_slots = KeyedSlots(lambda: share_of(db_threads, settings.get("core", "account_threads")))
        self.address_slots = KeyedSlots(lambda: share_of(hash_threads, settings.get("auth", "hashes_per_address")))

    def start(self) -> None:
        """Start both pools (once); they stop at reactor shutdown at the latest."""
        if not self._started:
            self.blocking_pool.start()
            self.hash_pool.start()
            self._started = True
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.blocking_pool.stop()
            self.hash_pool.stop()

    def run_blocking(self, fn: Callable, *args, **kwargs) -> defer.Deferred:
        """Run database work or a blocking module function on the blocking pool."""
        return threads.deferToThreadPool(self._reactor, self.blocking_pool, fn, *args, **kwargs)

    def run_hashing(self, fn: Callable, *args, **kwargs) -> defer.Deferred:
        """Run password hashing on its own pool, so logins cannot starve database calls.

        The pool's threads run at a lowered priority (``[auth] hash_priority``, see
        :func:`lower_thread_priority`): hashing releases the GIL but needs a core, and at normal
        priority 8 logins hashing at once take most of it from the reactor thread (measured on
        one core: p99 of other calls 5x).  Read when a pool thread first hashes.  At a lowered
        priority at most one hash per usable CPU computes at a time; the other logins queue.
        """
        return threads.deferToThreadPool(self._reactor, self.hash_pool, at_low_priority,
                                         self._settings.get("auth", "hash_priority"), self._hash_slots,
                                         fn, *args, **kwargs)

    def run_blocking_for(self, account: Optional[Hashable], fn: Callable, *args, **kwargs) -> defer.Deferred:
        """:meth:`run_blocking` as ``account``'s work: at most its share of the pool's threads at once."""
        return self.account_slots.run(account, lambda: self.run_blocking(fn, *args, **kwargs))

    def run_hashing_for(self, address: Optional[Hashable], fn: Callable, *args, ready: Optional[Callable] = None,
                        **kwargs) -> defer.Deferred:
        """:meth:`run_hashing` for a login from ``address`` (its Anvil key; None: no bound): at most
        its share of the hashing threads at once.  ``ready()``, called once a slot is held and
        before hashing, may raise (or return a Deferred that fails) to refuse the attempt
        unhashed: a burst is judged as its failures are counted, not all at its arrival."""
        def start():
            d = defer.maybeDeferred(ready) if ready is not None else defer.succeed(None)
            return d.addCallback(lambda _: self.run_hashing(fn, *args, **kwargs))

        return self.address_slots.run(address, start)
