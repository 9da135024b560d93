"""Per-gate IP restrictions: validation, all-or-nothing matching, the per-account cache."""

import dataclasses
import ipaddress
import random
import sys
import threading
import time

import pytest
from twisted.internet import defer

from apiserver.context import Gate
from apiserver.errors import AuthenticationFailed, InvalidArgument
from apiserver.middleware.ip_restrictions import CompiledRestrictions, IPRestrictions, parse_entry
from tests.middleware.support import ADMIN, SITE_ADMIN, has_fired, result_of


@pytest.mark.parametrize("ip, gate, expected", [
    ("192.0.2.1", None, ("192.0.2.1", None)),
    (" 192.0.2.1 ", "ui", ("192.0.2.1", "UI")),
    ("192.0.2.77/24", "SOAP", ("192.0.2.0/24", "SOAP")),
    ("192.0.2.1/32", "", ("192.0.2.1", None)),
    ("2001:DB8::1", "dav", ("2001:db8::1", "DAV")),
    ("2001:db8:0:0:1::/64", "CLI", ("2001:db8::/64", "CLI")),
    ("::ffff:192.0.2.1", None, ("192.0.2.1", None)),
    ("::ffff:192.0.2.0/120", None, ("192.0.2.0/24", None)),
    ("0.0.0.0/0", None, ("0.0.0.0/0", None)),
])
def test_validate_entry_normalises(ip, gate, expected):
    """Valid addresses and networks come back canonical, gates upper-case (empty gate = none)."""
    assert IPRestrictions.validate_entry(ip, gate) == expected


@pytest.mark.parametrize("ip", [
    "10.0.0.0/33", "not-an-ip", "", "  ", "1.2.3.4/", "1.2.3.4/-1", "1.2.3.4/ab", "2001:db8::/129",
    "1.2.3.4:80", "[2001:db8::1]", "fe80::1%eth0", "1.2.3.4/24/8", "::ffff:1.2.3.4/64", None, 42, ["1.2.3.4"],
    "010.0.0.1", "1.2.3.4/0000000000008",
])
def test_validate_entry_refuses_bad_ip_naming_it(ip):
    """Anything but an address or CIDR network is Client.InvalidArgument naming the value."""
    with pytest.raises(InvalidArgument) as raised:
        IPRestrictions.validate_entry(ip, None)
    assert repr(ip) in str(raised.value)


@pytest.mark.parametrize("gate", ["FTP", "soap ", "*", 3])
def test_validate_entry_refuses_unknown_gate_naming_it(gate):
    """A gate other than UI, SOAP, DAV, CLI is refused, naming it."""
    with pytest.raises(InvalidArgument) as raised:
        IPRestrictions.validate_entry("192.0.2.1", gate)
    assert repr(gate) in str(raised.value)


def allowed(entries, gate, address):
    return CompiledRestrictions(entries).allows(gate, address)


def test_no_entries_admit_everyone():
    """Without entries every gate admits every address (even a non-IP one)."""
    for gate in Gate:
        assert allowed([], gate, "203.0.113.1")
        assert allowed([], gate, "unix")


def test_entry_without_gate_applies_to_every_gate():
    """An entry with no gate admits its address at every gate and nobody else."""
    for gate in Gate:
        assert allowed([("192.0.2.1", None)], gate, "192.0.2.1")
        assert not allowed([("192.0.2.1", None)], gate, "192.0.2.2")


def test_one_gated_entry_enables_every_gate():
    """All-or-nothing: an entry for UI makes SOAP, DAV and CLI refuse every address."""
    entries = [("192.0.2.1", "UI")]
    assert allowed(entries, Gate.UI, "192.0.2.1")
    assert not allowed(entries, Gate.UI, "192.0.2.2")
    for gate in (Gate.SOAP, Gate.DAV, Gate.CLI):
        assert not allowed(entries, gate, "192.0.2.1")


