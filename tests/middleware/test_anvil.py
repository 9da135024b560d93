"""Anvil on a task.Clock: counting, delays, blocks, whitelist, IPv6 grouping, bounded memory."""

import gc
import ipaddress
import tracemalloc

import pytest
from twisted.logger import capturedLogs

from apiserver.context import Gate
from apiserver.errors import Throttled
from apiserver.middleware.anvil_store import AnvilState, MemoryAnvilStore, after_failure
from tests.middleware.support import has_fired, result_of

REMOTE = "192.0.2.10"
NO_WHITELIST = {"anvil": {"whitelist": ""}}


def fail_times(anvil, address, times, reason="key"):
    """Count ``times`` failures; the answers (None or Throttled) in order."""
    return [result_of(anvil.fail(address, Gate.SOAP, reason)) for _ in range(times)]


def throttled_by_check(anvil, address):
    with pytest.raises(Throttled) as raised:
        result_of(anvil.check(address))
    return raised.value


def log_texts(events):
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_namespace") == "apiserver.middleware.anvil"]


def test_nineteen_failures_pass_the_twentieth_blocks(node_factory):
    """With limit=20, failures 1..19 are plain failures; the 20th answers Throttled for ttl."""
    anvil = node_factory().anvil()
    answers = fail_times(anvil, REMOTE, 20)
    assert answers[:19] == [None] * 19
    assert isinstance(answers[19], Throttled) and answers[19].retry_after == 900
    assert throttled_by_check(anvil, REMOTE).retry_after == 900


def test_block_lasts_ttl_then_recovers_by_itself(node_factory, clock):
    """A blocked address is refused until ttl passes, then admitted with a clean slate."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 20)
    clock.advance(899)
    assert throttled_by_check(anvil, REMOTE).retry_after == 1
    clock.advance(1)
    assert result_of(anvil.check(REMOTE)) is None
    assert result_of(anvil.status(REMOTE)) is None


def test_attempts_while_blocked_do_not_extend_the_block(node_factory, clock):
    """Refused attempts are not failures: the block ends ttl after it began."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 20)
    for _ in range(10):
        clock.advance(60)
        throttled_by_check(anvil, REMOTE)
    clock.advance(300)
    assert result_of(anvil.check(REMOTE)) is None


def test_failures_expire_with_their_window(node_factory, clock):
    """Failures older than ttl are forgotten: 19 now and 19 after the window do not block."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 19)
    clock.advance(900)
    assert fail_times(anvil, REMOTE, 19) == [None] * 19
    assert result_of(anvil.status(REMOTE)).count == 19


def test_delay_formula_grows_and_is_capped(node_factory):
    """delay(n) = min(max_delay, base_delay * 2**(n - min_attempts)) ms for min_attempts <= n < limit."""
    anvil = node_factory().anvil()
    delays = [anvil.delay_for(n) for n in range(0, 22)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:9] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[9:20] == [8.0] * 11
    assert delays[20:] == [0, 0]  # blocked, not delayed


def test_delay_formula_follows_config_at_run_time(node_factory):
    """base_delay, max_delay and min_attempts are read live."""
    node = node_factory()
    anvil = node.anvil()
    node.config.set("anvil", "min_attempts", "0")
    node.config.set("anvil", "base_delay", "100")
    node.config.set("anvil", "max_delay", "1000")
    assert [anvil.delay_for(n) for n in range(7)] == [0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    node.config.set("anvil", "limit", "100000")
    assert anvil.delay_for(99_999) == 1.0


def test_check_waits_the_delay_on_the_clock(node_factory, clock):
    """Past min_attempts the check fires only after the delay has passed on node.clock."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 3)
    assert has_fired(anvil.check("192.0.2.99"))  # no failures there: at once
    waiting = anvil.check(REMOTE)
    assert not has_fired(waiting)
    clock.advance(0.249)
    assert not has_fired(waiting)
    clock.advance(0.001)
    assert result_of(waiting) is None


def test_delays_grow_then_stay_capped_through_check(node_factory, clock):
    """Each further failure doubles the wait up to max_delay."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 3)
    waits = []
    for _ in range(8):
        d = anvil.check(REMOTE)
        waited = 0.0
        while not has_fired(d):
            clock.advance(0.125)
            waited += 0.125
        result_of(d)
        waits.append(waited)
        fail_times(anvil, REMOTE, 1)
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_delayed_attempt_is_refused_if_blocked_meanwhile(node_factory, clock):
    """An attempt waiting out its delay is refused when concurrent failures block the address."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 5)
    waiting = anvil.check(REMOTE)
    fail_times(anvil, REMOTE, 15)
    clock.advance(10)
    with pytest.raises(Throttled):
        result_of(waiting)


def test_delay_does_not_hold_up_other_clients(node_factory):
    """While one address waits out its delay, another address is answered at once."""
    anvil = node_factory().anvil()
    fail_times(anvil, REMOTE, 10)
    waiting = anvil.check(REMOTE)
    assert result_of(anvil.check("198.51.100.1")) is None
    assert not has_fired(waiting)


