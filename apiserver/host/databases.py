"""The database servers' side of a site: its MariaDB user and its PostgreSQL role.

Two administrators, one per server, connected with the admin URL of ``[databases]``
(``mysql://root@127.0.0.1:3306``, ``postgresql://postgres@127.0.0.1:5432/postgres``):

* :class:`MariaDbAdmin`: the user ``'name'@'localhost'`` (and ``@'127.0.0.1'``, what a TCP
  client on this host is) with ``GRANT ALL ON `prefix\\_%`.*``: it may create, use and drop
  the databases whose names start with its prefix, and reaches no other;
* :class:`PostgresAdmin`: a ``LOGIN NOCREATEDB NOCREATEROLE`` role; the site's databases
  (:meth:`PostgresAdmin.create_database`, named with the prefix) are owned by it, and ``CONNECT``
  on them is taken from ``PUBLIC``, so other sites' roles cannot even connect.  A role cannot
  create databases itself (PostgreSQL has no per-prefix right), as in ApisCP, where databases
  are made by the panel.

The count behind ``dbasenum`` and the create after it are one step across every node using a
server: :meth:`MariaDbAdmin.site_lock` holds ``GET_LOCK('apiserver-dbasenum-<site>')``,
:meth:`PostgresAdmin.site_lock` ``pg_advisory_lock`` of the same name, on a connection of their
own (the server frees it when that connection ends, a crashed node included).

Locking (a suspended site) is ``ACCOUNT LOCK`` / ``NOLOGIN`` and the user's open connections
ended; deletion drops the site's databases, then the user.  Names are checked by the caller
(lower-case letters, digits, ``_``); they are still quoted as identifiers and literals here.

Everything here is blocking; the client libraries (PyMySQL, psycopg) are imported when first
used, so a server that never administers a database needs neither.
"""

from __future__ import annotations

import contextlib
import secrets
import string
import urllib.parse
from typing import Any, Callable, Iterator, Optional

from apiserver.errors import Exists, InvalidArgument, ServerError

#: Seconds a create waits for another create for the same site (any node) before it is refused:
#: the default of ``[databases] lock_timeout``.
SITE_LOCK_TIMEOUT = 10.0
#: The character set of a MariaDB database made without one (its collation: the server's default for it).
DEFAULT_CHARSET = "utf8mb4"
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 16
#: The hosts a MariaDB user is made for: the local socket and TCP on the loopback address.
MARIADB_HOSTS = ("localhost", "127.0.0.1")


def new_password(length: int = PASSWORD_LENGTH) -> str:
    """``length`` characters drawn uniformly from a-z, A-Z, 0-9 (62) by :mod:`secrets`."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def like_prefix(prefix: str) -> str:
    """``prefix`` as a LIKE pattern matching the names that start with it (``_`` and ``%`` escaped)."""
    return prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"


def exact_name(name: str) -> str:
    """A database name as a GRANT names it: ``_`` and ``%`` are patterns there, so escaped."""
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def parse_admin_url(url: str, scheme: str) -> dict:
    """``{host, port, user, password, database}`` of ``scheme://user[:password]@host[:port][/database]``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != scheme or not parts.hostname:
        raise ValueError(f"expected {scheme}://user[:password]@host[:port][/database], got {url!r}")
    return {"host": parts.hostname, "port": parts.port, "user": urllib.parse.unquote(parts.username or ""),
            "password": urllib.parse.unquote(parts.password or ""),
            "database": urllib.parse.unquote(parts.path.lstrip("/"))}


def site_lock_name(site_id: int) -> str:
    """The name of a site's lock on a database server."""
    return f"apiserver-dbasenum-{int(site_id)}"


def _lock_refused(kind: str, site_id: int, timeout: float) -> ServerError:
    return ServerError(f"another database is being made for this site (the {kind} lock "
                       f"{site_lock_name(site_id)!r} was not free within {timeout:g} s); try again")


@contextlib.contextmanager
def _cursor_on(connect: Callable[[], Any], client_error: type[Exception], server: str) -> Iterator:
    """A cursor on the connection ``connect()`` opens, the connection closed after; the client
    library's ``client_error`` while connecting is a ServerError: cannot reach the ``server``."""
    try:
        conn = connect()
    except client_error as exc:
        raise ServerError(f"cannot reach the {server}: {exc}") from None
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