def test_gate_admits_its_entries_and_ungated_ones():
    """A gate admits via an entry for that gate or an entry with no gate."""
    entries = [("192.0.2.1", "UI"), ("198.51.100.0/24", None), ("203.0.113.5", "SOAP")]
    assert allowed(entries, Gate.UI, "192.0.2.1")
    assert allowed(entries, Gate.UI, "198.51.100.200")
    assert not allowed(entries, Gate.UI, "203.0.113.5")
    assert allowed(entries, Gate.SOAP, "203.0.113.5")
    assert allowed(entries, Gate.SOAP, "198.51.100.1")
    assert not allowed(entries, Gate.SOAP, "192.0.2.1")
    assert allowed(entries, Gate.DAV, "198.51.100.1")
    assert not allowed(entries, Gate.DAV, "203.0.113.5")


def test_networks_of_both_versions():
    """CIDR networks match inside, not outside; versions never cross."""
    entries = [("10.0.0.0/8", None), ("2001:db8::/32", None)]
    assert allowed(entries, Gate.SOAP, "10.255.255.255")
    assert not allowed(entries, Gate.SOAP, "11.0.0.0")
    assert allowed(entries, Gate.SOAP, "2001:db8:ffff::1")
    assert not allowed(entries, Gate.SOAP, "2001:db9::1")
    assert not allowed(entries, Gate.SOAP, "::a00:1")  # 10.0.0.1 as an integer, but IPv6


def test_mapped_address_matches_ipv4_entry():
    """A client seen as ::ffff:192.0.2.1 matches the entry 192.0.2.1."""
    assert allowed([("192.0.2.1", None)], Gate.SOAP, "::ffff:192.0.2.1")


def test_non_ip_address_is_refused_when_restricted():
    """With entries, an address that is not an IP (UNIX socket, garbage) is refused."""
    for address in ("unix", "", "not-an-ip"):
        assert not allowed([("0.0.0.0/0", None)], Gate.CLI, address)


def test_invalid_stored_entry_still_enables_restrictions():
    """A stored entry that no longer parses matches nothing, but restrictions stay on."""
    assert not allowed([("garbage", None)], Gate.SOAP, "192.0.2.1")
    assert not allowed([("192.0.2.1", "FTP")], Gate.SOAP, "192.0.2.1")
    assert allowed([("garbage", None), ("192.0.2.1", None)], Gate.SOAP, "192.0.2.1")


def test_overlapping_and_adjacent_networks_merge():
    """Overlapping and touching networks are merged and still match exactly."""
    entries = [("192.0.2.0/25", None), ("192.0.2.128/25", None), ("192.0.2.0/24", None), ("192.0.3.0", None)]
    compiled = CompiledRestrictions(entries)
    assert compiled.allows(Gate.SOAP, "192.0.2.0") and compiled.allows(Gate.SOAP, "192.0.3.0")
    assert not compiled.allows(Gate.SOAP, "192.0.1.255") and not compiled.allows(Gate.SOAP, "192.0.3.1")


def random_entries(rng, count):
    entries = []
    for _ in range(count):
        if rng.random() < 0.5:
            net = ipaddress.IPv4Network((rng.getrandbits(32), rng.choice([8, 16, 24, 28, 32])), strict=False)
        else:
            net = ipaddress.IPv6Network((rng.getrandbits(128), rng.choice([32, 48, 64, 128])), strict=False)
        entries.append((str(net), rng.choice([None, "UI", "SOAP", "DAV", "CLI"])))
    return entries


def test_matching_agrees_with_naive_rule_for_many_entries():
    """Compiled ranges decide like the rule read literally, for 100 random entries."""
    rng = random.Random(7)
    entries = random_entries(rng, 100)
    compiled = CompiledRestrictions(entries)
    networks = [(ipaddress.ip_network(ip), gate) for ip, gate in entries]
    probes = [str(net.network_address + rng.randrange(net.num_addresses)) for net, _ in networks]
    probes += [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(200)]
    for address in probes:
        ip = ipaddress.ip_address(address)
        for gate in Gate:
            naive = any(ip in net and g in (None, gate.value) for net, g in networks)
            assert compiled.allows(gate, address) is naive, (address, gate)


