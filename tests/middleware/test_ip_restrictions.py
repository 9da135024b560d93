"""The IP restrictions component: validating entries, the per-account cache, changes, checks."""

import dataclasses

import pytest
from twisted.internet import defer

from apiserver.context import Gate
from apiserver.errors import AuthenticationFailed, InvalidArgument
from apiserver.middleware.ip_restrictions import IPRestrictions
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


def test_added_and_removed_change_the_cache_without_a_read(node_factory):
    """After a local write the cached entries change by that entry at once; nothing is read again."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "600"}})
    node.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    restrictions = node.ip_restrictions()
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    restrictions.add(ADMIN, "198.51.100.0/24", "SOAP")
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "198.51.100.9")) is None
    assert result_of(restrictions.entries(ADMIN.user_id)) == (("192.0.2.1", None), ("198.51.100.0/24", "SOAP"))
    restrictions.remove(ADMIN, "192.0.2.1", None)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 1


# --- IPRestrictions.check: the per-account cache ----------------------------------------------

def refused(d):
    with pytest.raises(AuthenticationFailed) as raised:
        result_of(d)
    assert raised.value.reason == "ip"
    return True


def test_check_admits_and_refuses(node_factory):
    """check fires None for an admitted address and AuthenticationFailed('ip') otherwise."""
    node = node_factory()
    node.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    restrictions = node.ip_restrictions()
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.2"))


def test_refusal_message_is_the_bad_password_message(node_factory):
    """A refused address carries the same message as any failed authentication."""
    node = node_factory()
    node.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    with pytest.raises(AuthenticationFailed) as raised:
        result_of(node.ip_restrictions().check(ADMIN, Gate.SOAP, "192.0.2.2"))
    assert str(raised.value) == str(AuthenticationFailed("password"))


def test_entries_are_loaded_once_within_cache_ttl(node_factory, clock):
    """Entries are read once per account per [auth] ip_restriction_cache_ttl, then again."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    restrictions = node.ip_restrictions()
    for _ in range(100):
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 1
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # changed on another node
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    clock.advance(5)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 2


def test_expired_entries_are_kept_while_the_generation_shows_no_change(node_factory, clock):
    """Once the ttl ends, one generation read decides: the same number keeps the compiled entries
    (no read of the rows), a new one (another node's change) reads them all again."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    node.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    node.accounts.generations[ADMIN.user_id] = 41
    restrictions = node.ip_restrictions()
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    for _ in range(3):
        clock.advance(5)
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert (node.accounts.loads, node.accounts.generation_reads) == (1, 4)
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # changed on another node ...
    node.accounts.generations[ADMIN.user_id] = 77                         # ... which drew a new number
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None  # within the ttl
    clock.advance(5)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 2


def test_entries_are_read_in_full_after_the_full_reload_interval(node_factory, clock):
    """Rows written behind the accounts service draw no generation: once the cached entries are
    FULL_RELOAD_SECONDS old, the check that finds them still decides by them (nobody waits for
    every row) and has them read again, so the next check decides by the rows."""
    from apiserver.middleware.ip_restrictions import FULL_RELOAD_SECONDS

    node = node_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    node.accounts.generations[ADMIN.user_id] = 3
    restrictions = node.ip_restrictions()
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # by hand: generation unchanged
    for _ in range(FULL_RELOAD_SECONDS // 5):
        clock.advance(5)
        assert node.accounts.loads == 1
        assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    assert node.accounts.loads == 2  # the last check (at FULL_RELOAD_SECONDS) had them read again
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))


def test_entries_of_an_idle_account_are_read_before_use(node_factory, clock):
    """Entries twice FULL_RELOAD_SECONDS old are read again before the check decides."""
    from apiserver.middleware.ip_restrictions import FULL_RELOAD_SECONDS

    node = node_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    node.accounts.generations[ADMIN.user_id] = 3
    restrictions = node.ip_restrictions()
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]  # by hand: generation unchanged
    clock.advance(2 * FULL_RELOAD_SECONDS)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 2


def test_local_changes_carry_the_generation_forward(node_factory, clock):
    """A change made here on top of the cached generation moves it along, so the entries stay
    cached after the ttl; one made on top of a generation it never saw leaves it, and the
    entries are read again (the change in between is missing here)."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "5"}})
    node.accounts.generations[ADMIN.user_id] = 10
    restrictions = node.ip_restrictions()
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    restrictions.add(ADMIN, "192.0.2.1", None)            # 10 -> 11
    restrictions.remove(ADMIN, "192.0.2.1", None)         # 11 -> 12
    restrictions.add(ADMIN, "198.51.100.0/24", None)      # 12 -> 13
    clock.advance(5)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 1
    node.accounts.restrictions[ADMIN.user_id] += [("192.0.2.0/24", "SOAP")]  # 13 -> 14 on another node
    node.accounts.generations[ADMIN.user_id] = 14
    restrictions.add(ADMIN, "203.0.113.7", None)          # 14 -> 15, on top of a generation never seen here
    clock.advance(5)
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None
    assert node.accounts.loads == 2


