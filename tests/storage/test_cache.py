"""ReadThroughCache: hits without a thread, one load per key, writes shown at once, bounded."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from apiserver.storage.cache import MISSING, ReadThroughCache
from tests.middleware.support import has_fired, result_of


class Rows:
    """A fake table: ``load`` counts its reads; ``pool`` holds the loads sent to the 'blocking pool'."""

    def __init__(self):
        self.values = {}
        self.loads = 0
        self.pool = []  # (Deferred, fn, args) not yet run

    def load(self, key):
        self.loads += 1
        if isinstance(self.values.get(key), Exception):
            raise self.values[key]
        return self.values.get(key)

    def run_blocking(self, fn, *args):
        d = defer.Deferred()
        self.pool.append((d, fn, args))
        return d

    def run_pool(self):
        pending, self.pool = self.pool, []
        for d, fn, args in pending:
            try:
                d.callback(fn(*args))
            except Exception:
                d.errback()


@pytest.fixture
def setup():
    clock, rows, ttl = task.Clock(), Rows(), [5]
    cache = ReadThroughCache(clock, rows.run_blocking, rows.load, lambda: ttl[0], max_entries=3)
    return clock, rows, ttl, cache


def test_miss_loads_on_the_pool_then_hits_need_no_thread(setup):
    """The first get loads through run_blocking; later gets within the ttl fire at once without it."""
    clock, rows, ttl, cache = setup
    rows.values[1] = "a@example.com"
    first = cache.get(1)
    assert not has_fired(first) and len(rows.pool) == 1
    rows.run_pool()
    assert result_of(first) == "a@example.com"
    again = cache.get(1)
    assert has_fired(again) and result_of(again) == "a@example.com"
    assert rows.pool == [] and rows.loads == 1
    assert cache.peek(1) == "a@example.com" and cache.peek(2) is MISSING


def test_none_is_a_cached_value(setup):
    """A key whose value is None is cached like any other (MISSING tells the two apart)."""
    clock, rows, ttl, cache = setup
    cache.get(7)
    rows.run_pool()
    assert cache.peek(7) is None
    assert has_fired(cache.get(7)) and rows.loads == 1


def test_concurrent_gets_share_one_load(setup):
    """Gets arriving while a key loads wait for that load instead of starting their own."""
    clock, rows, ttl, cache = setup
    rows.values[1] = "x"
    waiting = [cache.get(1) for _ in range(5)]
    assert len(rows.pool) == 1
    rows.run_pool()
    assert [result_of(d) for d in waiting] == ["x"] * 5 and rows.loads == 1


def test_entries_expire_after_the_ttl(setup):
    """Another node's write shows after at most ttl seconds: the value is read again then."""
    clock, rows, ttl, cache = setup
    rows.values[1] = "old"
    cache.get(1)
    rows.run_pool()
    rows.values[1] = "new"
    clock.advance(4.9)
    assert cache.peek(1) == "old"
    clock.advance(0.2)
    assert cache.peek(1) is MISSING
    d = cache.get(1)
    rows.run_pool()
    assert result_of(d) == "new"


def test_ttl_zero_caches_nothing(setup):
    """With a ttl of 0 every get reads."""
    clock, rows, ttl, cache = setup
    ttl[0] = 0
    for _ in range(3):
        cache.get(1)
        rows.run_pool()
    assert rows.loads == 3 and len(cache) == 0


def test_invalidate_during_a_load_does_not_keep_it(setup):
    """A load running when the key is invalidated is answered but not cached (it may be stale)."""
    clock, rows, ttl, cache = setup
    rows.values[1] = "old"
    first = cache.get(1)
    cache.invalidate(1)
    rows.run_pool()
    assert result_of(first) == "old"
    assert cache.peek(1) is MISSING


def test_get_blocking_loads_in_place_and_respects_invalidation(setup):
    """On the pool a miss is read directly; a read overlapping an invalidation is not kept."""
    clock, rows, ttl, cache = setup
    rows.values[1] = "v"
    assert cache.get_blocking(1) == "v" and rows.pool == []
    assert cache.get_blocking(1) == "v" and rows.loads == 1

    def load_racing_a_write(key):
        racing.invalidate(key)  # a write commits while this read runs
        return "stale"

    racing = ReadThroughCache(clock, rows.run_blocking, load_racing_a_write, lambda: 5)
    assert racing.get_blocking(2) == "stale"
    assert racing.peek(2) is MISSING


def test_update_changes_a_live_value_and_keeps_its_expiry(setup):
    """update() applies a local write to the cached value without a read; the ttl still bounds it."""
    clock, rows, ttl, cache = setup
    rows.values[1] = (1,)
    cache.get(1)
    rows.run_pool()
    clock.advance(3)
    cache.update(1, lambda value: value + (2,))
    assert cache.peek(1) == (1, 2) and rows.loads == 1
    clock.advance(2.1)
    assert cache.peek(1) is MISSING
    cache.update(9, lambda value: pytest.fail("no cached value to change"))


