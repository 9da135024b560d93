"""Remembered DAV passwords: keyed by an HMAC, bounded, ended by time, by a password change or reset
and by deleting the account; only gate DAV uses them (a real application on SQLite, a Clock)."""

from __future__ import annotations

import pytest
from twisted.internet import task

from apiserver.accounts import passwords
from apiserver.accounts.verified import RECHECK_AFTER, VerifiedPasswords
from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import AuthenticationFailed
from apiserver.module import Role
from tests.accounts.support import harness, wait  # noqa: F401 - harness is a fixture

BOB = Identity(Role.USER, user_id=7, username="bob", site_id=1, site="example.com")


def test_entries_expire_are_bounded_and_hold_no_password():
    """An entry lives ttl seconds; the oldest go past max_entries; the password is not kept in clear."""
    clock = task.Clock()
    remembered = VerifiedPasswords(clock, lambda: 60, max_entries=3)
    remembered.remember("DAV", "example.com", "bob", "secret-pw", BOB, "$hash")
    assert remembered.lookup("DAV", "Example.COM.", "bob", "secret-pw") == (BOB, "$hash", False)
    clock.advance(RECHECK_AFTER)
    assert remembered.lookup("DAV", "example.com", "bob", "secret-pw") == (BOB, "$hash", True)
    remembered.checked(("DAV", "example.com", "bob", "secret-pw"))
    assert remembered.lookup("DAV", "example.com", "bob", "secret-pw")[2] is False
    assert remembered.lookup("DAV", "example.com", "bob", "other") is None
    assert "secret-pw" not in repr(remembered._entries)
    clock.advance(61 - RECHECK_AFTER)
    assert remembered.lookup("DAV", "example.com", "bob", "secret-pw") is None
    for n in range(5):
        remembered.remember("DAV", "example.com", f"u{n}", "pw", BOB, "$h")
    assert len(remembered) == 3 and remembered.lookup("DAV", "example.com", "u0", "pw") is None
    remembered.forget_user(BOB.user_id)
    assert len(remembered) == 0


def test_ttl_zero_remembers_nothing():
    """[dav] verified_password_ttl = 0 hashes every request."""
    remembered = VerifiedPasswords(task.Clock(), lambda: 0)
    remembered.remember("DAV", "example.com", "bob", "pw", BOB, "$h")
    assert remembered.lookup("DAV", "example.com", "bob", "pw") is None


@pytest.fixture
def counted(harness, monkeypatch):
    """The harness with a site and its user, and a count of password verifications."""
    calls = []
    real = passwords.verify_password

    def verify(password, stored):
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(passwords, "verify_password", verify)
    site = harness.add_site("example.com", "siteadmin", password="site-password")
    harness.add_user(site, "bob", "user-password")
    calls.clear()
    return harness, site, calls


def login(harness, password="user-password", gate=Gate.DAV, user="bob"):
    return harness.login(Credentials(username=user, site="example.com", password=password), gate=gate)


def test_dav_password_hashed_once_while_remembered(counted):
    """Repeated DAV logins with the right password verify it once; a wrong one is always hashed."""
    harness, _, calls = counted
    assert [login(harness).username for _ in range(3)] == ["bob"] * 3
    assert calls == ["user-password"]
    with pytest.raises(AuthenticationFailed):
        login(harness, "wrong")
    with pytest.raises(AuthenticationFailed):
        login(harness, "wrong")
    assert calls.count("wrong") >= 2


def test_other_gates_hash_every_time(counted):
    """Gate UI (a session follows the login) does not use remembered passwords."""
    harness, _, calls = counted
    login(harness, gate=Gate.UI)
    login(harness, gate=Gate.UI)
    assert calls.count("user-password") == 2


