"""The mysql and pgsql services on the real MariaDB and PostgreSQL servers of this machine: users
made with their files, the client tools run as the files' owner (``runuser``), other prefixes
out of reach, locking on suspension, new passwords, and everything dropped on deletion."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from typing import Optional

import pytest

from apiserver.errors import InvalidArgument
from apiserver.host.databases import MariaDbAdmin, PostgresAdmin
from tests.accounts.support import Harness

MYSQL_URL = "mysql://root@127.0.0.1:3306"
PGSQL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"),
                                reason="acts as the sites' owner through runuser (root)")


@contextlib.contextmanager
def database_harness(databases: Optional[dict] = None):
    """A real application administering both servers (``databases``: more ``[databases]`` keys),
    its state in a folder of its own that the sites' owner may pass (pytest's shared tmp root is
    re-chmodded by other pytest runs); every user and database whose name starts with this
    test's tag is dropped afterwards, even when the test failed."""
    tag = f"t{secrets.token_hex(3)}"
    base = tempfile.mkdtemp(prefix="apiserver-dbtest-")
    os.chmod(base, 0o711)
    h = Harness(os.path.join(base, "state"),
                {"databases": {"mysql_admin_url": MYSQL_URL, "pgsql_admin_url": PGSQL_URL, **(databases or {})}})
    mysql, pgsql = MariaDbAdmin(MYSQL_URL), PostgresAdmin(PGSQL_URL)
    try:
        yield h, tag, mysql, pgsql
    finally:
        h.close()
        for admin in (mysql, pgsql):
            for suffix in ("a", "b", "c"):
                admin.drop(f"{tag}{suffix}", f"{tag}{suffix}_")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def db_harness():
    """:func:`database_harness` with the default ``[databases]`` keys."""
    with database_harness() as made:
        yield made


def reachable(path: str, user: str) -> None:
    """Test set-up: ``user`` may pass through the folders above ``path`` (pytest's are 0700)."""
    uid = pwd.getpwnam(user).pw_uid
    while path != "/":
        info = os.stat(path)
        if not info.st_mode & 0o001 and info.st_uid != uid:
            subprocess.run(["setfacl", "-m", f"u:{user}:x", path], check=True)
        path = os.path.dirname(path)


def made_site(h, tag: str, opts: dict) -> tuple:
    """Test set-up: the site a.example of ``<tag>a`` with ``opts``; (its identity, the administrator's
    home, the files' owner, who may reach that home)."""
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", opts)
    home = h.app.site_accounts.identity(1, f"{tag}a").home
    owner = h.app.site_homes.get("a.example").owner.name
    reachable(home, owner)
    return h.app.directory.identity_for("a.example", None), home, owner


def as_owner(owner: str, *argv: str, env: dict = None) -> subprocess.CompletedProcess:
    """``argv`` run as ``owner`` (the site's files' owner) through ``runuser``."""
    prefix = ["runuser", "-u", owner, "--"]
    if env:
        prefix += ["env", *(f"{k}={v}" for k, v in env.items())]
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60)


def mysql(owner: str, home: str, sql: str) -> subprocess.CompletedProcess:
    return as_owner(owner, "mysql", f"--defaults-file={home}/.my.cnf", "--batch", "--skip-column-names", "-e", sql)


def psql(owner: str, home: str, user: str, database: str, sql: str) -> subprocess.CompletedProcess:
    return as_owner(owner, "psql", "-X", "-h", "127.0.0.1", "-U", user, "-d", database, "-tAc", sql,
                    env={"PGPASSFILE": f"{home}/.pgpass", "PGCONNECT_TIMEOUT": "10"})


def read_file(home: str, name: str, owner: str) -> str:
    """The content of a written file, checked to be 0600 and owned by ``owner``."""
    info = os.lstat(os.path.join(home, name))
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == pwd.getpwnam(owner).pw_uid
    with open(os.path.join(home, name), encoding="utf-8") as fh:
        return fh.read()