def test_whitelist_is_never_counted(node_factory):
    """Whitelisted addresses (default 127.0.0.1, networks too) are never counted, delayed or blocked."""
    node = node_factory({"anvil": {"whitelist": "127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48"}})
    anvil = node.anvil()
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "10.9.8.7", "2001:db8:ffff:1::5"):
        assert fail_times(anvil, address, 50) == [None] * 50
        assert has_fired(anvil.check(address))
        assert result_of(anvil.status(address)) is None
    assert len(node.recorder.failed) == 200  # still failed logins for the hook
    assert not node.recorder.blocked


def test_whitelist_change_applies_at_once(node_factory):
    """Emptying the whitelist at run time makes the loopback address count."""
    node = node_factory()
    anvil = node.anvil()
    fail_times(anvil, "127.0.0.1", 5)
    node.config.set("anvil", "whitelist", "")
    fail_times(anvil, "127.0.0.1", 5)
    assert result_of(anvil.status("127.0.0.1")).count == 5


def test_ipv6_prefix_change_applies_at_once(node_factory):
    """A new [anvil] ipv6_prefix regroups addresses already seen."""
    node = node_factory()
    anvil = node.anvil()
    assert anvil.key_for("2001:db8:0:1::5") == "2001:db8:0:1::/64"
    node.config.set("anvil", "ipv6_prefix", "48")
    assert anvil.key_for("2001:db8:0:1::5") == "2001:db8::/48"


def test_ipv6_counted_per_64(node_factory):
    """IPv6 addresses of one /64 share a counter; another /64 has its own."""
    anvil = node_factory().anvil()
    for n in range(10):
        anvil.fail(f"2001:db8:0:1::{n:x}", Gate.SOAP, "key")
        anvil.fail(f"2001:db8:0:1:ffff:{n:x}::1", Gate.SOAP, "key")
    assert anvil.key_for("2001:db8:0:1::5") == "2001:db8:0:1::/64"
    assert isinstance(result_of(anvil.status("2001:db8:0:1:abcd::1")), AnvilState)
    throttled_by_check(anvil, "2001:db8:0:1:1234::1")
    assert result_of(anvil.check("2001:db8:0:2::1")) is None


def test_ipv6_prefix_is_configurable(node_factory):
    """[anvil] ipv6_prefix=48 groups a whole /48; 128 counts single addresses."""
    node = node_factory({"anvil": {"ipv6_prefix": "48"}})
    anvil = node.anvil()
    assert anvil.key_for("2001:db8:1:2::1") == anvil.key_for("2001:db8:1:ffff::9") == "2001:db8:1::/48"
    node.config.set("anvil", "ipv6_prefix", "128")
    assert anvil.key_for("2001:db8:1:2::1") == "2001:db8:1:2::1"
    assert anvil.key_for("::ffff:192.0.2.1") == "192.0.2.1"


def test_hooks_fire_for_every_failure_and_once_per_block(node_factory, clock):
    """apiserver_login_failed for each failure (address, gate, reason), login_blocked once."""
    node = node_factory()
    anvil = node.anvil()
    clock.advance(1000)
    for reason in ("key", "password", "session", "ip"):
        anvil.fail(REMOTE, Gate.UI, reason)
    fail_times(anvil, REMOTE, 20)
    assert node.recorder.failed[:4] == [(REMOTE, Gate.UI, r) for r in ("key", "password", "session", "ip")]
    assert len(node.recorder.failed) == 24
    assert node.recorder.blocked == [(REMOTE, 1900.0)]


def test_failing_hook_does_not_change_the_answer(node_factory):
    """A plugin raising in a hook is logged; counting and blocking go on."""
    node = node_factory()

    class Broken:
        from apiserver.hookspecs import hookimpl

        @hookimpl
        def apiserver_login_failed(self, address, gate, reason):
            raise RuntimeError("plugin bug")

    node.plugin_manager.register(Broken())
    anvil = node.anvil()
    with capturedLogs() as events:
        answers = fail_times(anvil, REMOTE, 20)
    assert isinstance(answers[-1], Throttled)
    assert any(e.get("log_failure") is not None for e in events)


def test_block_and_unblock_logged_once_with_address(node_factory, clock):
    """One warning when the block starts, one line when it ends, both naming the address."""
    anvil = node_factory().anvil()
    with capturedLogs() as events:
        fail_times(anvil, REMOTE, 25)
        for _ in range(5):
            throttled_by_check(anvil, REMOTE)
        clock.advance(900)
        clock.advance(900)
    texts = log_texts(events)
    assert len(texts) == 2
    assert "blocking 192.0.2.10 for 900s after 20 failed logins" in texts[0]
    assert "unblocked 192.0.2.10" in texts[1]


