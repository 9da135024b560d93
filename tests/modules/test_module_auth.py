"""The auth module: who may change whose password, resets, API keys, IP restrictions, login history."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.errors import AuthenticationFailed, Denied, Exists, InvalidArgument, NotFound
from tests.accounts.support import wait


def _logs_in(h, username, site, password) -> bool:
    try:
        h.login(Credentials(username=username, site=site, password=password))
    except AuthenticationFailed:
        return False
    return True


@pytest.fixture
def accounts(recorded):
    """(harness, event log, site admin, user bob, admin of another site)."""
    h, log = recorded
    site = h.add_site()
    bob = h.add_user(site, "bob", "bob-password", "bob@example.com")
    other = h.add_site("example.org", "orgadmin", "org@example.org")
    h.add_user(other, "carol")
    return h, log, site, bob, other


def test_change_password_follows_the_role_rules(accounts):
    """The appliance may target anyone, a site admin its own users, a user only itself."""
    h, log, site, bob, other = accounts
    allowed = [
        (h.admin, dict(), ("admin", None)),
        (h.admin, dict(domain="example.com"), ("siteadmin", "example.com")),
        (h.admin, dict(user="carol", domain="example.org"), ("carol", "example.org")),
        (site, dict(), ("siteadmin", "example.com")),
        (site, dict(user="bob"), ("bob", "example.com")),
        (site, dict(user="bob", domain="example.com"), ("bob", "example.com")),
        (bob, dict(), ("bob", "example.com")),
        (bob, dict(user="bob"), ("bob", "example.com")),
    ]
    for n, (actor, target, (username, domain)) in enumerate(allowed):
        password = f"new-password-{n}"
        assert h.call(actor, "auth_change_password", password, **target) is True
        if username != "admin":
            assert _logs_in(h, username, domain, password), (actor.username, target)
    refused = [
        (h.admin, dict(user="bob"), InvalidArgument),
        (site, dict(user="carol", domain="example.org"), Denied),
        (site, dict(user="nobody"), NotFound),
        (bob, dict(user="siteadmin"), Denied),
        (bob, dict(domain="example.org"), Denied),
        (other, dict(user="bob"), NotFound),
    ]
    for actor, target, error in refused:
        with pytest.raises(error):
            h.call(actor, "auth_change_password", "refused-password", **target)
    changes = [kw for name, kw, _ in log.events if name == "password_changed"]
    assert len(changes) == len(allowed) and not any(kw["reset"] for kw in changes)
    assert (changes[2]["target"].username, changes[2]["actor"].username) == ("carol", "admin")


def test_old_password_stops_working_and_short_ones_are_refused(accounts):
    """After a change only the new password logs in; below min_pw_length nothing changes."""
    h, _log, _site, bob, _other = accounts
    with pytest.raises(InvalidArgument, match="at least 7 characters"):
        h.call(bob, "auth_change_password", "short")
    assert _logs_in(h, "bob", "example.com", "bob-password")
    h.call(bob, "auth_change_password", "bob-new-password")
    assert not _logs_in(h, "bob", "example.com", "bob-password")
    assert _logs_in(h, "bob", "example.com", "bob-new-password")


def test_reset_password_returns_a_working_generated_password(accounts):
    """A reset returns a new 16-character password, fires the event with reset=True; users may not reset."""
    h, log, site, bob, _other = accounts
    new = h.call(h.admin, "auth_reset_password", None, "example.com")
    assert len(new) == 16 and new.isalnum()
    assert _logs_in(h, "siteadmin", "example.com", new)
    bobs = h.call(site, "auth_reset_password", "bob")
    assert _logs_in(h, "bob", "example.com", bobs) and not _logs_in(h, "bob", "example.com", "bob-password")
    resets = [(kw["target"].username, kw["reset"]) for name, kw, _ in log.events if name == "password_changed"]
    assert resets == [("siteadmin", True), ("bob", True)]
    with pytest.raises(Denied):
        h.call(bob, "auth_reset_password")


def test_reset_ends_the_sessions_of_the_target_only(accounts):
    """A reset locks a compromised account out: its sessions end, other accounts' do not."""
    h, _log, site, _bob, _other = accounts
    bobs = h.call(h.admin, "admin_hijack", "example.com", "bob")
    site_admins = h.call(h.admin, "admin_hijack", "example.com")
    h.call(site, "auth_reset_password", "bob")
    with pytest.raises(AuthenticationFailed):
        h.login(Credentials(session_id=bobs))
    assert h.login(Credentials(session_id=site_admins)).username == "siteadmin"


