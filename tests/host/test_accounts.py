"""SiteAccounts with real system accounts: groupadd/useradd, the synthetic root, permissions, removal."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess

import pytest

from apiserver.errors import Exists
from apiserver.host import crypt, synthetic, tools
from apiserver.host.accounts import SiteAccounts
from tests.host.support import account_prefix, getent, requires_root, runuser  # noqa: F401 - fixture
from tests.sites.support import WEB_USER, as_web, sites_root  # noqa: F401 - fixture

pytestmark = requires_root


@pytest.fixture
def accounts(sites_root, account_prefix):  # noqa: F811 - fixtures
    """SiteAccounts with real accounts under a reachable sites_root; sites removed afterwards."""
    os.makedirs(sites_root, 0o711, exist_ok=True)
    made = SiteAccounts(sites_root, WEB_USER, account_prefix, True, "apiserver")
    made.created = []
    yield made
    for site_id, domain in made.created:
        made.remove_site(site_id, domain)


def new_site(accounts, site_id, domain, admin="owner", password="first-pass-1"):
    identity = accounts.create_site(site_id, domain, admin, password=password)
    accounts.created.append((site_id, domain))
    return identity


def pam_accepts(user: str, password: str) -> bool:
    """Whether PAM's own helper (unix_chkpwd, run as the user) accepts ``password`` for ``user``."""
    helper = next(p for p in ("/usr/sbin/unix_chkpwd", "/sbin/unix_chkpwd") if os.path.exists(p))
    done = subprocess.run(["runuser", "-u", user, "--", helper, user, "nonull"], input=password.encode() + b"\0",
                          capture_output=True, timeout=30)
    return done.returncode == 0


def test_users_have_unique_uids_and_the_sites_gid(accounts, account_prefix):
    """getent and id show each site user with its own uid and its site's group; two sites, two groups."""
    a_admin = new_site(accounts, 1, "a.example")
    b_admin = new_site(accounts, 2, "b.example")
    bob = accounts.add_user(1, "bob", password="bob-pass-123")
    assert getent("group", f"{account_prefix}-admin1").startswith(f"{account_prefix}-admin1:x:{a_admin.gid}:")
    line = getent("passwd", f"{account_prefix}-bob.1").split(":")
    assert int(line[2]) == bob.uid and int(line[3]) == a_admin.gid
    assert line[5] == os.path.join(accounts.sites_root, "site1", "fst", "home", "bob")
    assert line[6] == tools.NOLOGIN
    assert len({a_admin.uid, b_admin.uid, bob.uid}) == 3 and a_admin.gid != b_admin.gid
    ids = subprocess.run(["id", f"{account_prefix}-bob.1"], capture_output=True, text=True).stdout
    assert f"gid={a_admin.gid}({account_prefix}-admin1)" in ids
    assert accounts.identity(1, "bob") == bob
    assert accounts.identity_for_uid(bob.uid) == bob
    assert accounts.identity_for_uid(0) is None and accounts.identity_for_uid(b_admin.uid).site_id == 2
    assert [m.username for m in accounts.identities_of(1)] == ["owner", "bob"]
    assert accounts.identities_of(1)[0].is_admin and not bob.is_admin


def test_synthetic_etc_lists_only_the_sites_users(accounts):
    """fst/etc/passwd has the system users and this site's users by plain name, never another site's."""
    new_site(accounts, 1, "a.example", admin="alice")
    new_site(accounts, 2, "b.example", admin="zed")
    accounts.add_user(1, "bob", password="bob-pass-123")
    etc = accounts.layout(1).etc
    names = [entry[0] for entry in synthetic.read_passwd(etc)]
    assert names[:2] == ["root", "nobody"] and "alice" in names and "bob" in names
    assert "zed" not in names and not any("." in n for n in names)
    with open(os.path.join(etc, "passwd")) as handle:
        assert ":/home/bob:" in handle.read()
    with open(os.path.join(etc, "group")) as handle:
        assert handle.read().splitlines()[-1].endswith(":alice,bob")
    info = os.stat(os.path.join(etc, "shadow"))
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    accounts.remove_user(1, "bob")
    assert "bob" not in [entry[0] for entry in synthetic.read_passwd(etc)]
    assert "bob" not in synthetic.read_shadow(etc)
    assert not os.path.exists(accounts.layout(1).home_of("bob"))
    with pytest.raises(KeyError):
        pwd.getpwnam(accounts.host_user_name(1, "bob"))


