"""``.my.cnf`` and ``.pgpass`` in the administrator's own home (``fst/home/<admin>``), owned by its
system account: the real ``mysql`` and ``psql`` read them from ``$HOME`` run as that account, and
``apiserver migrate-sites`` moves the files an earlier version left in ``fst/`` without loss."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess

import pytest

from apiserver.host.databases import MariaDbAdmin, PostgresAdmin
from apiserver.testing import wait
from tests.accounts.support import Harness
from tests.host.support import account_prefix, requires_root  # noqa: F401 - fixture
from tests.sites.support import sites_root  # noqa: F401 - fixture

MYSQL_URL = "mysql://root@127.0.0.1:3306"
PGSQL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = [requires_root, pytest.mark.skipif(not shutil.which("runuser"), reason="needs runuser")]


@pytest.fixture
def accounts_harness(tmp_path, sites_root, account_prefix):  # noqa: F811 - fixtures
    """An application with real system accounts administering both database servers; the
    sites, then every database user and database named with this test's tag, are removed
    afterwards even when the test failed (the prefix fixture removes the accounts)."""
    tag = f"t{secrets.token_hex(3)}"
    h = Harness(tmp_path / "state", {"web": {"system_accounts": "true", "account_prefix": account_prefix,
                                             "sites_root": sites_root},
                                     "databases": {"mysql_admin_url": MYSQL_URL, "pgsql_admin_url": PGSQL_URL}})
    try:
        yield h, tag
    finally:
        try:
            for domain in list(h.call(h.admin, "admin_get_domains").values()):
                h.call(h.admin, "admin_delete_site", domain, {"force": True})
        finally:
            h.close()
            for admin in (MariaDbAdmin(MYSQL_URL), PostgresAdmin(PGSQL_URL)):
                for suffix in ("a", "b"):
                    admin.drop(f"{tag}{suffix}", f"{tag}{suffix}_")


def as_account(identity, *argv: str) -> subprocess.CompletedProcess:
    """``argv`` run as the site user's system account with ``HOME`` its home (as a login would)."""
    return subprocess.run(["runuser", "-u", identity.host_name, "--", "env", f"HOME={identity.home}",
                           "PGCONNECT_TIMEOUT=10", *argv], capture_output=True, text=True, timeout=60)


def check_private(path: str, identity) -> bytes:
    """The file's bytes, checked to be a regular file, 0600, owned by ``identity``."""
    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    assert (info.st_uid, info.st_gid) == (identity.uid, identity.gid)
    with open(path, "rb") as fh:
        return fh.read()


def test_files_are_in_the_admin_home_and_read_by_the_clients(accounts_harness):
    """The admin's own 0600 files in its home; mysql and psql connect with them; another admin reads nothing."""
    h, tag = accounts_harness
    both = {"mysql.enabled": 1, "pgsql.enabled": 1}
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", both)
    h.call(h.admin, "admin_add_site", "b.example", f"{tag}b", {})
    accounts = h.app.site_accounts
    admin_a = wait(h.app.run_blocking(accounts.identity, 1, f"{tag}a"))
    admin_b = wait(h.app.run_blocking(accounts.identity, 2, f"{tag}b"))
    assert admin_a.home == os.path.join(accounts.layout(1).fst, "home", f"{tag}a")
    for name in (".my.cnf", ".pgpass"):
        check_private(os.path.join(admin_a.home, name), admin_a)
        assert not os.path.lexists(os.path.join(accounts.layout(1).fst, name))

    mine = as_account(admin_a, "mysql", "--batch", "--skip-column-names", "-h", "127.0.0.1",
                      "-e", "SELECT CURRENT_USER()")
    assert mine.returncode == 0 and mine.stdout.strip() == f"{tag}a@127.0.0.1", mine.stderr
    PostgresAdmin(PGSQL_URL).create_database(f"{tag}a", f"{tag}a_app")
    pg = as_account(admin_a, "psql", "-X", "-w", "-h", "127.0.0.1", "-U", f"{tag}a", "-d", f"{tag}a_app",
                    "-tAc", "SELECT current_user")
    assert pg.returncode == 0 and pg.stdout.strip() == f"{tag}a", pg.stderr
    other = as_account(admin_b, "cat", os.path.join(admin_a.home, ".my.cnf"))
    assert other.returncode != 0 and "denied" in other.stderr


def test_migrate_sites_moves_old_files_into_the_admin_home(accounts_harness):
    """Files left in fst/ move intact into the admin's home, 0600, once; a newer one already there is kept."""
    h, tag = accounts_harness
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", {"mysql.enabled": 1, "pgsql.enabled": 1})
    accounts = h.app.site_accounts
    admin_a = wait(h.app.run_blocking(accounts.identity, 1, f"{tag}a"))
    fst = accounts.layout(1).fst
    before = {}
    for name in (".my.cnf", ".pgpass"):  # where the earlier version left them, as the site's files
        before[name] = check_private(os.path.join(admin_a.home, name), admin_a)
        os.rename(os.path.join(admin_a.home, name), os.path.join(fst, name))
        os.chmod(os.path.join(fst, name), 0o640)
    with open(os.path.join(admin_a.home, ".pgpass"), "wb") as fh:  # newer: written after the upgrade
        fh.write(b"*:*:*:newer:kept\n")
    os.chown(os.path.join(admin_a.home, ".pgpass"), admin_a.uid, admin_a.gid)
    os.chmod(os.path.join(admin_a.home, ".pgpass"), 0o600)

    changes = h.app.prepare_sites()
    assert [c for c in changes if "moved" in c] == [f"a.example (site1): moved .my.cnf into the home of {tag}a"]
    assert check_private(os.path.join(admin_a.home, ".my.cnf"), admin_a) == before[".my.cnf"]
    assert not os.path.lexists(os.path.join(fst, ".my.cnf"))
    assert check_private(os.path.join(admin_a.home, ".pgpass"), admin_a) == b"*:*:*:newer:kept\n"
    with open(os.path.join(fst, ".pgpass"), "rb") as fh:
        assert fh.read() == before[".pgpass"]
    mine = as_account(admin_a, "mysql", "--batch", "--skip-column-names", "-h", "127.0.0.1", "-e", "SELECT 1")
    assert mine.returncode == 0 and mine.stdout.strip() == "1", mine.stderr
    assert h.app.prepare_sites() == []


def test_migrate_sites_leaves_a_hard_link_planted_in_fst_alone(accounts_harness, tmp_path):
    """A .my.cnf in fst/ that is a hard link to another file (root's) is neither given to the admin nor moved."""
    h, tag = accounts_harness
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", {"mysql.enabled": 1})
    accounts = h.app.site_accounts
    admin_a = wait(h.app.run_blocking(accounts.identity, 1, f"{tag}a"))
    fst = accounts.layout(1).fst
    os.unlink(os.path.join(admin_a.home, ".my.cnf"))  # the home has none: the migration would move one
    target = tmp_path / "roots-secret"
    target.write_text("root's\n", encoding="utf-8")
    os.chmod(target, 0o600)
    os.link(target, os.path.join(fst, ".my.cnf"))

    assert [c for c in h.app.prepare_sites() if "moved" in c] == []
    info = os.stat(target)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert not os.path.lexists(os.path.join(admin_a.home, ".my.cnf"))
    os.unlink(os.path.join(fst, ".my.cnf"))