def test_database_users_are_made_isolated_locked_and_dropped(db_harness):
    """Two sites with both services: each administrator's files connect with the client tools,
    reach their own prefix only, are locked while suspended, follow a new password and are gone
    with their databases when the site is deleted."""
    h, tag, mysql_admin, pgsql_admin = db_harness
    both = {"mysql.enabled": 1, "pgsql.enabled": 1}
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", both)
    h.call(h.admin, "admin_add_site", "b.example", "owner",
           {**both, "mysql.dbaseadmin": f"{tag}b", "pgsql.dbaseadmin": f"{tag}b", "mysql.passwd": "Given-Pw-1"})
    home_a, home_b = [h.app.site_accounts.identity(n, admin).home for n, admin in ((1, f"{tag}a"), (2, "owner"))]
    owner = h.app.site_homes.get("a.example").owner.name
    reachable(home_a, owner)
    reachable(home_b, owner)
    user_a, user_b, prefix_a, prefix_b = f"{tag}a", f"{tag}b", f"{tag}a_", f"{tag}b_"

    cnf_a, cnf_b = read_file(home_a, ".my.cnf", owner), read_file(home_b, ".my.cnf", owner)
    password_a = re.search(r'password="([^"]*)"', cnf_a).group(1)
    assert re.fullmatch(r"[A-Za-z0-9]{16}", password_a) and f'user="{user_a}"' in cnf_a
    assert 'password="Given-Pw-1"' in cnf_b
    pgpass_a = read_file(home_a, ".pgpass", owner)
    assert re.fullmatch(rf"\*:\*:\*:{user_a}:[A-Za-z0-9]{{16}}\n", pgpass_a) and password_a not in pgpass_a
    collected = h.call(h.admin, "admin_collect", ["mysql.dbaseadmin", "mysql.dbaseprefix"])
    assert collected["site1"]["mysql"] == {"dbaseadmin": user_a, "dbaseprefix": prefix_a}

    # MariaDB: databases under the own prefix only
    made = mysql(owner, home_a, f"CREATE DATABASE {prefix_a}app; CREATE TABLE {prefix_a}app.t (n INT); "
                                f"INSERT INTO {prefix_a}app.t VALUES (7); SELECT n FROM {prefix_a}app.t")
    assert made.returncode == 0 and made.stdout.strip() == "7", made.stderr
    assert mysql(owner, home_b, f"CREATE DATABASE {prefix_b}shop").returncode == 0
    for sql in (f"CREATE DATABASE {prefix_b}mine", f"SELECT * FROM {prefix_b}shop.x", "CREATE DATABASE other_db"):
        refused = mysql(owner, home_a, sql)
        assert refused.returncode != 0 and "denied" in refused.stderr, (sql, refused.stderr)

    # PostgreSQL: the panel makes the databases (owned by the role); others cannot connect
    pgsql_admin.create_database(user_a, f"{prefix_a}app")
    pgsql_admin.create_database(user_b, f"{prefix_b}shop")
    ok = psql(owner, home_a, user_a, f"{prefix_a}app", "CREATE TABLE t (n int); INSERT INTO t VALUES (3); "
                                                       "SELECT n FROM t")
    assert ok.returncode == 0 and ok.stdout.strip().endswith("3"), ok.stderr
    other = psql(owner, home_a, user_a, f"{prefix_b}shop", "SELECT 1")
    assert other.returncode != 0 and "permission denied" in other.stderr
    assert psql(owner, home_a, user_a, f"{prefix_a}app", "CREATE DATABASE x").returncode != 0  # NOCREATEDB

    # suspension locks both users, activation unlocks them
    h.call(h.admin, "admin_deactivate_site", "a.example", {"reason": "unpaid"})
    assert mysql_admin.is_locked(user_a) and pgsql_admin.is_locked(user_a)
    locked = mysql(owner, home_a, "SELECT 1")
    assert locked.returncode != 0 and "locked" in locked.stderr.lower()
    assert psql(owner, home_a, user_a, f"{prefix_a}app", "SELECT 1").returncode != 0
    assert not mysql_admin.is_locked(user_b)
    h.call(h.admin, "admin_activate_site", "a.example")
    assert mysql(owner, home_a, "SELECT 1").returncode == 0
    assert psql(owner, home_a, user_a, f"{prefix_a}app", "SELECT 1").returncode == 0

    # a new password is set and written
    h.call(h.admin, "admin_edit_site", "a.example", {"mysql.passwd": "Changed-Pw-2"})
    assert 'password="Changed-Pw-2"' in read_file(home_a, ".my.cnf", owner)
    assert mysql(owner, home_a, "SELECT 1").returncode == 0

    # deletion drops the databases and the users
    h.call(h.admin, "admin_delete_site", "a.example")
    assert not mysql_admin.user_exists(user_a) and not pgsql_admin.user_exists(user_a)
    assert mysql_admin.databases(prefix_a) == [] and pgsql_admin.databases(prefix_a, user_a) == []
    assert mysql_admin.databases(prefix_b) == [f"{prefix_b}shop"] and pgsql_admin.user_exists(user_b)