def test_change_reset_and_deletion_end_the_remembered_password(counted):
    """set_password, reset and deleting the user make the old password fail at once."""
    harness, site, calls = counted
    login(harness)
    bob = wait(harness.app.run_blocking(harness.app.directory.identity_for, "example.com", "bob"))
    harness.call(site, "auth_change_password", "changed-password", "bob")
    with pytest.raises(AuthenticationFailed):
        login(harness)
    assert login(harness, "changed-password").user_id == bob.user_id
    generated = harness.call(site, "auth_reset_password", "bob")
    with pytest.raises(AuthenticationFailed):
        login(harness, "changed-password")
    assert login(harness, generated).user_id == bob.user_id
    harness.call(site, "user_delete", "bob")
    with pytest.raises(AuthenticationFailed):
        login(harness, generated)


def test_hash_changed_elsewhere_is_not_trusted_after_the_recheck(counted):
    """A password changed on another node (the row only) ends the remembered one within RECHECK_AFTER seconds."""
    harness, _, calls = counted
    login(harness)
    import sqlalchemy as sa

    from apiserver.storage import schema

    new_hash = passwords.hash_password("other-node-password", 1000)
    with harness.app.storage.write() as conn:
        conn.execute(sa.update(schema.users).where(schema.users.c.username == "bob").values(password_hash=new_hash))
    assert login(harness).username == "bob"  # within RECHECK_AFTER of the verification
    harness.clock.advance(RECHECK_AFTER)
    with pytest.raises(AuthenticationFailed):
        login(harness)
    assert login(harness, "other-node-password").username == "bob"


def test_parallel_logins_with_the_same_password_hash_once(counted):
    """A client's parallel connections (same credentials at once) cost one verification; wrong ones each pay."""
    from twisted.internet import defer

    harness, _, calls = counted
    accounts = harness.app.accounts
    same = Credentials(username="bob", site="example.com", password="user-password")
    results = wait(defer.gatherResults([accounts.authenticate(same, Gate.DAV, "192.0.2.1") for _ in range(6)]))
    assert [r.username for r in results] == ["bob"] * 6
    assert calls == ["user-password"]
    wrong = Credentials(username="bob", site="example.com", password="wrong-one")
    outcomes = wait(defer.DeferredList([accounts.authenticate(wrong, Gate.DAV, "192.0.2.1") for _ in range(3)],
                                       consumeErrors=True))
    assert [ok for ok, _ in outcomes] == [False] * 3
    assert calls.count("wrong-one") == 3


def test_a_change_during_the_hash_keeps_the_verified_password_out(counted, monkeypatch):
    """A password change that lands while a DAV login hashes (its forget comes between the row read
    and the remember) leaves nothing remembered: the next login hashes again."""
    harness, _, calls = counted
    verified = harness.app.accounts.verified_passwords
    bob = wait(harness.app.run_blocking(harness.app.directory.identity_for, "example.com", "bob"))
    verify = passwords.verify_password

    def verify_while_changed(password, stored):
        verified.forget_user(bob.user_id)  # what set_password does on this node after its commit
        return verify(password, stored)

    monkeypatch.setattr(passwords, "verify_password", verify_while_changed)
    assert login(harness).user_id == bob.user_id
    monkeypatch.setattr(passwords, "verify_password", verify)
    login(harness)
    assert len(calls) == 2 and len(verified) == 1


def test_forget_users_drops_every_named_account_in_one_pass():
    """forget_users drops the entries of all the accounts named and keeps the others."""
    remembered = VerifiedPasswords(task.Clock(), lambda: 60)
    carol = Identity(Role.USER, user_id=8, username="carol", site_id=1, site="example.com")
    dave = Identity(Role.USER, user_id=9, username="dave", site_id=1, site="example.com")
    for who in (BOB, carol, dave):
        remembered.remember("DAV", "example.com", who.username, "pw", who, "$h")
    remembered.forget_users([BOB.user_id, dave.user_id])
    forgotten = [remembered.lookup("DAV", "example.com", u, "pw") is None for u in ("bob", "carol", "dave")]
    assert forgotten == [True, False, True]
