"""Compiled IP restriction entries: matching per gate and version, merging, changing in place, threads."""

import ipaddress
import random
import sys
import threading
import time

import pytest

from apiserver.context import Gate
from apiserver.middleware.ip_ranges import CompiledRestrictions, parse_entry


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
    from apiserver.middleware.ip_ranges import _canonical_span, _span

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
    pool = [(f"10.0.{rng.randrange(4)}.{rng.randrange(256)}", rng.choice([None, None, "SOAP", "UI"]))
            for _ in range(80)]
    pool += [("10.0.0.0/22", None), ("10.0.1.0/24", "SOAP"), ("10.0.2.0/23", "DAV"), ("10.0.0.0/30", None),
             ("10.0.0.4/30", None), ("10.0.1.7/32", None), ("2001:db8::/126", None), ("2001:db8::4", "UI")]
    probes = ([f"10.0.{a}.{b}" for a in range(5) for b in range(0, 256, 3)]
              + ["2001:db8::3", "2001:db8::4", "2001:db8::5"])
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


def test_matching_is_fast_for_the_full_limit():
    """10,000 checks against 100 entries take well under a second (parsed once, binary search)."""
    rng = random.Random(3)
    compiled = CompiledRestrictions(random_entries(rng, 100))
    addresses = [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(10_000)]
    started = time.perf_counter()
    for address in addresses:
        compiled.allows(Gate.SOAP, address)
    assert time.perf_counter() - started < 0.5


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
