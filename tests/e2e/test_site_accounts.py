"""Sites as real system accounts on a running server (XML-RPC): accounts, isolation, state, deletion."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile

import pytest

from apiserver.host import crypt, synthetic
from tests.conftest import start_server
from tests.e2e.clients.dav_clients import add_site, xmlrpc_call
from tests.host.support import account_prefix, getent, requires_root, runuser  # noqa: F401 - fixture
from tests.sites.support import as_web

pytestmark = requires_root


@pytest.fixture
def server(account_prefix):  # noqa: F811 - fixture
    """A server with system accounts whose state (and sites in it) lies in a 0711 folder of /tmp."""
    top = tempfile.mkdtemp(prefix="apiserver-accounts-", dir="/tmp")
    os.chmod(top, 0o711)
    running = start_server(top, {"web": {"system_accounts": "true", "account_prefix": account_prefix}})
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_accounts_isolation_state_and_deletion_over_the_api(server, account_prefix):
    """Two sites over XML-RPC: real accounts, each kept from the other and from the state; deletion leaves nothing."""
    sid_a = add_site(server, "a.example", "alice", "Alice-pass-123")
    add_site(server, "b.example", "zed", "Zed-pass-123")
    assert xmlrpc_call(server, "user_add", "bob", "Bob-pass-1234", sid=sid_a) is True
    site_a = int(xmlrpc_call(server, "admin_get_site_id", "a.example", key=server.admin_key).removeprefix("site"))
    site_b = int(xmlrpc_call(server, "admin_get_site_id", "b.example", key=server.admin_key).removeprefix("site"))
    alice, bob, zed = (f"{account_prefix}-alice.{site_a}", f"{account_prefix}-bob.{site_a}",
                       f"{account_prefix}-zed.{site_b}")
    entries = [pwd.getpwnam(n) for n in (alice, bob, zed)]
    assert len({e.pw_uid for e in entries}) == 3
    assert entries[0].pw_gid == entries[1].pw_gid == grp.getgrnam(f"{account_prefix}-admin{site_a}").gr_gid
    assert entries[2].pw_gid != entries[0].pw_gid and getent("passwd", bob).startswith(bob + ":")
    sites = os.path.join(server.state_dir, "sites")
    fst_a, fst_b = os.path.join(sites, "a.example", "fst"), os.path.join(sites, "b.example", "fst")
    assert [e[0] for e in synthetic.read_passwd(os.path.join(fst_a, "etc"))][-2:] == ["alice", "bob"]

    # the site's users reach their own site through the state folder, nothing else in it
    own = os.path.join(fst_a, "var/www/html/index.html")
    assert runuser(alice, "sh", "-c", f'echo hello > "{own}"').returncode == 0
    assert runuser(alice, "ls", os.path.join(fst_b, "var/www/html")).returncode != 0
    assert runuser(alice, "touch", os.path.join(fst_b, "var/www/html/x")).returncode != 0
    assert runuser(alice, "ls", server.state_dir).returncode != 0
    for name in os.listdir(server.state_dir):
        if name != "sites":
            path = os.path.join(server.state_dir, name)
            assert runuser(alice, "cat", path).returncode != 0, name
            assert as_web('cat "$1"', path).returncode != 0, name
    assert as_web('cat "$1"', own).stdout == "hello\n"
    assert as_web('ls "$1"', os.path.join(fst_a, "home")).returncode != 0
    assert as_web('cat "$1"', os.path.join(fst_a, "etc/shadow")).returncode != 0
    assert as_web('touch "$1"', os.path.join(fst_a, "var/www/html/w")).returncode != 0

    # a password change reaches the site's shadow
    assert xmlrpc_call(server, "auth_change_password", "Alice-new-456", sid=sid_a) is True
    stored = synthetic.read_shadow(os.path.join(fst_a, "etc"))["alice"]
    assert crypt.verify("Alice-new-456", stored) and not crypt.verify("Alice-pass-123", stored)

    for domain in ("a.example", "b.example"):
        assert xmlrpc_call(server, "admin_delete_site", domain, key=server.admin_key) is True
    assert not [e.pw_name for e in pwd.getpwall() if e.pw_name.startswith(account_prefix + "-")]
    assert not [e.gr_name for e in grp.getgrall() if e.gr_name.startswith(account_prefix + "-")]
    assert os.listdir(sites) == []
