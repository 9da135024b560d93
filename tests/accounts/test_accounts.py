"""The accounts service: first-start state, password logins, legacy hash upgrade, identities."""

from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa

from apiserver.accounts import StateError, initialize_state, load_secret, passwords
from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import AuthenticationFailed, InvalidArgument, NotFound
from apiserver.hookspecs import hookimpl
from apiserver.module import Role
from tests.accounts.support import Harness, make_config, wait

LEGACY = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


def test_initialize_state_creates_everything_once(tmp_path):
    """init makes a 0700 directory, a 0600 secret, the schema and admin's key; a second run changes nothing."""
    config = make_config(tmp_path / "state")
    first = initialize_state(config)
    assert first.created and len(first.admin_key) == 64
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "secret").st_mode) == 0o600
    secret = load_secret(config)
    second = initialize_state(config)
    assert (second.created, second.admin_key) == (False, None)
    assert second.lines == [f"state exists in {tmp_path / 'state'}; nothing changed"]
    assert load_secret(config) == secret


def test_configured_secret_means_no_secret_file(tmp_path):
    """With [auth] secret set, init writes no secret file and keys derive from the configured one."""
    config = make_config(tmp_path / "state", {"auth": {"secret": "configured-secret-value"}})
    result = initialize_state(config)
    assert not (tmp_path / "state" / "secret").exists()
    assert load_secret(config) == b"configured-secret-value"
    h = Harness(tmp_path / "state", {"auth": {"secret": "configured-secret-value"}})
    try:
        assert h.login_key(result.admin_key).role is Role.ADMIN
    finally:
        h.close()


def test_init_refuses_a_new_secret_for_existing_accounts(tmp_path):
    """A lost secret file is not silently replaced: every stored key would stop working."""
    config = make_config(tmp_path / "state")
    initialize_state(config)
    os.unlink(tmp_path / "state" / "secret")
    with pytest.raises(StateError, match="restore the file"):
        initialize_state(config)
    with pytest.raises(StateError, match="apiserver init"):
        load_secret(config)


def test_password_login_and_history(harness):
    """A right password logs in, a wrong one fails with reason 'password'; both are in the history."""
    site = harness.add_site()
    ok = harness.login(Credentials(username="siteadmin", site="Example.COM", password="site-password"), gate=Gate.UI)
    assert ok == site
    with pytest.raises(AuthenticationFailed) as caught:
        harness.login(Credentials(username="siteadmin", site="example.com", password="wrong-password"))
    assert caught.value.reason == "password"
    history = harness.call(site, "auth_get_login_history")
    assert [(r.success, r.method, r.gate, r.address) for r in history[:2]] == [
        (False, "password", "SOAP", "192.0.2.1"), (True, "password", "UI", "192.0.2.1")]
    last = harness.call(site, "auth_get_last_login")
    assert (last.success, last.gate) == (True, "UI")


def test_unknown_account_costs_one_full_hash(harness, monkeypatch):
    """After start-up preparation an unknown user costs exactly one verification against a dummy
    hash of the configured strength, like a known one, and no extra hashing."""
    wait(harness.app.run_hashing(harness.app.accounts.prepare))
    checked, hashed = [], []
    real_verify, real_hash = passwords.verify_password, passwords.hash_password
    monkeypatch.setattr(passwords, "verify_password",
                        lambda pw, stored: checked.append(stored) or real_verify(pw, stored))
    monkeypatch.setattr(passwords, "hash_password", lambda pw, n: hashed.append(n) or real_hash(pw, n))
    for username in ("nobody", "admin"):  # admin exists but has no password
        with pytest.raises(AuthenticationFailed):
            harness.login(Credentials(username=username, password="whatever1"))
    assert len(checked) == 2 and all(h.startswith("$pbkdf2-sha512$1000$") for h in checked)
    assert checked[0] == checked[1] and hashed == []


def test_wrong_password_for_a_legacy_hash_costs_a_full_hash(harness, monkeypatch):
    """A cheap SHA512-crypt hash does not answer a wrong password faster than an unknown account."""
    site = harness.add_site()
    users = harness.app.storage.tables.users
    with harness.app.storage.write() as conn:
        conn.execute(users.update().where(users.c.id == site.user_id).values(password_hash=LEGACY))
    wait(harness.app.run_hashing(harness.app.accounts.prepare))
    checked = []
    real_verify = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password",
                        lambda pw, stored: checked.append(stored) or real_verify(pw, stored))
    with pytest.raises(AuthenticationFailed):
        harness.login(Credentials(username="siteadmin", site="example.com", password="Hello world?"))
    assert checked[0] == LEGACY and checked[1].startswith("$pbkdf2-sha512$1000$")