@pytest.mark.parametrize("text", [
    "192.0.2.1", "192.0.2.0/24", "0.0.0.0/0", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32", "::/0", "::",
    "::1", "2001:db8::/127", "::ffff:192.0.2.1", "192.0.2.1/32", "192.0.2.1/24", "2001:DB8::/32", "010.0.0.1",
    "192.0.2.0/024", "2001:db8::/64 ", "garbage", "192.0.2.256",
])
def test_stored_entries_compile_like_their_parsed_networks(text):
    """The quick parse of stored (canonical) entries gives what parse_entry gives; anything else
    takes parse_entry's path, and text it refuses matches nothing."""
    from apiserver.middleware.ip_restrictions import _canonical_span, _span

    try:
        net = parse_entry(text)
        expected = (None, net.version, int(net.network_address), int(net.broadcast_address))
    except ValueError:
        expected = None
    assert _span(text, None) == expected
    fast = _canonical_span(text)
    assert fast is None or (None, *fast) == expected


def same_decisions(a: CompiledRestrictions, b: CompiledRestrictions, probes) -> bool:
    return all(a.allows(gate, address) is b.allows(gate, address) for address in probes for gate in Gate)


def test_one_changed_entry_compiles_like_all_of_them():
    """add/remove in place give the entries and decisions of compiling the whole list again."""
    rng = random.Random(11)
    entries = random_entries(rng, 60) + [("192.0.2.0/25", None), ("192.0.2.128/25", "SOAP"), ("192.0.2.127", "UI")]
    probes = [str(ipaddress.ip_network(ip).network_address) for ip, _ in entries]
    probes += [str(ipaddress.ip_network(ip).broadcast_address) for ip, _ in entries]
    probes += [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(100)] + ["192.0.2.200", "unix:peer"]
    grown = CompiledRestrictions([])
    for n, (ip, gate) in enumerate(entries):
        assert grown.add(ip, gate) is grown
        if n % 10 == 9:
            assert same_decisions(grown, CompiledRestrictions(entries[:n + 1]), probes)
    assert grown.entries == tuple(entries) and same_decisions(grown, CompiledRestrictions(entries), probes)
    shrunk = grown
    for ip, gate in entries[::3]:
        assert shrunk.remove(ip, gate) is shrunk
    rest = [e for e in entries if e not in entries[::3]]
    assert shrunk.entries == tuple(rest) and same_decisions(shrunk, CompiledRestrictions(rest), probes)
    assert shrunk.remove("203.0.113.1", None).entries == tuple(rest)
    assert CompiledRestrictions([]).add("192.0.2.1", "UI").allows(Gate.SOAP, "192.0.2.1") is False


def test_random_adds_and_removes_decide_like_a_fresh_compile():
    """Interleaved adds and removes of overlapping, nested and adjacent entries (and a duplicate
    span stored as different text) keep deciding like the remaining entries compiled afresh."""
    rng = random.Random(5)
    pool = [(f"10.0.{rng.randrange(4)}.{rng.randrange(256)}", rng.choice([None, None, "SOAP", "UI"])) for _ in range(80)]
    pool += [("10.0.0.0/22", None), ("10.0.1.0/24", "SOAP"), ("10.0.2.0/23", "DAV"), ("10.0.0.0/30", None),
             ("10.0.0.4/30", None), ("10.0.1.7/32", None), ("2001:db8::/126", None), ("2001:db8::4", "UI")]
    probes = [f"10.0.{a}.{b}" for a in range(5) for b in range(0, 256, 3)] + ["2001:db8::3", "2001:db8::4", "2001:db8::5"]
    compiled, held = CompiledRestrictions([]), []
    for step in range(600):
        entry = rng.choice(pool)
        if entry in held and rng.random() < 0.5:
            compiled.remove(*entry)
            held.remove(entry)
        elif entry not in held:
            compiled.add(*entry)
            held.append(entry)
        if step % 25 == 0:
            assert compiled.entries == tuple(held)
            assert same_decisions(compiled, CompiledRestrictions(held), probes), step