def test_overlapping_prefixes_and_taken_names_are_refused(db_harness):
    """A prefix that starts another site's (or is started by one) and a user name another site
    holds are refused naming the parameter, and the site is not made."""
    h, tag, mysql_admin, _ = db_harness
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", {"mysql.enabled": 1})
    with pytest.raises(InvalidArgument, match="mysql.dbaseprefix"):
        h.call(h.admin, "admin_add_site", "c.example", f"{tag}c", {"mysql.enabled": 1,
                                                                   "mysql.dbaseprefix": f"{tag}a_more_"})
    with pytest.raises(InvalidArgument, match="mysql.dbaseadmin"):
        h.call(h.admin, "admin_add_site", "c.example", f"{tag}c", {"mysql.enabled": 1,
                                                                   "mysql.dbaseadmin": f"{tag}a"})
    assert h.call(h.admin, "admin_get_domains") == {1: "a.example"} or list(
        h.call(h.admin, "admin_get_domains").values()) == ["a.example"]
    assert not mysql_admin.user_exists(f"{tag}c")


def test_disabling_locks_and_enabling_again_unlocks(db_harness):
    """Turning mysql off keeps the user and its databases, locked; turning it on unlocks them."""
    h, tag, mysql_admin, _ = db_harness
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", {"mysql.enabled": 1})
    h.call(h.admin, "admin_edit_site", "a.example", {"mysql.enabled": 0})
    assert mysql_admin.is_locked(f"{tag}a")
    h.call(h.admin, "admin_edit_site", "a.example", {"mysql.enabled": 1})
    assert mysql_admin.user_exists(f"{tag}a") and not mysql_admin.is_locked(f"{tag}a")


def test_a_server_without_database_administration_refuses_the_service(harness):
    """With no [databases] URL, enabling mysql is refused with the key to set, and no site is made."""
    from apiserver.errors import ServerError

    with pytest.raises(ServerError, match=r"\[databases\] mysql_admin_url"):
        harness.call(harness.admin, "admin_add_site", "n.example", "nobodyhere", {"mysql.enabled": 1})
    assert harness.call(harness.admin, "admin_get_domains") == {}


def test_dbasenum_limits_the_databases_a_site_makes(db_harness):
    """dbasenum 2: two databases through the API, a third refused, none beside it; limit off and on switch rights."""
    from apiserver.errors import Denied, Exists

    h, tag, mysql_admin, pgsql_admin = db_harness
    site, home, owner = made_site(h, tag, {"mysql.enabled": 1, "pgsql.enabled": 1, "mysql.dbasenum": 2,
                                           "pgsql.dbasenum": 2})
    prefix = f"{tag}a_"
    for module in ("mysql", "pgsql"):
        assert h.call(site, f"{module}_create_database", "one") is True
        assert h.call(site, f"{module}_create_database", f"{prefix}two") is True
        with pytest.raises(Exists):
            h.call(site, f"{module}_create_database", "one")
        with pytest.raises(Denied, match=rf"database limit 2 reached \({module}.dbasenum\)"):
            h.call(site, f"{module}_create_database", "three")
        with pytest.raises(InvalidArgument, match="invalid database name"):
            h.call(site, f"{module}_create_database", "bad-name;")
        assert h.call(site, f"{module}_list_databases") == [f"{prefix}one", f"{prefix}two"]
    assert mysql_admin.databases(prefix) == [f"{prefix}one", f"{prefix}two"]
    assert pgsql_admin.databases(prefix, f"{tag}a") == [f"{prefix}one", f"{prefix}two"]

    # the MariaDB user uses its databases, but makes none beside the API (not even one whose name
    # matches `one` as a GRANT pattern would: `_` is escaped)
    used = mysql(owner, home, f"CREATE TABLE {prefix}one.t (n INT); INSERT INTO {prefix}one.t VALUES (5); "
                              f"SELECT n FROM {prefix}one.t")
    assert used.returncode == 0 and used.stdout.strip() == "5", used.stderr
    for name in (f"{prefix}three", f"{tag}aXone"):
        refused = mysql(owner, home, f"CREATE DATABASE {name}")
        assert refused.returncode != 0 and "denied" in refused.stderr, refused.stderr
    assert psql(owner, home, f"{tag}a", f"{prefix}one", "SELECT 1").returncode == 0

    # no limit: the prefix pattern again, the user makes its own; a limit again takes it away
    h.call(h.admin, "admin_edit_site", "a.example", {"mysql.dbasenum": None})
    assert mysql(owner, home, f"CREATE DATABASE {prefix}three").returncode == 0
    h.call(h.admin, "admin_edit_site", "a.example", {"mysql.dbasenum": 3})
    assert mysql(owner, home, f"CREATE DATABASE {prefix}four").returncode != 0
    assert mysql(owner, home, f"SELECT n FROM {prefix}one.t; USE {prefix}three").returncode == 0
    with pytest.raises(Denied, match="database limit 3 reached"):
        h.call(site, "mysql_create_database", "four")