class MariaDbAdmin:
    """Users of the MariaDB server at ``url`` (``mysql://root@127.0.0.1:3306``)."""

    kind = "MariaDB"

    def __init__(self, url: str):
        self.url = url
        self._target = parse_admin_url(url, "mysql")

    def _cursor(self) -> contextlib.AbstractContextManager:
        import pymysql  # the client library is needed only when a site has MariaDB

        t = self._target
        return _cursor_on(lambda: pymysql.connect(host=t["host"], port=t["port"] or 3306, user=t["user"] or "root",
                                                  password=t["password"], autocommit=True, connect_timeout=10,
                                                  charset="utf8mb4"),
                          pymysql.MySQLError, "MariaDB server of [databases] mysql_admin_url")

    @contextlib.contextmanager
    def site_lock(self, site_id: int, timeout: float = SITE_LOCK_TIMEOUT) -> Iterator[None]:
        """Held while the body runs: ``GET_LOCK('apiserver-dbasenum-<site>', timeout)`` on a
        connection of its own, released after; ServerError when another holder keeps it ``timeout`` s."""
        name = site_lock_name(site_id)
        with self._cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, %s)", (name, timeout))
            if cursor.fetchone()[0] != 1:  # 0: timed out; NULL: an error
                raise _lock_refused(self.kind, site_id, timeout)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a lost connection frees it too
                    cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))

    def charset_of(self, charset: Optional[str], collation: Optional[str]) -> tuple:
        """``(charset, collation or None)`` checked against the server's ``SHOW CHARACTER SET`` and
        ``SHOW COLLATION`` (a collation alone names its character set; neither: utf8mb4);
        InvalidArgument naming the unknown one or a collation of another character set."""
        if charset is None and collation is None:
            return DEFAULT_CHARSET, None
        with self._cursor() as cursor:
            if collation is not None:
                cursor.execute("SHOW COLLATION WHERE Collation = %s", (str(collation),))
                row = cursor.fetchone()
                if row is None:
                    raise InvalidArgument(f"collation: {collation!r} is no collation of this MariaDB server "
                                          "(SHOW COLLATION)")
                collation, of = row[0], row[1]
                if charset is not None and str(charset).lower() != of.lower():
                    raise InvalidArgument(f"collation: {collation!r} is a collation of {of!r}, not of "
                                          f"the charset {charset!r}")
                return of, collation
            cursor.execute("SHOW CHARACTER SET WHERE Charset = %s", (str(charset),))
            row = cursor.fetchone()
            if row is None:
                raise InvalidArgument(f"charset: {charset!r} is no character set of this MariaDB server "
                                      "(SHOW CHARACTER SET)")
            return row[0], None

    @staticmethod
    def _account(cursor, user: str, host: str) -> str:
        return f"{_literal(cursor, user)}@{_literal(cursor, host)}"

    def user_exists(self, user: str) -> bool:
        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM mysql.user WHERE User = %s", (user,))
            return cursor.fetchone() is not None

    def create_user(self, user: str, password: str, prefix: str, limited: bool = False) -> None:
        """The user ``user`` with ``password`` and every right on the databases named ``prefix*``
        (``limited``: only on those the server makes, :meth:`create_database`); Exists when a user
        of that name exists already (another site's, or left behind)."""
        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM mysql.user WHERE User = %s", (user,))
            if cursor.fetchone() is not None:
                raise Exists(f"mysql.dbaseadmin: a MariaDB user {user!r} exists already; name another")
            for host in MARIADB_HOSTS:
                cursor.execute(f"CREATE USER {self._account(cursor, user, host)} IDENTIFIED BY %s", (password,))
            self._grant(cursor, user, prefix, limited)

    def _grant(self, cursor, user: str, prefix: str, limited: bool) -> None:
        """Rights on ``prefix*``: the pattern (the user makes its own databases), or, ``limited``,
        each existing database by its exact name and nothing else (new ones only through
        :meth:`create_database`; a right left on a dropped one would let the user make it again
        past the limit)."""
        pattern = _quote_name(like_prefix(prefix))
        if limited:
            cursor.execute("SHOW DATABASES LIKE %s", (like_prefix(prefix),))
            names = [row[0] for row in cursor.fetchall()]
            keep = {exact_name(name) for name in names}
        for host in MARIADB_HOSTS:
            account = self._account(cursor, user, host)
            if not limited:
                cursor.execute(f"GRANT ALL PRIVILEGES ON {pattern}.* TO {account}")
                continue
            cursor.execute("SELECT Db FROM mysql.db WHERE User = %s AND Host = %s", (user, host))
            for (granted,) in cursor.fetchall():
                if granted not in keep:  # the pattern, or a database dropped since
                    cursor.execute(f"REVOKE ALL PRIVILEGES ON {_quote_name(granted)}.* FROM {account}")
            for name in names:
                cursor.execute(f"GRANT ALL PRIVILEGES ON {_quote_name(exact_name(name))}.* TO {account}")

    def limit(self, user: str, prefix: str, limited: bool) -> None:
        """Switch ``user``'s rights between the prefix pattern and each existing database (``limited``)."""
        with self._cursor() as cursor:
            self._grant(cursor, user, prefix, limited)

    def create_database(self, user: str, name: str, charset: str = DEFAULT_CHARSET,
                        collation: Optional[str] = None) -> None:
        """The database ``name`` in ``charset`` (``collation``: its default when None), checked
        by :meth:`charset_of`, with every right on it for ``user``; Exists when it exists."""
        collate = f" COLLATE {_quote_name(collation)}" if collation else ""
        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            if cursor.fetchone() is not None:
                raise Exists(f"a MariaDB database {name!r} exists already")
            cursor.execute(f"CREATE DATABASE {_quote_name(name)} CHARACTER SET {_quote_name(charset)}{collate}")
            for host in MARIADB_HOSTS:
                cursor.execute(f"GRANT ALL PRIVILEGES ON {_quote_name(exact_name(name))}.* TO "
                               f"{self._account(cursor, user, host)}")

    def set_password(self, user: str, password: str) -> None:
        with self._cursor() as cursor:
            for host in MARIADB_HOSTS:
                cursor.execute(f"ALTER USER IF EXISTS {self._account(cursor, user, host)} IDENTIFIED BY %s",
                               (password,))

    def lock(self, user: str) -> None:
        """Refuse the user's logins and end its connections."""
        with self._cursor() as cursor:
            for host in MARIADB_HOSTS:
                cursor.execute(f"ALTER USER IF EXISTS {self._account(cursor, user, host)} ACCOUNT LOCK")
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
            for (thread,) in cursor.fetchall():
                with contextlib.suppress(Exception):  # ended meanwhile
                    cursor.execute(f"KILL CONNECTION {int(thread)}")

    def unlock(self, user: str) -> None:
        with self._cursor() as cursor:
            for host in MARIADB_HOSTS:
                cursor.execute(f"ALTER USER IF EXISTS {self._account(cursor, user, host)} ACCOUNT UNLOCK")

    def is_locked(self, user: str) -> bool:
        with self._cursor() as cursor:
            cursor.execute("SELECT JSON_VALUE(Priv, '$.account_locked') FROM mysql.global_priv WHERE User = %s",
                           (user,))
            rows = cursor.fetchall()
        return bool(rows) and all(str(row[0]).lower() in ("true", "1") for row in rows)

    def databases(self, prefix: str) -> list:
        with self._cursor() as cursor:
            cursor.execute("SHOW DATABASES LIKE %s", (like_prefix(prefix),))
            return [row[0] for row in cursor.fetchall()]

    def drop(self, user: Optional[str], prefix: Optional[str]) -> None:
        """Drop the databases named ``prefix*`` (when given), then the user (when given)."""
        with self._cursor() as cursor:
            if user:
                cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
                for (thread,) in cursor.fetchall():
                    with contextlib.suppress(Exception):
                        cursor.execute(f"KILL CONNECTION {int(thread)}")
            if prefix:
                cursor.execute("SHOW DATABASES LIKE %s", (like_prefix(prefix),))
                for (name,) in cursor.fetchall():
                    cursor.execute(f"DROP DATABASE IF EXISTS {_quote_name(name)}")
            if user:
                for host in MARIADB_HOSTS:
                    cursor.execute(f"DROP USER IF EXISTS {self._account(cursor, user, host)}")


