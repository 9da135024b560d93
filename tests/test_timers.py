"""WorkTimer: due times fixed from the start, runs that never overlap, missed due times never lost."""

from __future__ import annotations

import pathlib
import re
import threading

import pytest
from twisted.internet import defer, task, threads
from twisted.python.threadpool import ThreadPool

from apiserver.testing import wait
from apiserver.timers import WorkTimer

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Pool:
    """A ``run_blocking`` whose runs the test finishes by hand: ``finish()`` fires the oldest."""

    def __init__(self):
        self.started: list[defer.Deferred] = []
        self.at: list[float] = []

    def run_blocking(self, clock):
        def run(fn):
            d = defer.Deferred()
            self.started.append(d)
            self.at.append(clock.seconds())
            return d.addCallback(lambda _: fn())
        return run

    def running(self) -> int:
        return sum(1 for d in self.started if not d.called)

    def finish(self) -> None:
        next(d for d in self.started if not d.called).callback(None)


def _timer(interval=10.0, **kwargs):
    clock, pool, results = task.Clock(), Pool(), []
    timer = WorkTimer(clock, interval, lambda: "done", pool.run_blocking(clock), on_result=results.append, **kwargs)
    return clock, pool, timer, results


def test_runs_are_due_on_the_schedule_from_the_start():
    """Runs start at 0, 10, 20 s of the clock, each reporting its result on the reactor thread."""
    clock, pool, timer, results = _timer()
    timer.start(now=True)
    for _ in range(3):
        pool.finish()
        clock.advance(10)
    assert pool.at == [0, 10, 20, 30]
    pool.finish()
    assert results == ["done"] * 4


def test_a_due_time_passing_during_a_run_starts_one_more_run_when_it_ends():
    """The defect of LoopingCall: an advance while the work runs is not stepped over; the schedule stays."""
    clock, pool, timer, _ = _timer()
    timer.start(now=True)              # run 1 at 0 s, still running
    clock.advance(10)                  # due at 10 s: waits for run 1
    assert pool.running() == 1 and timer.busy
    pool.finish()                      # run 1 ends: run 2 starts at once
    assert len(pool.started) == 2 and pool.running() == 1
    pool.finish()
    assert not timer.busy
    clock.advance(9.5)                 # 19.5 s: nothing due yet
    assert len(pool.started) == 2
    clock.advance(0.5)                 # 20 s: on the schedule from the start, not from when run 2 ended
    assert len(pool.started) == 3


def test_many_missed_due_times_are_one_run_and_runs_never_overlap():
    """A pause of 100 intervals makes one run, not a hundred, and never two at once."""
    clock, pool, timer, _ = _timer()
    timer.start(now=False)
    clock.advance(1000)
    assert len(pool.started) == 1
    clock.advance(10)
    clock.advance(10)
    assert pool.running() == 1         # the due ones wait for the running one
    pool.finish()
    assert len(pool.started) == 2 and pool.running() == 1
    pool.finish()
    clock.advance(10)
    assert pool.at == [1000, 1020, 1030]   # the second began when the first ended, at 1020 s


def test_idle_fires_once_every_due_run_has_finished():
    """idle(): at once when nothing runs; else after the running run and the one due behind it."""
    clock, pool, timer, _ = _timer()
    assert timer.idle().called
    timer.start(now=True)
    clock.advance(10)
    idle = timer.idle()
    pool.finish()
    assert not idle.called             # the run due at 10 s runs now
    pool.finish()
    assert idle.called


def test_a_failed_run_is_reported_and_the_schedule_goes_on():
    """on_failure gets the failure; the next due time still runs."""
    clock, failures = task.Clock(), []

    def work():
        raise OSError("database is down")

    timer = WorkTimer(clock, 5, work, None, on_failure=failures.append)
    timer.start(now=True)
    clock.advance(5)
    assert [f.value.args[0] for f in failures] == ["database is down"] * 2
    assert timer.runs == 2


def test_stop_forgets_due_runs_and_waits_for_the_running_one():
    """stop() cancels the schedule and what was due, and fires only when the running run ended."""
    clock, pool, timer, _ = _timer()
    timer.start(now=True)
    clock.advance(10)                  # due behind the running one
    stopped = timer.stop()
    assert not stopped.called
    pool.finish()
    assert stopped.called and len(pool.started) == 1
    clock.advance(100)
    assert len(pool.started) == 1 and not clock.getDelayedCalls()


def test_run_after_keeps_the_sooner_due_time_and_run_now_takes_its_place():
    """A one-shot timer: run_after(5) then run_after(8) runs once at 5 s; run_now cancels a pending one."""
    clock, pool, timer, _ = _timer(interval=None)
    timer.run_after(5)
    timer.run_after(8)
    clock.advance(5)
    clock.advance(3)
    assert pool.at == [5]
    pool.finish()
    timer.run_after(5)
    done = timer.run_now()
    pool.finish()
    assert done.called
    clock.advance(10)
    assert pool.at == [5, 8]
    with pytest.raises(ValueError):
        timer.start()
    with pytest.raises(ValueError):  # a periodic timer keeps its schedule
        _timer()[2].run_after(5)


def test_from_end_counts_each_interval_from_the_end_of_the_previous_run():
    """from_end: a run that ends at 25 s makes the next due at 35 s, not at the 10 s schedule."""
    clock, pool, timer, _ = _timer(from_end=True)
    timer.start(now=True)
    clock.advance(25)                  # the first run takes 25 s: nothing else becomes due
    assert len(pool.started) == 1
    pool.finish()
    clock.advance(9)
    assert len(pool.started) == 1
    clock.advance(1)
    assert pool.at == [0, 35]
    pool.finish()
    assert not timer.busy


def test_work_on_a_real_thread_pool_sees_every_advance():
    """Work blocked on a real pool thread while the clock passes its next due time still runs then."""
    from twisted.internet import reactor

    pool = ThreadPool(minthreads=1, maxthreads=2, name="test-timers")
    pool.start()
    clock, release, ran = task.Clock(), threading.Event(), []

    def work():  # Blocking
        release.wait(10)
        ran.append(clock.seconds())

    timer = WorkTimer(clock, 3600, work, lambda fn: threads.deferToThreadPool(reactor, pool, fn))
    try:
        timer.start(now=True)
        clock.advance(3600)            # the next pruning is due while the first still runs
        release.set()
        wait(timer.idle())
        assert len(ran) == 2
        clock.advance(3600)
        wait(timer.idle())
        assert len(ran) == 3
    finally:
        wait(timer.stop())
        pool.stop()


def test_no_looping_call_drives_work_in_the_server():
    """Periodic work in apiserver/ goes through WorkTimer: no LoopingCall can step over a due time."""
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "apiserver").rglob("*.py")
                 if re.search(r"\bLoopingCall\b", path.read_text(encoding="utf-8"))
                 and path.name != "timers.py"]
    assert offenders == []