def test_creating_databases_needs_the_service(db_harness):
    """A site without mysql enabled is refused mysql_create_database naming the service."""
    from apiserver.errors import Denied

    h, tag, mysql_admin, _ = db_harness
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", {})
    site = h.app.directory.identity_for("a.example", None)
    with pytest.raises(Denied, match=r"mysql.enabled"):
        h.call(site, "mysql_create_database", "one")
    assert mysql_admin.databases(f"{tag}a_") == []


def test_hostile_database_names_are_refused_and_nothing_is_made(db_harness):
    """Hostile names (quotes, backquotes, patterns, breaks, capitals, too long): InvalidArgument, nothing made."""
    h, tag, mysql_admin, pgsql_admin = db_harness
    h.call(h.admin, "admin_add_site", "a.example", f"{tag}a", {"mysql.enabled": 1, "pgsql.enabled": 1})
    site = h.app.directory.identity_for("a.example", None)
    prefix = f"{tag}a_"
    hostile = ("x`; DROP DATABASE mysql; --", "a'b", 'x"y; DROP DATABASE postgres', "pct%", "b\\s", "UPPER",
               "\u00fcn\u00ef", "a b", "", "one\n", "x" * 64, prefix, f"{prefix}%", f"{tag}b_x\x00")
    for module in ("mysql", "pgsql"):
        for name in hostile:
            with pytest.raises(InvalidArgument, match="invalid database name"):
                h.call(site, f"{module}_create_database", name)
        with pytest.raises(InvalidArgument, match="a value is required"):
            h.call(site, f"{module}_create_database", None)
        assert h.call(site, f"{module}_list_databases") == []
    assert mysql_admin.databases(prefix) == [] and pgsql_admin.databases(prefix, f"{tag}a") == []
    assert "mysql" in mysql_admin.databases("mysql") and pgsql_admin.databases("postgres") == ["postgres"]


def test_a_password_with_quotes_backslashes_and_colons_reaches_both_clients(db_harness):
    """A given passwd with every character .my.cnf and .pgpass escape is written so that mysql and psql log in."""
    h, tag, _, _ = db_harness
    password = 'Q"b\\c:d#e;f g\'h'
    site, home, owner = made_site(h, tag, {"mysql.enabled": 1, "pgsql.enabled": 1, "mysql.passwd": password,
                                           "pgsql.passwd": password})
    h.call(site, "pgsql_create_database", "app")
    done = mysql(owner, home, "SELECT CURRENT_USER()")
    assert done.returncode == 0 and done.stdout.startswith(f"{tag}a@"), done.stderr
    done = psql(owner, home, f"{tag}a", f"{tag}a_app", "SELECT current_user")
    assert done.returncode == 0 and done.stdout.strip() == f"{tag}a", done.stderr


def test_a_dropped_database_leaves_no_room_past_dbasenum(db_harness):
    """dbasenum 2: after a drop and an API create, the user's client cannot remake the dropped one (a third)."""
    h, tag, mysql_admin, _ = db_harness
    site, home, owner = made_site(h, tag, {"mysql.enabled": 1, "mysql.dbasenum": 2})
    prefix = f"{tag}a_"
    for name in ("one", "two"):
        assert h.call(site, "mysql_create_database", name) is True
    dropped = mysql(owner, home, f"DROP DATABASE {prefix}two")
    assert dropped.returncode == 0, dropped.stderr
    assert h.call(site, "mysql_create_database", "three") is True
    again = mysql(owner, home, f"CREATE DATABASE {prefix}two")
    assert again.returncode != 0 and "denied" in again.stderr, again
    assert mysql_admin.databases(prefix) == [f"{prefix}one", f"{prefix}three"]
    used = mysql(owner, home, f"CREATE TABLE {prefix}three.t (n INT); USE {prefix}one")
    assert used.returncode == 0, used.stderr