def test_added_and_removed_change_the_cache_without_a_read(app_factory):
    """After a local write the cached entries change by that entry at once; nothing is read again."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "600"}})
    app.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    restrictions = IPRestrictions(app)
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    restrictions.added(ADMIN.user_id, "198.51.100.0/24", "SOAP")
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "198.51.100.9")) is None
    assert result_of(restrictions.entries(ADMIN.user_id)) == (("192.0.2.1", None), ("198.51.100.0/24", "SOAP"))
    restrictions.removed(ADMIN.user_id, "192.0.2.1", None)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 1


def test_matching_is_fast_for_the_full_limit():
    """10,000 checks against 100 entries take well under a second (parsed once, binary search)."""
    rng = random.Random(3)
    compiled = CompiledRestrictions(random_entries(rng, 100))
    addresses = [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(10_000)]
    started = time.perf_counter()
    for address in addresses:
        compiled.allows(Gate.SOAP, address)
    assert time.perf_counter() - started < 0.5


# --- IPRestrictions.check: the per-account cache ----------------------------------------------

def refused(d):
    with pytest.raises(AuthenticationFailed) as raised:
        result_of(d)
    assert raised.value.reason == "ip"
    return True


def test_check_admits_and_refuses(app_factory):
    """check fires None for an admitted address and AuthenticationFailed('ip') otherwise."""
    app = app_factory()
    app.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    restrictions = IPRestrictions(app)
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.2"))


def test_refusal_message_is_the_bad_password_message(app_factory):
    """A refused address carries the same message as any failed authentication."""
    app = app_factory()
    app.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    with pytest.raises(AuthenticationFailed) as raised:
        result_of(IPRestrictions(app).check(ADMIN, Gate.SOAP, "192.0.2.2"))
    assert str(raised.value) == str(AuthenticationFailed("password"))


def test_entries_are_loaded_once_within_cache_ttl(app_factory, clock):
    """Entries are read once per account per [auth] ip_restriction_cache_ttl, then again."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    restrictions = IPRestrictions(app)
    for _ in range(100):
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 1
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # changed on another node
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    clock.advance(5)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 2


def test_expired_entries_are_kept_while_the_generation_shows_no_change(app_factory, clock):
    """Once the ttl ends, one generation read decides: the same number keeps the compiled entries
    (no read of the rows), a new one (another node's change) reads them all again."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    app.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    app.accounts.generations[ADMIN.user_id] = 41
    restrictions = IPRestrictions(app)
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    for _ in range(3):
        clock.advance(5)
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert (app.accounts.loads, app.accounts.generation_reads) == (1, 4)
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # changed on another node ...
    app.accounts.generations[ADMIN.user_id] = 77                         # ... which drew a new number
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None  # within the ttl
    clock.advance(5)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 2


def test_entries_are_read_in_full_after_the_full_reload_interval(app_factory, clock):
    """Rows written behind the accounts service draw no generation: once the cached entries are
    FULL_RELOAD_SECONDS old, the check that finds them still decides by them (nobody waits for
    every row) and has them read again, so the next check decides by the rows."""
    from apiserver.middleware.ip_restrictions import FULL_RELOAD_SECONDS

    app = app_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    app.accounts.generations[ADMIN.user_id] = 3
    restrictions = IPRestrictions(app)
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # by hand: generation unchanged
    for _ in range(FULL_RELOAD_SECONDS // 5):
        clock.advance(5)
        assert app.accounts.loads == 1
        assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    assert app.accounts.loads == 2  # the last check (at FULL_RELOAD_SECONDS) had them read again
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))


def test_entries_of_an_idle_account_are_read_before_use(app_factory, clock):
    """Entries twice FULL_RELOAD_SECONDS old are read again before the check decides."""
    from apiserver.middleware.ip_restrictions import FULL_RELOAD_SECONDS

    app = app_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    app.accounts.generations[ADMIN.user_id] = 3
    restrictions = IPRestrictions(app)
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # by hand: generation unchanged
    clock.advance(2 * FULL_RELOAD_SECONDS)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 2


def test_local_changes_carry_the_generation_forward(app_factory, clock):
    """A change made here on top of the cached generation moves it along, so the entries stay
    cached after the ttl; one made on top of a generation it never saw leaves it, and the
    entries are read again (the change in between is missing here)."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    app.accounts.generations[ADMIN.user_id] = 10
    restrictions = IPRestrictions(app)
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    restrictions.added(ADMIN.user_id, "192.0.2.1", None, (10, 11))
    restrictions.removed(ADMIN.user_id, "192.0.2.1", None, (11, 12))
    restrictions.added(ADMIN.user_id, "198.51.100.0/24", None, (12, 13))
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.0/24", None)]
    app.accounts.generations[ADMIN.user_id] = 13
    clock.advance(5)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 1
    restrictions.added(ADMIN.user_id, "203.0.113.7", None, (14, 15))  # 13 -> 14 happened elsewhere
    app.accounts.restrictions[ADMIN.user_id] += [("192.0.2.0/24", "SOAP"), ("203.0.113.7", None)]
    app.accounts.generations[ADMIN.user_id] = 15
    clock.advance(5)
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    assert app.accounts.loads == 2