def test_api_keys_of_managed_accounts(accounts):
    """A site admin manages its users' keys; users only their own; events name owner and actor."""
    h, log, site, bob, _other = accounts
    key = h.call(site, "auth_create_api_key", "for bob", "bob")
    assert h.login_key(key) == bob
    assert [(k.key, k.comment) for k in h.call(bob, "auth_get_api_keys")] == [(key, "for bob")]
    with pytest.raises(Denied):
        h.call(bob, "auth_create_api_key", "", "siteadmin")
    with pytest.raises(InvalidArgument, match="name the domain"):
        h.call(h.admin, "auth_create_api_key", "", "bob")
    with pytest.raises(NotFound):  # the key is bob's, not the site admin's
        h.call(site, "auth_delete_api_key", key)
    h.call(site, "auth_delete_api_key", key, "bob")
    assert h.call(bob, "auth_get_api_keys") == []
    created = [kw for name, kw, _ in log.events if name == "api_key_created"]
    deleted = [kw for name, kw, _ in log.events if name == "api_key_deleted"]
    assert [(kw["owner"].username, kw["actor"].username, kw["comment"]) for kw in created] == [
        ("bob", "siteadmin", "for bob")]
    assert [(kw["owner"].username, kw["actor"].username) for kw in deleted] == [("bob", "siteadmin")]
    assert all(main for _name, _kw, main in log.events), "events fire on the reactor thread"


def test_ip_restrictions_are_stored_listed_and_removed(accounts):
    """Entries are normalised, listed per gate, refused when duplicate, removed exactly."""
    h, _log, site, _bob, _other = accounts
    assert h.call(site, "auth_get_ip_restrictions") == []
    h.call(site, "auth_restrict_ip", "192.0.2.7")
    h.call(site, "auth_restrict_ip", "2001:DB8::/32", "soap")
    h.call(site, "auth_restrict_ip", "198.51.100.0/24", "UI")
    with pytest.raises(Exists):
        h.call(site, "auth_restrict_ip", "192.0.2.7")
    listed = [(r.ip, r.gate) for r in h.call(site, "auth_get_ip_restrictions")]
    assert listed == [("192.0.2.7", None), ("2001:db8::/32", "SOAP"), ("198.51.100.0/24", "UI")]
    assert [r.gate for r in h.call(site, "auth_get_ip_restrictions", "soap")] == [None, "SOAP"]
    with pytest.raises(InvalidArgument, match="not an IP address"):
        h.call(site, "auth_restrict_ip", "192.0.2.300")
    with pytest.raises(InvalidArgument, match="unknown gate"):
        h.call(site, "auth_restrict_ip", "192.0.2.8", "FTP")
    with pytest.raises(NotFound):
        h.call(site, "auth_remove_ip_restriction", "198.51.100.0/24")  # that entry is for UI only
    h.call(site, "auth_remove_ip_restriction", "198.51.100.0/24", "ui")
    assert len(h.call(site, "auth_get_ip_restrictions")) == 2


def test_ip_restriction_limit(accounts):
    """[auth] ip_restriction_limit caps the entries with a message saying so."""
    h, _log, site, _bob, _other = accounts
    h.app.config.set("auth", "ip_restriction_limit", "2")
    h.call(site, "auth_restrict_ip", "192.0.2.1")
    h.call(site, "auth_restrict_ip", "192.0.2.2")
    with pytest.raises(InvalidArgument, match="at most 2 IP restrictions"):
        h.call(site, "auth_restrict_ip", "192.0.2.3")


def test_restriction_counter_follows_writes_and_is_recounted_at_the_limit(accounts):
    """The limit is checked against users.ip_restriction_count; rows deleted by hand (counter too
    high) are recounted before a refusal, so the account is not locked below its limit."""
    h, _log, site, _bob, _other = accounts
    storage = h.app.storage
    users, restrictions = storage.tables.users, storage.tables.ip_restrictions

    def counter():
        with storage.read() as conn:
            return conn.execute(sa.select(users.c.ip_restriction_count).where(users.c.id == site.user_id)).scalar()

    h.app.config.set("auth", "ip_restriction_limit", "3")
    for n in range(3):
        h.call(site, "auth_restrict_ip", f"192.0.2.{n}")
    assert counter() == 3
    with pytest.raises(InvalidArgument, match="at most 3"):
        h.call(site, "auth_restrict_ip", "192.0.2.9")
    h.call(site, "auth_remove_ip_restriction", "192.0.2.0")
    assert counter() == 2
    with storage.write() as conn:  # edited by hand: the counter is now one too high
        conn.execute(restrictions.delete().where(restrictions.c.network == "192.0.2.1"))
    h.call(site, "auth_restrict_ip", "192.0.2.5")
    h.call(site, "auth_restrict_ip", "192.0.2.6")
    assert counter() == 3
    with pytest.raises(InvalidArgument, match="at most 3"):
        h.call(site, "auth_restrict_ip", "192.0.2.7")


