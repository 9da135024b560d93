"""Periodic work on the injected clock whose work runs off the reactor: never overlapping, never lost.

``twisted.internet.task.LoopingCall`` schedules its next call only when the Deferred of the
last one fires, counted from the clock time *then*.  With work on a thread pool that means a
clock advanced while the work runs (a test's ``Clock.advance``, or a server that paused) can
step over the next call for good.  :class:`WorkTimer` keeps its due times fixed from the start
(``start + k * interval``, whatever the work takes): a due time that passes while a run is in
progress makes one more run start as soon as that one ends.  Runs never overlap, several
missed due times make one run, and :meth:`WorkTimer.idle` fires once every run that was due
has finished, so a test advances the clock and then waits for exactly the work it scheduled.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="apiserver.timers")


class WorkTimer:
    """Run ``work`` every ``interval`` seconds of ``clock``, one run at a time.

    ``run_blocking(fn)`` runs the blocking ``work`` off the reactor and returns a Deferred; with
    ``run_blocking=None``, ``work`` is called on the reactor thread and returns a Deferred (or a
    value) itself.  ``on_result(value)`` / ``on_failure(failure)`` are called on the reactor
    thread after each run (a failure is logged under ``name`` when there is no ``on_failure``).
    ``interval=None`` makes a timer without periodic runs: runs are due through
    :meth:`run_after` and :meth:`run_now` only.  ``from_end=True`` counts each interval from the
    end of the previous run instead (a long walk never runs back to back with the next one); a
    test then waits for :meth:`idle` before it advances the clock to the next run.
    """

    def __init__(self, clock, interval: Optional[float], work: Callable, run_blocking: Optional[Callable],
                 name: str = "timer", on_result: Optional[Callable] = None,
                 on_failure: Optional[Callable[[Failure], None]] = None, from_end: bool = False):
        if interval is not None and interval <= 0:
            raise ValueError(f"{name}: the interval must be positive, not {interval!r}")
        self.clock = clock
        self.interval = interval
        self.work = work
        self.run_blocking = run_blocking
        self.name = name
        self.on_result = on_result
        self.on_failure = on_failure
        self.from_end = from_end
        self._due_at: Optional[float] = None   # the next periodic due time (None: not started)
        self._call = None                      # the IDelayedCall of the next due time
        self._running = False
        self._again = False                    # a run became due while one was running
        self._waiters: list[defer.Deferred] = []
        #: Runs started since this timer was made (what tests and /metrics may count).
        self.runs = 0

    # --- schedule --------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether periodic runs are scheduled (between :meth:`start` and :meth:`stop`)."""
        return self._due_at is not None

    @property
    def busy(self) -> bool:
        """Whether a run is in progress or due to start when the current one ends."""
        return self._running or self._again

    @property
    def next_run(self) -> Optional[float]:
        """The clock time the next run is due at, None when none is."""
        return self._call.getTime() if self._call is not None and self._call.active() else None

    def start(self, now: bool = True) -> None:
        """Begin the periodic runs: the first now (``now``) or one interval from now."""
        if self.interval is None:
            raise ValueError(f"{self.name}: a timer without an interval runs through run_after/run_now only")
        if self.started:
            raise RuntimeError(f"{self.name}: already started")
        start = self.clock.seconds()
        self._due_at = start if now else start + self.interval
        if now:
            self._fire()
        else:
            self._arm(self._due_at)

    def stop(self) -> defer.Deferred:
        """End the periodic runs and forget runs that were due; fires when the running one ended."""
        self._due_at = None
        self._cancel()
        self._again = False
        return self.idle()

    def run_now(self) -> defer.Deferred:
        """Make a run due now; fires when it (and any run due before it ended) has finished.

        On a timer without an interval, a run made due by :meth:`run_after` is this one."""
        if self.interval is None:
            self._cancel()
        self._kick()
        return self.idle()

    def run_after(self, delay: float) -> None:
        """Make a run due ``delay`` seconds from now, unless one is due sooner already (a timer
        without an interval only: a periodic one keeps its schedule)."""
        if self.interval is not None:
            raise ValueError(f"{self.name}: run_after is for a timer without an interval; use run_now")
        at = self.clock.seconds() + delay
        if self._call is not None and self._call.active() and self._call.getTime() <= at:
            return
        self._cancel()
        self._call = self.clock.callLater(max(0.0, delay), self._fire)

    def idle(self) -> defer.Deferred:
        """Fires (with None) when no run is in progress and none is due to start after it."""
        if not self.busy:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    # --- internals (reactor thread) ----------------------------------------------------------
    def _arm(self, at: float) -> None:
        self._call = self.clock.callLater(max(0.0, at - self.clock.seconds()), self._fire)

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        if self._due_at is not None and not self.from_end:
            # The next due time follows the schedule, not this run: due times that already
            # passed (a long pause, a large Clock.advance) are this one run.
            now = self.clock.seconds()
            passed = int((now - self._due_at) // self.interval) + 1 if now >= self._due_at else 0
            self._due_at += max(1, passed) * self.interval
            self._arm(self._due_at)
        self._kick()

    def _kick(self) -> None:
        if self._running:
            self._again = True
            return
        self._again = False
        self.runs += 1
        self._running = True
        if self.run_blocking is None:
            d = defer.maybeDeferred(self.work)
        else:
            d = defer.maybeDeferred(self.run_blocking, self.work)
        d.addBoth(self._report)
        d.addBoth(self._finished)

    def _report(self, result) -> None:
        try:
            if isinstance(result, Failure):
                if self.on_failure is None:
                    log.failure("{name}: a run failed", result, name=self.name)
                else:
                    self.on_failure(result)
            elif self.on_result is not None:
                self.on_result(result)
        except Exception:
            log.failure("{name}: handling the result of a run failed", name=self.name)

    def _finished(self, _) -> None:
        self._running = False
        if self._again:
            self._kick()
        elif self.from_end and self._due_at is not None and self._call is None:
            self._due_at = self.clock.seconds() + self.interval
            self._arm(self._due_at)
        if not self.busy:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)