def test_invalidate_shows_a_change_at_once(app_factory):
    """invalidate(user_id) makes the next check read the entries again."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "600"}})
    restrictions = IPRestrictions(app)
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", "SOAP")]
    restrictions.invalidate(ADMIN.user_id)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "198.51.100.1")) is None


def test_cache_ttl_zero_reads_every_time(app_factory):
    """With ip_restriction_cache_ttl=0 every check reads the entries."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "0"}})
    restrictions = IPRestrictions(app)
    for _ in range(3):
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert app.accounts.loads == 3


def test_concurrent_checks_share_one_load(app_factory):
    """Checks arriving while the entries load wait for that one load."""
    app = app_factory()
    pending = defer.Deferred()
    calls = []
    app.run_blocking = lambda fn, *a: calls.append((fn, a)) or pending
    app.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    restrictions = IPRestrictions(app)
    checks = [restrictions.check(ADMIN, Gate.SOAP, f"192.0.2.{n}") for n in (1, 2, 1)]
    assert len(calls) == 1 and not any(has_fired(d) for d in checks)
    fn, args = calls[0]
    pending.callback(fn(*args))
    assert result_of(checks[0]) is None
    assert refused(checks[1])
    assert result_of(checks[2]) is None


def test_invalidate_during_load_does_not_cache_stale_entries(app_factory):
    """A load that was running when invalidate came is answered but not cached."""
    app = app_factory({"auth": {"ip_restriction_cache_ttl": "600"}})
    pending = defer.Deferred()
    calls = []
    app.run_blocking = lambda fn, *a: calls.append((fn, a)) or pending
    restrictions = IPRestrictions(app)
    first = restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")
    restrictions.invalidate(ADMIN.user_id)
    fn, args = calls[0]
    pending.callback(fn(*args))  # read before the change: no entries
    assert result_of(first) is None
    app.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]
    app.run_blocking = lambda fn, *a: defer.maybeDeferred(fn, *a)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))


def test_load_error_is_not_a_login_failure_and_not_cached(app_factory):
    """A database error fails the check as itself (fail closed) and the next check retries."""
    app = app_factory()
    app.run_blocking = lambda fn, *a: defer.fail(RuntimeError("database down"))
    restrictions = IPRestrictions(app)
    with pytest.raises(RuntimeError):
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    app.run_blocking = lambda fn, *a: defer.maybeDeferred(fn, *a)
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None


def test_hijacked_identity_checks_the_impersonator(app_factory):
    """A hijacked session is checked against the appliance administrator's entries, not the site's."""
    app = app_factory()
    app.accounts.restrictions[SITE_ADMIN.user_id] = [("198.51.100.1", None)]
    restrictions = IPRestrictions(app)
    hijacked = dataclasses.replace(SITE_ADMIN, impersonator=ADMIN)
    assert result_of(restrictions.check(hijacked, Gate.SOAP, "192.0.2.1")) is None
    assert refused(restrictions.check(SITE_ADMIN, Gate.SOAP, "192.0.2.1"))


def test_checks_stay_right_while_another_thread_changes_the_entries():
    """A check on one thread during adds and removes on another (which merge and split the range
    it matches) answers by the entries that stay: the compiled form is never seen half-changed."""
    compiled = CompiledRestrictions([("192.0.2.0/24", None)] + [(f"10.0.{i}.0/24", "UI") for i in range(0, 200, 2)])
    stop, wrong = threading.Event(), []

    def churn():
        while not stop.is_set():
            for ip in ("192.0.3.0/24", "192.0.1.0/24", "192.0.2.128/25"):
                compiled.add(ip, None)
            for ip in ("192.0.1.0/24", "192.0.3.0/24", "192.0.2.128/25"):
                compiled.remove(ip, None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=churn)
    writer.start()
    try:
        for _ in range(20_000):
            if not compiled.allows(Gate.SOAP, "192.0.2.200") or compiled.allows(Gate.SOAP, "198.51.100.1"):
                wrong.append(True)
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
    assert not wrong
