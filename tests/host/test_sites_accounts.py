"""Sites as real system accounts through the API: admin_add_site, user_add, passwords, suspension, deletion."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat

import pytest
import sqlalchemy as sa

from apiserver.host import crypt, synthetic, tools
from apiserver.lifecycle import services, system_accounts
from tests.accounts.support import Harness, wait
from tests.host.support import account_prefix, getent, requires_root, runuser  # noqa: F401 - fixture
from tests.sites.support import as_web, sites_root  # noqa: F401 - fixture

pytestmark = requires_root


@pytest.fixture
def make_harness(tmp_path, sites_root, account_prefix):  # noqa: F811 - fixtures
    """``make_harness(**sections)``: an application with real system accounts (a unique prefix) and
    a sites_root others can reach; its sites are deleted and it is closed after the test."""
    made = []

    def make(**sections):
        made.append(Harness(tmp_path / "state", {"web": {"system_accounts": "true", "account_prefix": account_prefix,
                                                         "sites_root": sites_root}, **sections}))
        return made[-1]

    yield make
    for h in made:
        try:
            for domain in wait(h.app.run_blocking(lambda: [r.domain for r in _rows(h, "sites")])):
                h.call(h.admin, "admin_delete_site", domain, {"force": True})
        finally:
            h.close()


@pytest.fixture
def harness(make_harness):
    """An application with real system accounts and the plans shipped with apiserver."""
    return make_harness()


def _rows(h, table):
    with h.app.storage.read() as conn:
        return list(conn.execute(sa.select(getattr(h.app.storage.tables, table))))


def _shadow(h, site_id):
    return synthetic.read_shadow(h.app.site_accounts.layout(site_id).etc)


def test_sites_and_users_get_accounts_recorded_in_host_accounts(harness, account_prefix):
    """admin_add_site and user_add make system users (own uids, the site's gid), recorded in the database."""
    a = harness.add_site("a.example", "alice")
    b = harness.add_site("b.example", "zed")
    bob = harness.add_user(a, "bob")
    accounts = harness.app.site_accounts
    alice_id, bob_id, zed_id = (accounts.identity(a.site_id, "alice"), accounts.identity(a.site_id, "bob"),
                                accounts.identity(b.site_id, "zed"))
    assert alice_id.gid == bob_id.gid != zed_id.gid
    assert len({alice_id.uid, bob_id.uid, zed_id.uid}) == 3
    assert getent("passwd", f"{account_prefix}-bob.{a.site_id}").split(":")[2] == str(bob_id.uid)
    rows = {(r.user_id, r.host_name, r.uid, r.gid) for r in _rows(harness, "host_accounts")}
    assert (bob.user_id, bob_id.host_name, bob_id.uid, bob_id.gid) in rows and len(rows) == 3
    names = [entry[0] for entry in synthetic.read_passwd(accounts.layout(a.site_id).etc)]
    assert "alice" in names and "bob" in names and "zed" not in names


def test_password_change_and_reset_reach_the_synthetic_shadow(harness):
    """After auth_change_password the site's shadow verifies the new password, not the old; a reset replaces it."""
    a = harness.add_site("a.example", "alice", password="site-password")
    assert crypt.verify("site-password", _shadow(harness, a.site_id)["alice"])
    harness.call(a, "auth_change_password", "Second-pass-456")
    stored = _shadow(harness, a.site_id)["alice"]
    assert crypt.verify("Second-pass-456", stored) and not crypt.verify("site-password", stored)
    bob = harness.add_user(a, "bob", password="user-password")
    generated = harness.call(a, "auth_reset_password", "bob")
    stored = _shadow(harness, a.site_id)["bob"]
    assert crypt.verify(generated, stored) and not crypt.verify("user-password", stored)
    info = os.stat(os.path.join(harness.app.site_accounts.layout(a.site_id).etc, "shadow"))
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    assert bob.site_id == a.site_id


def test_suspension_locks_and_activation_unlocks_with_the_ssh_shell(harness):
    """Suspending locks every system user of the site; ssh.enabled gives a shell that activation restores."""
    a = harness.add_site("a.example", "alice")
    harness.add_user(a, "bob")
    harness.call(harness.admin, "admin_edit_site", "a.example", {"ssh.enabled": 1})
    alice = harness.app.site_accounts.identity(a.site_id, "alice")
    assert pwd.getpwnam(alice.host_name).pw_shell == tools.LOGIN_SHELL
    harness.call(harness.admin, "admin_deactivate_site", "a.example")
    shadow = _shadow(harness, a.site_id)
    assert shadow["alice"].startswith("!") and pwd.getpwnam(alice.host_name).pw_shell == tools.NOLOGIN
    harness.call(harness.admin, "admin_activate_site", "a.example")
    assert not _shadow(harness, a.site_id)["alice"].startswith("!")
    assert pwd.getpwnam(alice.host_name).pw_shell == tools.LOGIN_SHELL


def test_a_user_added_after_ssh_is_enabled_gets_the_login_shell(harness):
    """A user added once ssh.enabled is on gets a shell; on a site without it, nologin."""
    a = harness.add_site("a.example", "alice")
    harness.call(harness.admin, "admin_edit_site", "a.example", {"ssh.enabled": 1})
    carol = harness.add_user(a, "carol")
    assert pwd.getpwnam(harness.app.site_accounts.identity(a.site_id, "carol").host_name).pw_shell == tools.LOGIN_SHELL
    b = harness.add_site("b.example", "zed")
    dave = harness.add_user(b, "dave")
    assert pwd.getpwnam(harness.app.site_accounts.identity(b.site_id, "dave").host_name).pw_shell == tools.NOLOGIN
    assert carol.site_id == a.site_id and dave.site_id == b.site_id


def test_a_plans_ssh_enabled_gives_new_users_the_login_shell(make_harness, tmp_path):
    """A site whose plan (the default one, not named on creation) sets ssh.enabled = 1 gives a user added
    later a shell; a site of a plan without it, nologin; suspended, nologin."""
    plans = tmp_path / "plans"
    shutil.copytree(os.path.join(os.path.dirname(services.__file__), "plan_files"), plans)
    (plans / "shell.ini").write_text("[ssh]\nenabled = 1\n", encoding="utf-8")
    harness = make_harness(plans={"dir": str(plans), "default": "shell"})
    a = harness.add_site("a.example", "alice")
    carol = harness.add_user(a, "carol")
    accounts = harness.app.site_accounts
    assert pwd.getpwnam(accounts.identity(a.site_id, "carol").host_name).pw_shell == tools.LOGIN_SHELL
    harness.call(harness.admin, "admin_add_site", "b.example", "zed", {"siteinfo.plan": "basic"})
    b = wait(harness.app.run_blocking(harness.app.directory.identity_for, "b.example", None))
    dave = harness.add_user(b, "dave")
    assert pwd.getpwnam(accounts.identity(b.site_id, "dave").host_name).pw_shell == tools.NOLOGIN
    harness.call(harness.admin, "admin_deactivate_site", "a.example")
    with harness.app.storage.read() as conn:
        assert system_accounts.new_user_shell(conn, a.site_id) == tools.NOLOGIN
    assert carol.site_id == a.site_id and dave.site_id == b.site_id


def test_site_users_cannot_reach_another_site_or_the_servers_state(harness):
    """runuser as site A's user: B's document root, A's shadow and the server's database are all refused."""
    a = harness.add_site("a.example", "alice")
    b = harness.add_site("b.example", "zed")
    accounts = harness.app.site_accounts
    alice = accounts.identity(a.site_id, "alice")
    b_doc = accounts.layout(b.site_id).document_root
    assert runuser(alice.host_name, "ls", b_doc).returncode != 0
    assert runuser(alice.host_name, "touch", os.path.join(b_doc, "x")).returncode != 0
    assert runuser(alice.host_name, "cat", os.path.join(accounts.layout(a.site_id).etc, "shadow")).returncode != 0
    state = harness.config.state_dir
    for name in os.listdir(state):
        assert runuser(alice.host_name, "cat", os.path.join(state, name)).returncode != 0
    assert as_web('ls "$1"', state).returncode != 0


def test_deleting_users_and_sites_leaves_nothing_on_the_host(harness, account_prefix):
    """user_delete removes the user's account and home; admin_delete_site removes accounts, group, files, links."""
    a = harness.add_site("a.example", "alice")
    harness.add_user(a, "bob")
    accounts = harness.app.site_accounts
    bob_home = accounts.layout(a.site_id).home_of("bob")
    harness.call(a, "user_delete", "bob")
    assert not os.path.exists(bob_home)
    with pytest.raises(KeyError):
        pwd.getpwnam(accounts.host_user_name(a.site_id, "bob"))
    assert "bob" not in _shadow(harness, a.site_id)
    harness.call(harness.admin, "admin_delete_site", "a.example")
    assert not [e for e in pwd.getpwall() if e.pw_name.startswith(account_prefix + "-")]
    assert not [e for e in grp.getgrall() if e.gr_name.startswith(account_prefix + "-")]
    assert os.listdir(accounts.sites_root) == []
    assert _rows(harness, "host_accounts") == []
