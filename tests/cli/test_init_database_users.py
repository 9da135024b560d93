"""``apiserver init --database-users`` against this machine's real MariaDB and PostgreSQL: the
server's own user with a 30-character password, its URL in the owner-only config file, usable
for sites' database users, and a second run that changes nothing.  The users are dropped
afterwards, even when the test failed."""

from __future__ import annotations

import configparser
import os
import re
import stat
import subprocess
import urllib.parse

import pytest

from apiserver.host.database_admins import admin_user_name
from apiserver.host.databases import MariaDbAdmin, PostgresAdmin
from tests.conftest import APISERVER, ROOT
from tests.ops_support import env, make_config

ROOT_MYSQL = "mysql://root@127.0.0.1:3306"
ROOT_PGSQL = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="MariaDB lets root in over its socket as root only")


@pytest.fixture
def config_path(tmp_path):
    """A test config without [databases] URLs; the server's own users it gets are dropped afterwards."""
    path, _port = make_config(tmp_path)
    name = admin_user_name(str(tmp_path / "state"))
    try:
        yield path, name
    finally:
        MariaDbAdmin(ROOT_MYSQL).drop(name, None)
        PostgresAdmin(ROOT_PGSQL).drop(name, None)


def init(path: str) -> str:
    done = subprocess.run(APISERVER + ["--config", path, "init", "--database-users"], capture_output=True, text=True,
                          cwd=ROOT, env=env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def urls(path: str) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return dict(parser["databases"]) if parser.has_section("databases") else {}


def test_init_makes_the_servers_own_database_users_once(config_path):
    """Both URLs: the server's user, a 30-character password, a 0600 file, working; init again changes nothing."""
    path, name = config_path
    assert not MariaDbAdmin(ROOT_MYSQL).user_exists(name) and not PostgresAdmin(ROOT_PGSQL).user_exists(name)
    out = init(path)
    assert f"MariaDB: made the database user {name}" in out and f"PostgreSQL: made the database user {name}" in out
    written = urls(path)
    passwords = []
    for key, scheme in (("mysql_admin_url", "mysql"), ("pgsql_admin_url", "postgresql")):
        parts = urllib.parse.urlsplit(written[key])
        assert (parts.scheme, parts.username, parts.hostname) == (scheme, name, "127.0.0.1")
        assert re.fullmatch(r"[A-Za-z0-9]{30}", parts.password)
        passwords.append(parts.password)
    assert passwords[0] != passwords[1]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    site_user = f"{name[:12]}s"
    mysql, pgsql = MariaDbAdmin(written["mysql_admin_url"]), PostgresAdmin(written["pgsql_admin_url"])
    try:
        for admin in (mysql, pgsql):
            admin.create_user(site_user, "Site-Pass-123", f"{site_user}_")
            assert admin.user_exists(site_user)
        pgsql.create_database(site_user, f"{site_user}_app")
        mysql.lock(site_user)
        assert mysql.is_locked(site_user)
    finally:
        mysql.drop(site_user, f"{site_user}_")
        pgsql.drop(site_user, f"{site_user}_")
    assert not mysql.user_exists(site_user) and pgsql.databases(f"{site_user}_", site_user) == []

    again = init(path)
    assert "made the database user" not in again
    assert urls(path) == written


def test_init_without_the_flag_makes_no_database_user(config_path):
    """Plain init (what every test and a fresh checkout run) leaves the database servers alone."""
    path, name = config_path
    done = subprocess.run(APISERVER + ["--config", path, "init"], capture_output=True, text=True, cwd=ROOT,
                          env=env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mysql_admin_url" not in urls(path) or not urls(path)["mysql_admin_url"]
    assert not MariaDbAdmin(ROOT_MYSQL).user_exists(name) and not PostgresAdmin(ROOT_PGSQL).user_exists(name)