def test_invalidate_shows_a_change_at_once(node_factory):
    """invalidate(user_id) makes the next check read the entries again."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "600"}})
    restrictions = node.ip_restrictions()
    result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", "SOAP")]
    restrictions.invalidate(ADMIN.user_id)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "198.51.100.1")) is None


def test_cache_ttl_zero_reads_every_time(node_factory):
    """With ip_restriction_cache_ttl=0 every check reads the entries."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "0"}})
    restrictions = node.ip_restrictions()
    for _ in range(3):
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    assert node.accounts.loads == 3


def test_concurrent_checks_share_one_load(node_factory):
    """Checks arriving while the entries load wait for that one load."""
    node = node_factory()
    pending = defer.Deferred()
    calls = []
    node.blocking = lambda fn, *a: calls.append((fn, a)) or pending
    node.accounts.restrictions[ADMIN.user_id] = [("192.0.2.1", None)]
    restrictions = node.ip_restrictions()
    checks = [restrictions.check(ADMIN, Gate.SOAP, f"192.0.2.{n}") for n in (1, 2, 1)]
    assert len(calls) == 1 and not any(has_fired(d) for d in checks)
    fn, args = calls[0]
    pending.callback(fn(*args))
    assert result_of(checks[0]) is None
    assert refused(checks[1])
    assert result_of(checks[2]) is None


def test_invalidate_during_load_does_not_cache_stale_entries(node_factory):
    """A load that was running when invalidate came is answered but not cached."""
    node = node_factory({"auth": {"ip_restriction_cache_ttl": "600"}})
    pending = defer.Deferred()
    calls = []
    node.blocking = lambda fn, *a: calls.append((fn, a)) or pending
    restrictions = node.ip_restrictions()
    first = restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")
    restrictions.invalidate(ADMIN.user_id)
    fn, args = calls[0]
    pending.callback(fn(*args))  # read before the change: no entries
    assert result_of(first) is None
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.1", None)]
    node.blocking = lambda fn, *a: defer.maybeDeferred(fn, *a)
    assert refused(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))


def test_load_error_is_not_a_login_failure_and_not_cached(node_factory):
    """A database error fails the check as itself (fail closed) and the next check retries."""
    node = node_factory()
    node.blocking = lambda fn, *a: defer.fail(RuntimeError("database down"))
    restrictions = node.ip_restrictions()
    with pytest.raises(RuntimeError):
        result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1"))
    node.blocking = lambda fn, *a: defer.maybeDeferred(fn, *a)
    assert result_of(restrictions.check(ADMIN, Gate.SOAP, "192.0.2.1")) is None


def test_hijacked_identity_checks_the_impersonator(node_factory):
    """A hijacked session is checked against the appliance administrator's entries, not the site's."""
    node = node_factory()
    node.accounts.restrictions[SITE_ADMIN.user_id] = [("198.51.100.1", None)]
    restrictions = node.ip_restrictions()
    hijacked = dataclasses.replace(SITE_ADMIN, impersonator=ADMIN)
    assert result_of(restrictions.check(hijacked, Gate.SOAP, "192.0.2.1")) is None
    assert refused(restrictions.check(SITE_ADMIN, Gate.SOAP, "192.0.2.1"))