def test_update_during_a_load_applies_to_the_loaded_value(setup):
    """A load running while writes update its key gets their changes too and is kept, so
    constant writes never leave the key uncached (each request would read every row)."""
    clock, rows, ttl, cache = setup
    rows.values[1] = frozenset({"a"})  # what the load reads: it began before both writes
    d = cache.get(1)
    cache.update(1, lambda value: value | {"b"})
    cache.update(1, lambda value: value - {"a"})
    rows.run_pool()
    assert result_of(d) == frozenset({"b"}) and cache.peek(1) == frozenset({"b"})
    rows.values[1] = frozenset({"b"})  # a load that already saw the write: idempotent change
    cache.invalidate(1)
    d = cache.get(1)
    cache.update(1, lambda value: value | {"b"})
    rows.run_pool()
    assert cache.peek(1) == frozenset({"b"}) and rows.loads == 2


def test_invalidate_after_update_during_a_load_drops_both(setup):
    """An invalidation after an update still discards the running load and its pending changes."""
    clock, rows, ttl, cache = setup
    d = cache.get(1)
    cache.update(1, lambda value: pytest.fail("the invalidated load's changes must not run"))
    cache.invalidate(1)
    rows.run_pool()
    assert has_fired(d) and cache.peek(1) is MISSING


def test_failed_load_reaches_every_waiter_and_is_not_cached(setup):
    """A database error fails the waiting gets; the next get reads again."""
    clock, rows, ttl, cache = setup
    rows.values[1] = RuntimeError("database down")
    waiting = [cache.get(1), cache.get(1)]
    rows.run_pool()
    for d in waiting:
        with pytest.raises(RuntimeError):
            result_of(d)
    rows.values[1] = "back"
    d = cache.get(1)
    rows.run_pool()
    assert result_of(d) == "back"


def test_bounded_and_the_oldest_fill_goes_first(setup):
    """Beyond max_entries the longest-cached key is dropped; a refilled key counts as new."""
    clock, rows, ttl, cache = setup
    for key in (1, 2, 3):
        cache.get_blocking(key)
        clock.advance(1)
    cache.invalidate(1)
    cache.get_blocking(1)  # refilled: now the newest
    cache.get_blocking(4)
    assert len(cache) == 3
    assert cache.peek(2) is MISSING and all(cache.peek(k) is not MISSING for k in (1, 3, 4))


def test_revalidate_gets_the_expired_value_and_may_keep_it():
    """With revalidate, an expired value goes to revalidate(key, stale) instead of load; what
    it answers (the stale value itself here) is kept for another ttl; a key never loaded loads."""
    clock, rows = task.Clock(), Rows()
    seen = []

    def revalidate(key, stale):
        seen.append((key, stale))
        return stale

    cache = ReadThroughCache(clock, rows.run_blocking, rows.load, lambda: 5, revalidate=revalidate)
    rows.values[1] = ["a"]
    cache.get(1)
    rows.run_pool()
    value = cache.peek(1)
    clock.advance(6)
    assert cache.peek(1) is MISSING
    d = cache.get(1)
    rows.run_pool()
    assert result_of(d) is value and seen == [(1, value)] and rows.loads == 1
    clock.advance(4)
    assert cache.peek(1) is value  # a new ttl from the revalidation
    assert cache.get_blocking(2) is None and rows.loads == 2 and len(seen) == 1


def test_update_of_an_expired_value_keeps_it_for_revalidation():
    """With revalidate, a local write changes an expired value too (it is revalidated, not
    dropped); without it, the expired value is dropped and the next get loads."""
    for revalidate, loads in ((lambda key, stale: stale, 1), (None, 2)):
        clock, rows = task.Clock(), Rows()
        cache = ReadThroughCache(clock, rows.run_blocking, rows.load, lambda: 5, revalidate=revalidate)
        rows.values[1] = (1,)
        cache.get(1)
        rows.run_pool()
        clock.advance(6)
        cache.update(1, lambda value: value + (2,))
        rows.values[1] = (1, 2)
        d = cache.get(1)
        rows.run_pool()
        assert result_of(d) == (1, 2) and rows.loads == loads


def test_refresh_reads_in_the_background_and_keeps_answering_meanwhile(setup):
    """refresh() loads again on the pool while gets keep the current value; the load replaces
    it (with this node's updates applied); a refresh while one runs starts nothing."""
    clock, rows, ttl, cache = setup
    rows.values[1] = frozenset({"a"})
    cache.get(1)
    rows.run_pool()
    rows.values[1] = frozenset({"a", "x"})  # written behind the cache
    cache.refresh(1)
    cache.refresh(1)
    assert len(rows.pool) == 1
    assert result_of(cache.get(1)) == frozenset({"a"}) and len(rows.pool) == 1
    cache.update(1, lambda value: value | {"b"})
    rows.run_pool()
    assert cache.peek(1) == frozenset({"a", "b", "x"}) and rows.loads == 2
    clock.advance(4.9)
    assert cache.peek(1) is not MISSING  # a full ttl from the refresh


def test_a_refresh_invalidated_meanwhile_is_not_kept(setup):
    """An invalidation during a refresh drops both the old value and the refresh's load."""
    clock, rows, ttl, cache = setup
    rows.values[1] = "old"
    cache.get(1)
    rows.run_pool()
    cache.refresh(1)
    cache.invalidate(1)
    rows.run_pool()
    assert cache.peek(1) is MISSING