class PostgresAdmin:
    """Roles and databases of the PostgreSQL server at ``url``
    (``postgresql://postgres@127.0.0.1:5432/postgres``)."""

    kind = "PostgreSQL"

    def __init__(self, url: str):
        self.url = url
        self._target = parse_admin_url(url, "postgresql")

    def _cursor(self, database: Optional[str] = None) -> contextlib.AbstractContextManager:
        import psycopg  # the client library is needed only when a site has PostgreSQL

        t = self._target
        return _cursor_on(lambda: psycopg.connect(host=t["host"], port=t["port"] or 5432, user=t["user"] or "postgres",
                                                  password=t["password"] or None,
                                                  dbname=database or t["database"] or "postgres",
                                                  autocommit=True, connect_timeout=10),
                          psycopg.Error, "PostgreSQL server of [databases] pgsql_admin_url")

    @contextlib.contextmanager
    def site_lock(self, site_id: int, timeout: float = SITE_LOCK_TIMEOUT) -> Iterator[None]:
        """Held while the body runs: ``pg_advisory_lock`` keyed by ``apiserver-dbasenum-<site>`` on a
        connection of its own (``lock_timeout`` bounds the wait), unlocked after; ServerError when
        another holder keeps it ``timeout`` s."""
        import psycopg

        key = "SELECT {}(hashtextextended(%s, 0))"
        name = site_lock_name(site_id)
        with self._cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, round(timeout * 1000))}ms",))
            try:
                cursor.execute(key.format("pg_advisory_lock"), (name,))
            except psycopg.errors.LockNotAvailable:
                raise _lock_refused(self.kind, site_id, timeout) from None
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a lost connection frees it too
                    cursor.execute(key.format("pg_advisory_unlock"), (name,))

    def user_exists(self, user: str) -> bool:
        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            return cursor.fetchone() is not None

    def create_user(self, user: str, password: str, prefix: str, limited: bool = False) -> None:
        """The role ``user`` (login with ``password``, no right to create databases or roles,
        ``limited`` or not); Exists when a role of that name exists already."""
        from psycopg import sql

        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            if cursor.fetchone() is not None:
                raise Exists(f"pgsql.dbaseadmin: a PostgreSQL role {user!r} exists already; name another")
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password)))

    def limit(self, user: str, prefix: str, limited: bool) -> None:
        """Nothing to switch: a role never creates databases itself (:meth:`create_database` does)."""

    def set_password(self, user: str, password: str) -> None:
        from psycopg import sql

        with self._cursor() as cursor:
            cursor.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))

    def create_database(self, user: str, name: str) -> None:
        """The database ``name`` owned by ``user``, which alone (and superusers) may connect;
        Exists when it exists."""
        from psycopg import sql

        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is not None:
                raise Exists(f"a PostgreSQL database {name!r} exists already")
            cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(user)))
            cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        with self._cursor(name) as cursor:
            cursor.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")

    def _end_connections(self, cursor, user: str) -> None:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (user,))

    def lock(self, user: str) -> None:
        from psycopg import sql

        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            if cursor.fetchone() is None:
                return
            cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(user)))
            self._end_connections(cursor, user)

    def unlock(self, user: str) -> None:
        from psycopg import sql

        with self._cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            if cursor.fetchone() is not None:
                cursor.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(user)))

    def is_locked(self, user: str) -> bool:
        with self._cursor() as cursor:
            cursor.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (user,))
            row = cursor.fetchone()
        return row is not None and not row[0]

    def databases(self, prefix: str, user: Optional[str] = None) -> list:
        """The databases named ``prefix*`` (none for an empty prefix) or owned by ``user``."""
        with self._cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database d LEFT JOIN pg_roles r ON r.oid = d.datdba "
                           "WHERE NOT datistemplate AND (datname LIKE %s OR r.rolname = %s) ORDER BY datname",
                           (like_prefix(prefix) if prefix else "", user or ""))
            return [row[0] for row in cursor.fetchall()]

    def drop(self, user: Optional[str], prefix: Optional[str]) -> None:
        """Drop the databases named ``prefix*`` or owned by ``user``, then the role."""
        from psycopg import sql

        with self._cursor() as cursor:
            if user:
                self._end_connections(cursor, user)
            for name in self.databases(prefix or "", user):
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            if user:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
                if cursor.fetchone() is not None:
                    cursor.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)))
                    cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))


def _literal(cursor, text: str) -> str:
    """A MariaDB string literal (the connection's escaping)."""
    return cursor.connection.escape(text)


def _quote_name(name: str) -> str:
    """A MariaDB identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"