def test_unblocks_logged_in_order_for_many_blocks(node_factory, clock):
    """Blocks started at different times are each logged unblocked when their own ttl ends."""
    node = node_factory({"anvil": {"limit": "1", "ttl": "100"}})
    anvil = node.anvil()
    with capturedLogs() as events:
        anvil.fail("192.0.2.1", Gate.SOAP, "key")
        clock.advance(10)
        node.config.set("anvil", "ttl", "30")  # a shorter block started later ends first
        anvil.fail("192.0.2.2", Gate.SOAP, "key")
        clock.advance(30)
        first = log_texts(events)[2:]
        clock.advance(60)
    assert first == ["anvil: unblocked 192.0.2.2"]
    assert log_texts(events)[3:] == ["anvil: unblocked 192.0.2.1"]


def test_log_never_contains_credentials(node_factory):
    """Anvil logs name the address only: it never receives a key or password to log."""
    anvil = node_factory().anvil()
    with capturedLogs() as events:
        fail_times(anvil, REMOTE, 20, reason="password")
    for text in log_texts(events):
        assert "password" not in text.replace("failed logins", "")


def test_after_failure_transition():
    """The pure transition: opens a window, counts, blocks at limit once, resets after."""
    state, started = after_failure(None, 100.0, 900, 3)
    assert state == AnvilState(1, 1000.0, 0.0) and not started
    state, _ = after_failure(state, 101.0, 900, 3)
    state, started = after_failure(state, 102.0, 900, 3)
    assert state == AnvilState(3, 1000.0, 1002.0) and started
    state, started = after_failure(state, 103.0, 900, 3)
    assert state == AnvilState(4, 1000.0, 1002.0) and not started
    state, started = after_failure(state, 1002.0, 900, 3)
    assert state == AnvilState(1, 1902.0, 0.0) and not started


def test_memory_store_prunes_expired_then_oldest(clock):
    """At max_tracked, expired entries go first, then the least recently failing address."""
    evicted = []
    store = MemoryAnvilStore(clock, 3, lambda key, state: evicted.append(key))
    store.record_failure("a", 0.0, 10, 20)
    clock.advance(5)
    for key in ("b", "c"):
        store.record_failure(key, 5.0, 10, 20)
    store.record_failure("a", 5.0, 10, 20)  # a is now the most recent
    store.record_failure("d", 5.0, 10, 20)
    assert len(store) == 3 and evicted == ["b"]
    clock.advance(10)
    store.record_failure("e", 15.0, 10, 20)  # everything else has expired
    assert len(store) == 1 and evicted == ["b"]


def test_evicted_block_is_logged_as_ended_once(node_factory, clock):
    """A blocked address pruned for room is logged unblocked early, and not again at ttl."""
    node = node_factory({"anvil": {"limit": "1", "max_tracked": "100"}})
    anvil = node.anvil()
    with capturedLogs() as events:
        anvil.fail("192.0.2.1", Gate.SOAP, "key")
        for n in range(100):
            anvil.fail(f"198.51.{n}.1", Gate.SOAP, "key")
        clock.advance(900)
    texts = [t for t in log_texts(events) if "192.0.2.1" in t]
    assert len(texts) == 2 and "early" in texts[1]
    assert len(anvil.store) == 100


def test_hundred_thousand_addresses_within_memory_bound(node_factory):
    """100,000 distinct failing addresses cost at most 150 bytes each (documented: about 110)."""
    anvil = node_factory(NO_WHITELIST).anvil()
    addresses = [str(ipaddress.IPv4Address(0xC6120000 + n)) for n in range(50_000)]
    addresses += [str(ipaddress.IPv6Address((0x20010DB8_00000000 + n) << 64 | 0x1)) for n in range(50_000)]
    # The key texts are made before tracing because tracing every allocation of address parsing
    # makes this test take minutes; the store keeps its own compact form of them, traced below.
    keys = [anvil.key_for(address) for address in addresses]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            anvil.store.record_failure(key, 0.0, 900, 20)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(anvil.store) == 100_000
    assert used / 100_000 <= 150, f"{used / 100_000:.0f} bytes per tracked address"


def test_max_tracked_bounds_the_store(node_factory):
    """More distinct addresses than max_tracked never grow the store past it."""
    anvil = node_factory({"anvil": {"max_tracked": "1000"}}).anvil()
    for n in range(5000):
        anvil.fail(str(ipaddress.IPv4Address(0xC0000200 + n)), Gate.SOAP, "key")
    assert len(anvil.store) == 1000


def test_non_ip_address_is_counted_as_given(node_factory):
    """A UNIX socket peer ('unix') is counted under that name, cut to a bounded length."""
    anvil = node_factory().anvil()
    assert anvil.key_for("unix") == "unix"
    assert len(anvil.key_for("x" * 10_000)) == 100


def test_ipv4_mapped_whitelist_entry_covers_the_ipv4_address(node_factory):
    """A whitelist written as IPv4-mapped IPv6 (as a dual-stack socket shows peers) covers the IPv4 clients."""
    anvil = node_factory({"anvil": {"whitelist": "::ffff:192.0.2.0/120, ::ffff:198.51.100.7"}}).anvil()
    assert anvil.key_for("192.0.2.5") is None
    assert anvil.key_for("::ffff:198.51.100.7") is None
    assert anvil.key_for("198.51.100.8") == "198.51.100.8"
