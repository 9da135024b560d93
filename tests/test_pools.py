"""The thread pools: hashing at a lowered priority, one lowered hash per usable CPU, database threads untouched."""

from __future__ import annotations

import os
import threading

import pytest
from twisted.internet import reactor

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.pools import Pools, usable_cpus
from apiserver.testing import wait


@pytest.fixture
def pools_for():
    """``pools_for({"auth": {...}})``: started Pools on the real reactor, stopped afterwards."""
    made = []

    def make(sections=None):
        pools = Pools(reactor, Config(BUILTIN_SECTIONS, sections or {}, None))
        pools.start()
        made.append(pools)
        return pools

    yield make
    for pools in made:
        pools.stop()


def test_hashing_threads_yield_to_request_handling(pools_for):
    """Password hashing runs on SCHED_IDLE threads ([auth] hash_priority=idle, the default), so
    logins hashing at once cannot take the core from the reactor; database threads keep theirs."""
    pools = pools_for()

    def priority():
        tid = threading.get_native_id()
        return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)

    policy, _nice = wait(pools.run_hashing(priority))
    assert policy == os.SCHED_IDLE
    assert wait(pools.run_blocking(priority)) == priority()


@pytest.mark.parametrize("priority", ["idle", "normal"])
def test_lowered_hashes_compute_one_per_usable_cpu(pools_for, priority):
    """At a lowered hash_priority no more hashes compute at once than the process has CPUs
    (several low-priority threads on one core starve whichever holds the GIL, and the reactor
    waits for it); at normal priority every hashing thread may."""
    most = usable_cpus() if priority == "idle" else 8
    pools = pools_for({"auth": {"hash_threads": "8", "hash_priority": priority}})
    lock, running, peak, release = threading.Lock(), [0], [0], threading.Event()

    def hash_like():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(0.3)  # long enough for every other hash to start if it may
        with lock:
            running[0] -= 1

    for d in [pools.run_hashing(hash_like) for _ in range(8)]:
        wait(d)
    assert peak[0] == min(most, 8)