def test_legacy_hash_is_upgraded_on_successful_login(harness):
    """A seed SHA512-crypt hash logs in and is replaced by a PBKDF2 hash; a failed login changes nothing."""
    site = harness.add_site()
    users = harness.app.storage.tables.users

    def stored():
        with harness.app.storage.read() as conn:
            return conn.execute(sa.select(users.c.password_hash).where(users.c.id == site.user_id)).scalar()

    with harness.app.storage.write() as conn:
        conn.execute(users.update().where(users.c.id == site.user_id).values(password_hash=LEGACY))
    creds = dict(username="siteadmin", site="example.com")
    with pytest.raises(AuthenticationFailed):
        harness.login(Credentials(password="Hello world?", **creds))
    assert stored() == LEGACY
    harness.login(Credentials(password="Hello world!", **creds))
    assert stored().startswith("$pbkdf2-sha512$1000$")
    assert harness.login(Credentials(password="Hello world!", **creds)) == site


def test_weaker_pbkdf2_hash_is_upgraded_to_configured_iterations(harness):
    """Raising [auth] pbkdf2_iterations re-hashes a password at its next login."""
    site = harness.add_site()
    harness.app.config.set("auth", "pbkdf2_iterations", "2000")
    harness.login(Credentials(username="siteadmin", site="example.com", password="site-password"))
    users = harness.app.storage.tables.users
    with harness.app.storage.read() as conn:
        assert conn.execute(sa.select(users.c.password_hash).where(users.c.id == site.user_id)).scalar() \
            .startswith("$pbkdf2-sha512$2000$")


class PasswordPolicy:
    """A plugin vetoing passwords that contain the account's name, and a login source."""

    @hookimpl
    def apiserver_validate_password(self, identity, password):
        return "password must not contain the username" if identity.username in password else None

    @hookimpl
    def apiserver_authenticate(self, username, site, password, gate, address):
        if username == "sso" and password == "from-sso":
            return Identity(Role.USER, user_id=0, username="sso", site=site)
        if username == "blocked":
            return False
        return None


def test_password_rules_then_plugin_veto(tmp_path):
    """[auth] min_pw_length is checked first with a clear message, then apiserver_validate_password."""
    h = Harness(tmp_path / "state", {"auth": {"min_pw_length": "10"}}, plugins=[PasswordPolicy()])
    try:
        with pytest.raises(InvalidArgument, match="at least 10 characters, it has 5"):
            h.call(h.admin, "admin_add_site", "example.com", "siteadmin", {"auth.tpasswd": "short"})
        with pytest.raises(InvalidArgument, match="must not contain the username"):
            h.call(h.admin, "admin_add_site", "example.com", "siteadmin", {"auth.tpasswd": "siteadmin-1234"})
        assert h.call(h.admin, "admin_list_sites") == []
        identity = h.login(Credentials(username="sso", site="example.com", password="from-sso"))
        assert identity.username == "sso"
        with pytest.raises(AuthenticationFailed):
            h.login(Credentials(username="blocked", password="anything-at-all"))
    finally:
        h.close()


def test_identities_by_site_user_and_uid(harness):
    """identity_for finds the appliance, a site's administrator or a user; uid 0 is the appliance."""
    site = harness.add_site()
    bob = harness.add_user(site)
    directory = harness.app.directory
    assert wait(harness.app.run_blocking(directory.identity_for, None, None)).role is Role.ADMIN
    assert wait(harness.app.run_blocking(directory.identity_for, "EXAMPLE.com", None)) == site
    assert wait(harness.app.run_blocking(directory.identity_for, "example.com", "bob")) == bob
    assert wait(harness.app.run_blocking(directory.identity_for_uid, 0)).username == "admin"
    assert wait(harness.app.run_blocking(directory.identity_for_uid, 1000)) is None
    with pytest.raises(NotFound, match="no site 'example.org'"):
        wait(harness.app.run_blocking(directory.identity_for, "example.org", None))
    with pytest.raises(NotFound, match="no user 'eve'"):
        wait(harness.app.run_blocking(directory.identity_for, "example.com", "eve"))
    root = harness.login(Credentials(peer_uid=0), gate=Gate.CLI)
    assert root.role is Role.ADMIN
    with pytest.raises(AuthenticationFailed):
        harness.login(Credentials(peer_uid=1000), gate=Gate.CLI)
    with pytest.raises(AuthenticationFailed):
        harness.login(Credentials())


def test_init_names_an_unreachable_database(tmp_path):
    """A database that cannot be reached stops init with the URL (no password) and the reason."""
    config = make_config(tmp_path / "state", {"db": {"url": "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test"}})
    refused = r"cannot use the database at postgresql\+psycopg://postgres:\*\*\*@"
    with pytest.raises(StateError, match=refused) as caught:
        initialize_state(config)
    assert "hunter2" not in str(caught.value)
