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


def test_keyed_slots_bound_each_key_and_let_others_pass():
    """A key holds at most its share; its next work waits for its own release while another key starts at once."""
    from twisted.internet import defer

    from apiserver.pools import KeyedSlots

    slots = KeyedSlots(lambda: 2)
    gates = [defer.Deferred() for _ in range(3)]
    started = []

    def job(i):
        started.append(i)
        return gates[i]

    results = [slots.run("A", lambda i=i: job(i)) for i in range(3)]
    assert started == [0, 1] and slots.waiting("A") == 1
    other = slots.run("B", lambda: defer.succeed("b"))
    assert other.result == "b"  # B never waits behind A
    gates[0].callback("a0")
    assert started == [0, 1, 2] and results[0].result == "a0"
    gates[1].callback("a1")
    gates[2].callback("a2")
    assert [r.result for r in results] == ["a0", "a1", "a2"]
    assert slots.run("A", lambda: defer.succeed("again")).result == "again"  # all given back


def test_a_failing_or_raising_start_gives_its_slot_back():
    """Work that raises at once or fails later still releases its slot."""
    from twisted.internet import defer

    from apiserver.pools import KeyedSlots

    slots = KeyedSlots(lambda: 1)

    def boom():
        raise RuntimeError("x")

    slots.run("A", boom).addErrback(lambda f: None)
    slots.run("A", lambda: defer.fail(RuntimeError("y"))).addErrback(lambda f: None)
    assert slots.run("A", lambda: defer.succeed(1)).result == 1


def test_share_leaves_a_thread_for_others():
    """A key's share is what is asked, at most the pool less one, at least one."""
    from apiserver.pools import share_of

    assert (share_of(10, 3), share_of(3, 3), share_of(1, 5), share_of(8, 1)) == (3, 2, 1, 1)


def test_hashing_for_an_address_asks_ready_before_hashing(pools_for):
    """run_hashing_for: a refusal from ready() answers unhashed; otherwise the function runs."""
    from twisted.internet import defer

    from apiserver.errors import Throttled

    pools = pools_for()
    hashed = []

    def refuse():
        raise Throttled(retry_after=5)

    refused = wait(pools.run_hashing_for("192.0.2.1", hashed.append, 1, ready=refuse).addErrback(
        lambda f: f.trap(Throttled) and "refused"))
    assert refused == "refused" and hashed == []
    assert wait(pools.run_hashing_for("192.0.2.1", lambda: "ok", ready=lambda: defer.succeed(None))) == "ok"
