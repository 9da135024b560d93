"""``apiserver init``: the server's own administrative user on this host's MariaDB and PostgreSQL.

When ``[databases] mysql_admin_url`` (or ``pgsql_admin_url``) is empty and the local server lets
its superuser in without a password (MariaDB's ``root`` over its socket or on 127.0.0.1,
PostgreSQL's ``postgres`` on 127.0.0.1 or its socket, as a fresh Debian install does for root),
init makes a user of the server's own, ``apiserver_<8 hex>`` (named after the state folder, so
two servers on one host never share one), with a password of 30 characters from a-zA-Z0-9 and
the rights :mod:`apiserver.host.databases` needs (MariaDB: every right with GRANT OPTION;
PostgreSQL: a superuser, which alone may make databases owned by other roles and end their
connections), checks that it connects, and writes its URL into the config file in use (a
secret: the file is made owner-only).  The password is kept nowhere else.

A key already set is left as it is, so a second init changes nothing; a server that is not
there or will not let the superuser in is reported and skipped.  Running init again after the
URL was removed gives the same user a new password.  Blocking.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.parse
from typing import Callable, Iterator, Optional

from apiserver.host.databases import MARIADB_HOSTS, MariaDbAdmin, PostgresAdmin, new_password

#: The length of the password of the server's own database user (seed, "UI storage").
ADMIN_PASSWORD_LENGTH = 30
MARIADB_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock")
POSTGRES_SOCKET_DIRS = ("/var/run/postgresql", "/tmp")


def admin_user_name(state_dir: str) -> str:
    """``apiserver_<8 hex>``: the server's database user, one per state folder."""
    digest = hashlib.sha256(os.path.realpath(state_dir).encode("utf-8")).hexdigest()[:8]
    return f"apiserver_{digest}"


def _mariadb_as_root(host: str, port: int) -> Iterator:
    """Ways (each blocking when called) to reach MariaDB as root without a password: its socket, then TCP."""
    import pymysql

    for socket in MARIADB_SOCKETS:
        if os.path.exists(socket):
            yield lambda s=socket: pymysql.connect(unix_socket=s, user="root", autocommit=True, connect_timeout=5)
    yield lambda: pymysql.connect(host=host, port=port, user="root", password="", autocommit=True, connect_timeout=5)


def _postgres_as_superuser(host: str, port: int) -> Iterator:
    """Ways to reach PostgreSQL as ``postgres`` without a password: TCP, then its socket."""
    import psycopg

    yield lambda: psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True,
                                  connect_timeout=5)
    for folder in POSTGRES_SOCKET_DIRS:
        if os.path.exists(os.path.join(folder, f".s.PGSQL.{port}")):
            yield lambda f=folder: psycopg.connect(host=f, port=port, user="postgres", dbname="postgres",
                                                   autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def _first_connection(ways: Iterator) -> Iterator:
    """Blocking.  The first of ``ways`` that connects (None when none does); closed afterwards."""
    conn = None
    for connect in ways:
        try:
            conn = connect()
            break
        except Exception:  # refused, not running, wrong authentication: the next way
            continue
    try:
        yield conn
    finally:
        if conn is not None:
            conn.close()


def make_mariadb_admin(name: str, host: str = "127.0.0.1", port: int = 3306) -> Optional[str]:
    """Blocking.  The user ``name`` (every right, with GRANT OPTION) with a new password; its URL, or None
    when MariaDB does not let root in here."""
    password = new_password(ADMIN_PASSWORD_LENGTH)
    with _first_connection(_mariadb_as_root(host, port)) as conn:
        if conn is None:
            return None
        with conn.cursor() as cursor:
            for each in MARIADB_HOSTS:
                account = f"{conn.escape(name)}@{conn.escape(each)}"
                cursor.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY %s", (password,))
                cursor.execute(f"ALTER USER {account} IDENTIFIED BY %s", (password,))
                cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION")
    url = f"mysql://{name}:{urllib.parse.quote(password, safe='')}@{host}:{port}"
    MariaDbAdmin(url).user_exists(name)  # connects with the new password, or ServerError
    return url


def make_postgres_admin(name: str, host: str = "127.0.0.1", port: int = 5432) -> Optional[str]:
    """Blocking.  The superuser role ``name`` with a new password; its URL, or None when PostgreSQL does not
    let ``postgres`` in here."""
    from psycopg import sql

    password = new_password(ADMIN_PASSWORD_LENGTH)
    with _first_connection(_postgres_as_superuser(host, port)) as conn:
        if conn is None:
            return None
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(sql.SQL(verb + " ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)))
    url = f"postgresql://{name}:{urllib.parse.quote(password, safe='')}@{host}:{port}/postgres"
    PostgresAdmin(url).user_exists(name)
    return url


#: key of [databases] -> (label, maker)
MAKERS = {"mysql_admin_url": ("MariaDB", make_mariadb_admin), "pgsql_admin_url": ("PostgreSQL", make_postgres_admin)}


def provision(config, write: Callable[[str, str], None]) -> list:
    """Blocking.  For each empty ``[databases]`` admin URL: the server's own user made and its URL
    given to ``write(key, url)``; what was done, one line each (see the module docstring)."""
    lines = []
    name = admin_user_name(config.state_dir)
    for key, (label, make) in MAKERS.items():
        if config.get("databases", key):
            continue
        try:
            url = make(name)
            if url is not None:
                write(key, url)
        except ImportError as exc:
            lines.append(f"{label}: no client library ({exc.name}); [databases] {key} left empty")
            continue
        except Exception as exc:
            lines.append(f"{label}: could not make the user {name}: {exc}; [databases] {key} left empty")
            continue
        if url is None:
            lines.append(f"{label}: not reachable as its superuser on this host; [databases] {key} left empty "
                         "(set it with 'apiserver set databases {key} URL')".replace("{key}", key))
            continue
        lines.append(f"{label}: made the database user {name} (30-character password) and wrote [databases] {key}")
    return lines