def test_shadow_follows_password_changes_and_pam_verifies_it(accounts):
    """The synthetic and host shadow verify the current password, not the old one, and PAM agrees."""
    owner = new_site(accounts, 1, "a.example", password="first-pass-1")
    etc = accounts.layout(1).etc
    assert synthetic.read_shadow(etc)["owner"].startswith("$y$")
    assert crypt.verify("first-pass-1", synthetic.read_shadow(etc)["owner"])
    assert pam_accepts(owner.host_name, "first-pass-1")
    accounts.set_password(1, "owner", password="second-pass-2")
    stored = synthetic.read_shadow(etc)["owner"]
    assert crypt.verify("second-pass-2", stored) and not crypt.verify("first-pass-1", stored)
    assert tools.shadow_entries([owner.host_name])[owner.host_name] == stored
    assert pam_accepts(owner.host_name, "second-pass-2") and not pam_accepts(owner.host_name, "first-pass-1")


def test_lock_and_unlock_a_site(accounts):
    """A locked site's users have '!' hashes and nologin; unlocking restores the hash and the given shell."""
    owner = new_site(accounts, 1, "a.example")
    accounts.lock_site(1)
    assert synthetic.read_shadow(accounts.layout(1).etc)["owner"].startswith("!")
    assert not pam_accepts(owner.host_name, "first-pass-1")
    accounts.set_password(1, "owner", password="changed-while-locked")
    assert not pam_accepts(owner.host_name, "changed-while-locked")
    accounts.unlock_site(1, tools.LOGIN_SHELL)
    assert pam_accepts(owner.host_name, "changed-while-locked")
    assert pwd.getpwnam(owner.host_name).pw_shell == tools.LOGIN_SHELL
    assert synthetic.read_passwd(accounts.layout(1).etc)[-1][3] == tools.LOGIN_SHELL


def test_kernel_keeps_sites_apart_and_the_web_server_to_the_document_root(accounts):
    """Site A's user cannot enter site B; the web server reads the document root only, writes nothing."""
    a = new_site(accounts, 1, "a.example")
    new_site(accounts, 2, "b.example")
    b_layout = accounts.layout(2)
    secret = os.path.join(b_layout.document_root, "wp-config.php")
    with open(secret, "w") as handle:
        handle.write("<?php define('DB_PASSWORD', 'b');")
    b_owner = accounts.identity(2, "owner")
    os.chown(secret, b_owner.uid, b_owner.gid)
    assert runuser(a.host_name, "cat", secret).returncode != 0
    assert runuser(a.host_name, "sh", "-c", f'echo x > "{b_layout.document_root}/x"').returncode != 0
    assert runuser(a.host_name, "ls", b_layout.site_dir).returncode != 0
    assert runuser("nobody", "ls", accounts.layout(1).site_dir).returncode != 0
    # its own site: yes
    own = os.path.join(accounts.layout(1).document_root, "index.php")
    assert runuser(a.host_name, "sh", "-c", f'echo hi > "{own}" && cat "{own}"').stdout == "hi\n"
    assert as_web('cat "$1"', secret).returncode == 0
    assert as_web('cat "$1"', own).stdout == "hi\n"
    assert as_web('ls "$1"', b_layout.site_dir).returncode != 0
    assert as_web('ls "$1"', b_layout.homes).returncode != 0
    assert as_web('cat "$1"', os.path.join(b_layout.etc, "shadow")).returncode != 0
    assert as_web('cat "$1"', os.path.join(b_layout.etc, "passwd")).returncode != 0
    assert as_web('echo x > "$1/w"', b_layout.document_root).returncode != 0
    assert as_web('echo x >> "$1"', secret).returncode != 0
    home = accounts.layout(1).home_of("owner")
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700 and os.stat(home).st_uid == a.uid


def test_links_name_the_site_as_apiscp_does(accounts):
    """<domain> and admin<N> are relative links to site<N>."""
    new_site(accounts, 7, "a.example")
    root = accounts.sites_root
    assert os.readlink(os.path.join(root, "a.example")) == "site7"
    assert os.readlink(os.path.join(root, "admin7")) == "site7"


def test_removing_a_site_leaves_nothing(accounts, account_prefix):
    """After remove_site no account, group, folder or link of the site is left; a second call is harmless."""
    new_site(accounts, 1, "a.example")
    accounts.add_user(1, "bob", password="bob-pass-123")
    accounts.remove_site(1, "a.example")
    accounts.remove_site(1, "a.example")
    assert not [e for e in pwd.getpwall() if e.pw_name.startswith(account_prefix)]
    assert not [e for e in grp.getgrall() if e.gr_name.startswith(account_prefix)]
    assert os.listdir(accounts.sites_root) == []


def test_a_failed_creation_undoes_itself(accounts, account_prefix):
    """When the domain's place is taken the group, user and folder just made are removed again."""
    os.mkdir(os.path.join(accounts.sites_root, "a.example"))
    with pytest.raises(Exists):
        accounts.create_site(1, "a.example", "owner", password="first-pass-1")
    assert not [e for e in grp.getgrall() if e.gr_name.startswith(account_prefix)]
    assert not [e for e in pwd.getpwall() if e.pw_name.startswith(account_prefix)]
    assert sorted(os.listdir(accounts.sites_root)) == ["a.example"]