def test_new_restriction_applies_at_once(accounts):
    """restrict_ip invalidates the gatekeeper's cached entries: the next login from elsewhere is refused."""
    h, _log, site, _bob, _other = accounts
    key = h.call(site, "auth_create_api_key")

    def admit(address):
        return wait(h.app.admit(AuthRequest(Gate.SOAP, address, Credentials(api_key=key))))

    assert admit("203.0.113.9").identity == site
    h.call(site, "auth_restrict_ip", "192.0.2.0/24", "SOAP")
    with pytest.raises(AuthenticationFailed):
        admit("203.0.113.9")
    assert admit("192.0.2.44").identity == site
    h.call(site, "auth_remove_ip_restriction", "192.0.2.0/24", "SOAP")
    assert admit("203.0.113.9").identity == site


def test_restriction_writes_update_the_cached_entries_without_reading_them(accounts, monkeypatch):
    """restrict_ip and remove_ip_restriction change the cached entries: neither the checks nor
    the listing read the account's entries again (a write costs the same however many it has)."""
    h, _log, site, _bob, _other = accounts
    h.app.config.set("auth", "ip_restriction_cache_ttl", "600")
    key = h.call(site, "auth_create_api_key")
    h.call(site, "auth_restrict_ip", "192.0.2.0/24", "SOAP")
    admitted = wait(h.app.admit(AuthRequest(Gate.SOAP, "192.0.2.1", Credentials(api_key=key))))
    loads = []
    real = h.app.ip_restrictions.rows.load
    monkeypatch.setattr(h.app.ip_restrictions.rows, "load", lambda uid: loads.append(uid) or real(uid))
    for n in range(5):
        h.call(site, "auth_restrict_ip", f"198.51.100.{n}")
    h.call(site, "auth_remove_ip_restriction", "198.51.100.0")
    assert wait(h.app.admit(AuthRequest(Gate.SOAP, "198.51.100.4", Credentials(api_key=key)))).identity == site
    with pytest.raises(AuthenticationFailed):
        wait(h.app.admit(AuthRequest(Gate.SOAP, "198.51.100.0", Credentials(api_key=key))))
    assert [r.ip for r in h.call(admitted.identity, "auth_get_ip_restrictions")] == [
        "192.0.2.0/24", "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]
    assert loads == []


def test_login_history_limit_and_last_login(accounts):
    """History is newest first and honours limit; a bad limit is refused; key logins are recorded."""
    h, _log, _site, bob, _other = accounts
    assert h.call(bob, "auth_get_last_login") is None
    _logs_in(h, "bob", "example.com", "wrong-password")
    h.clock.advance(10)
    _logs_in(h, "bob", "example.com", "bob-password")
    h.clock.advance(10)
    h.login_key(h.call(bob, "auth_create_api_key"), address="192.0.2.99")
    history = h.call(bob, "auth_get_login_history")
    assert [(r.method, r.success) for r in history] == [("key", True), ("password", True), ("password", False)]
    assert [r.method for r in h.call(bob, "auth_get_login_history", 1)] == ["key"]
    assert h.call(bob, "auth_get_last_login").address == "192.0.2.99"
    with pytest.raises(InvalidArgument, match="at least 1"):
        h.call(bob, "auth_get_login_history", 0)


def test_logins_refused_by_ip_restrictions_are_recorded_as_failed(accounts):
    """A right password or key from an address the restrictions refuse is no successful login."""
    h, _log, _site, bob, _other = accounts
    key = h.call(bob, "auth_create_api_key")
    h.call(bob, "auth_restrict_ip", "192.0.2.0/24")
    for credentials in (Credentials(username="bob", site="example.com", password="bob-password"),
                        Credentials(api_key=key)):
        with pytest.raises(AuthenticationFailed):
            wait(h.app.admit(AuthRequest(Gate.SOAP, "203.0.113.9", credentials)))
        h.clock.advance(1)
    assert [(r.method, r.success) for r in h.call(bob, "auth_get_login_history")] == [
        ("key", False), ("password", False)]
    assert h.call(bob, "auth_get_last_login") is None


def test_password_logins_are_recorded_after_the_answer(accounts):
    """A known account's login writes nothing while the client waits (an unknown one writes nothing either)."""
    h, _log, _site, bob, _other = accounts
    history = h.app.storage.tables.login_history
    _logs_in(h, "bob", "example.com", "wrong-password")
    with h.app.storage.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(history)).scalar() == 0
    assert [(r.method, r.success) for r in h.call(bob, "auth_get_login_history")] == [("password", False)]


def test_queued_logins_of_a_deleted_account_never_reach_the_next_one(accounts):
    """SQLite gives a deleted account's id to the next one; the old account's queued logins are dropped."""
    h, _log, site, _bob, _other = accounts
    eve = h.add_user(site, "eve")
    _logs_in(h, "eve", "example.com", "wrong-password")
    h.call(site, "user_delete", "eve")
    dave = h.add_user(site, "dave")
    assert dave.user_id == eve.user_id  # the reuse this test is about
    assert h.call(dave, "auth_get_login_history") == []
