"""apiserver migrate-sites: sites of the shared-owner layout become site<N>/fst with their own accounts."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess

import pytest
import sqlalchemy as sa

from apiserver.host import synthetic
from apiserver.host.state import protect_state
from apiserver.sites.home import lookup_owner
from tests.accounts.support import Harness
from tests.conftest import APISERVER, ROOT
from tests.host.support import account_prefix, requires_root, runuser  # noqa: F401 - fixture
from tests.ops_support import env
from tests.sites.support import sites_root  # noqa: F401 - fixture

pytestmark = requires_root

FILES = {"var/www/html/index.php": "<?php echo 1;", "var/www/html/wp-config.php": "<?php // secret",
         "var/www/html/deep/a/b/c.txt": "deep", "var/www/html/with space.txt": "space",
         "var/www/.htpasswd": "u:$2y$05$abc"}


def _legacy_site(h, domain, admin, files):
    """A site as the shared-owner code left it: <sites_root>/<domain>/ owned by 'apiserver', no links."""
    identity = h.add_site(domain, admin)
    accounts = h.app.site_accounts
    layout = accounts.layout(identity.site_id)
    accounts.remove_site(identity.site_id, domain)  # no accounts in shared mode: only the links and folder go
    owner = lookup_owner("apiserver")
    place = layout.link_path(domain)
    for rel, text in files.items():
        path = os.path.join(place, rel)
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    os.symlink("/etc/hostname", os.path.join(place, "var/www/html/link-out"))
    for folder, dirs, names in os.walk(place):
        for name in [folder] + [os.path.join(folder, n) for n in dirs + names]:
            os.chown(name, owner.uid, owner.gid, follow_symlinks=False)
    return identity


def _snapshot(top):
    found = {}
    for folder, dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, top)
            found[rel] = os.readlink(path) if os.path.islink(path) else open(path, "rb").read()
    return found


@pytest.fixture
def state(tmp_path, sites_root):  # noqa: F811 - fixture
    """Two sites of the old layout in a state whose sites_root others can reach."""
    sections = {"web": {"sites_root": sites_root}}
    h = Harness(tmp_path / "state", sections)
    try:
        a = _legacy_site(h, "a.example", "alice", FILES)
        b = _legacy_site(h, "b.example", "zed", {"var/www/html/b.txt": "b"})
    finally:
        h.close()
    return tmp_path / "state", sites_root, a, b


def test_upgrade_moves_every_file_gives_accounts_and_is_idempotent(state, account_prefix):
    """Every file survives the move to site<N>/fst with the admin as owner; a second run changes nothing."""
    state_dir, root, a, b = state
    before = _snapshot(os.path.join(root, "a.example"))
    h = Harness(state_dir, {"web": {"sites_root": root, "system_accounts": "true", "account_prefix": account_prefix}})
    try:
        changes = h.app.prepare_sites()
        assert any("moved" in c and "a.example" in c for c in changes)
        assert any("gave" in c and "alice" in c for c in changes)
        assert h.app.prepare_sites() == []
        accounts = h.app.site_accounts
        layout = accounts.layout(a.site_id)
        assert os.readlink(os.path.join(root, "a.example")) == f"site{a.site_id}"
        assert os.readlink(os.path.join(root, f"admin{a.site_id}")) == f"site{a.site_id}"
        after = _snapshot(layout.fst)
        assert {k: v for k, v in after.items() if not k.startswith("etc/")} == before
        alice = accounts.identity(a.site_id, "alice")
        for rel in FILES:
            info = os.lstat(os.path.join(layout.fst, rel))
            assert (info.st_uid, info.st_gid) == (alice.uid, alice.gid)
        assert os.lstat(os.path.join(layout.fst, "var/www/html/link-out")).st_uid == alice.uid
        assert os.stat("/etc/hostname").st_uid == 0  # the link's target was never touched
        assert [e[0] for e in synthetic.read_passwd(layout.etc)][-1] == "alice"
        assert runuser(alice.host_name, "cat", os.path.join(layout.document_root, "wp-config.php")).returncode == 0
        zed = accounts.identity(b.site_id, "zed")
        assert runuser(zed.host_name, "cat", os.path.join(layout.document_root, "index.php")).returncode != 0
        with h.app.storage.read() as conn:
            rows = conn.execute(sa.select(h.app.storage.tables.host_accounts)).all()
        assert {r.host_name for r in rows} == {alice.host_name, zed.host_name}
        for domain in ("a.example", "b.example"):
            h.call(h.admin, "admin_delete_site", domain)
        assert not [g for g in grp.getgrall() if g.gr_name.startswith(account_prefix)]
        assert not [p for p in pwd.getpwall() if p.pw_name.startswith(account_prefix)]
    finally:
        h.close()


def test_migrate_sites_command_reports_then_changes_nothing(state, account_prefix, tmp_path):
    """`apiserver migrate-sites` prints what it changed, then 'nothing changed' on a second run."""
    state_dir, root, a, _b = state
    config = tmp_path / "config.ini"
    config.write_text(f"[core]\nstate_dir = {state_dir}\n[auth]\npbkdf2_iterations = 1000\n[mail]\nenabled = false\n"
                      f"[web]\nsites_root = {root}\nsystem_accounts = true\naccount_prefix = {account_prefix}\n")
    run = [*APISERVER, "--config", str(config), "migrate-sites"]
    first = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=120)
    assert first.returncode == 0, first.stderr
    assert "a.example" in first.stdout and "moved" in first.stdout
    second = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=120)
    assert second.returncode == 0 and "nothing changed" in second.stdout, second.stdout + second.stderr
    for site in (a.site_id, _b.site_id):  # the accounts go with the sites' folders (fixture removes the rest)
        shutil.rmtree(os.path.join(root, f"site{site}"))


def test_state_is_private_whatever_the_umask(tmp_path):
    """Files the server left group- or world-readable in state_dir are made owner-only; the way to sites stays 0711."""
    state_dir = tmp_path / "state"
    (state_dir / "sites").mkdir(parents=True)
    (state_dir / "apiserver.log").write_text("log")
    os.chmod(state_dir / "apiserver.log", 0o644)
    (state_dir / "scopes").mkdir()
    os.chmod(state_dir / "scopes", 0o755)
    changed = protect_state(str(state_dir), str(state_dir / "sites"), sites_pass=True)
    assert str(state_dir / "apiserver.log") in changed
    assert stat.S_IMODE(os.stat(state_dir / "apiserver.log").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state_dir / "scopes").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(state_dir / "sites").st_mode) == 0o711
    assert protect_state(str(state_dir), str(state_dir / "sites"), sites_pass=True) == []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    protect_state(str(state_dir), str(elsewhere), sites_pass=True)
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
