"""The thread pools: where blocking work and password hashing run, off the reactor thread.

:class:`Pools` owns the blocking pool (database work, blocking module functions: ``[core]
db_threads``) and the hashing pool (``[auth] hash_threads``, at a lowered priority).  Every
component that blocks is handed :meth:`Pools.run_blocking` or :meth:`Pools.run_hashing` (or
the ``Pools`` itself), never a pool: these two entry points are where any sharing policy
(per-account fairness, quotas) is applied.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

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
