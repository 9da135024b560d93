"""The ``mysql`` and ``pgsql`` appliers: a site's MariaDB user and PostgreSQL role.

When the service is enabled (on add, or by an edit) the site gets a database user named
``dbaseadmin`` (null: the site administrator's name) whose databases are named
``dbaseprefix`` (null: that name and ``_``), with the password ``passwd`` or 16 characters from
a-zA-Z0-9; both names are then stored with the site (``admin_collect`` shows them).  The
password is written to the administrator's own home (``fst/home/<admin>``, what the site sees
as ``/home/<admin>``): ``.my.cnf`` (``[client]`` user and password) and ``.pgpass``
(``*:*:*:user:password``), mode 0600, owned by the administrator's system account (the sites'
owner without system accounts), replaced atomically (a link planted in their place is replaced,
never followed).  It is never stored.

A prefix may not start another site's prefix, nor be started by one (``foo_`` and ``foo_bar_``
would share databases): such an add or edit is refused naming ``service.dbaseprefix``.  A user
name held by another site, or already on the server, is refused too.

``dbasenum`` (null: unlimited) is the most databases a site may have, as ApisCP's
``mysql_create_database``/``pgsql_create_database`` enforce it: those functions
(:meth:`DatabaseApplier.create_database`) count the site's databases and refuse one more, the
count and the create under the database server's own lock for the site (held across every node
using that server; see :mod:`apiserver.host.databases`).  A
PostgreSQL role never creates databases itself, so the count holds there; a MariaDB user with a
limit gets its rights per database instead of on the prefix pattern (it uses and drops its
databases but cannot make one beside the API, and its rights on a database it dropped are taken back
when the API makes the next); without a limit it keeps the pattern and makes
its own databases freely.  Changing ``dbasenum`` switches the rights.

Suspension locks the user and ends its connections; activation unlocks it; disabling the
service locks it (its databases stay) and enabling it again unlocks it; a new ``passwd`` is set
and written.  Deletion drops the site's databases and its user.  The database work is
:mod:`apiserver.host.databases`; everything here is blocking.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

from apiserver.errors import Denied, Exists, InvalidArgument, ServerError
from apiserver.host.databases import SITE_LOCK_TIMEOUT, MariaDbAdmin, PostgresAdmin, new_password
from apiserver.lifecycle import services, store
from apiserver.lifecycle.appliers import Applier
from apiserver.storage import schema

_P = services.param


def mysql_option_file(user: str, password: str) -> str:
    """``.my.cnf``: the client's user and password, quoted as MariaDB's option files read them."""
    return f'[client]\nuser="{_escape_option(user)}"\npassword="{_escape_option(password)}"\n'


def pgpass_file(user: str, password: str) -> str:
    """``.pgpass``: the password of ``user`` on every host, port and database (``:`` and ``\\`` escaped)."""
    return f"*:*:*:{_escape_pgpass(user)}:{_escape_pgpass(password)}\n"


def _escape_option(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _escape_pgpass(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def write_private_file(folder: str, name: str, content: str, uid: int, gid: int) -> None:
    """Blocking.  ``folder/name`` holding ``content``, mode 0600, owned by ``uid:gid``: written to a
    new file beside it and renamed over it (what was at that name, a link included, is replaced)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    temporary = f".{name}.apiserver-{os.getpid()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content.encode("utf-8"))
            os.fchown(fd, uid, gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(dir_fd)


class DatabaseApplier(Applier):
    """The applier of ``mysql`` or ``pgsql`` (``name``): ``admin`` is the server's administrator
    (:class:`apiserver.host.databases.MariaDbAdmin` or ``PostgresAdmin``; None when ``[databases]``
    names none: enabling the service is then refused); ``storage``: the sites' rows (other sites'
    names, and the names chosen); ``admin_of``: ``(site_id, user)`` ->
    :class:`apiserver.host.accounts.HostIdentity` (its ``home``, ``uid`` and ``gid``);
    ``lock_timeout``: seconds a create waits for another create for the same site."""

    def __init__(self, name: str, admin, storage, admin_of: Callable, lock_timeout: float = SITE_LOCK_TIMEOUT):
        if name not in ("mysql", "pgsql"):
            raise ValueError(f"no database service {name!r}")
        self.name = name
        self.admin = admin
        self._storage = storage
        self._admin_of = admin_of
        self.file_name = ".my.cnf" if name == "mysql" else ".pgpass"
        self.lock_timeout = lock_timeout

    # --- what the site's values say -------------------------------------------------------------
    def names(self, site) -> tuple:
        """``(user, prefix)`` of ``site``: the stored ones, else the defaults."""
        user = site.value(_P(self.name, "dbaseadmin")) or site.admin_user
        prefix = site.value(_P(self.name, "dbaseprefix")) or default_prefix(user)
        return user, prefix

    def _admin(self):
        if self.admin is None:
            key = "mysql_admin_url" if self.name == "mysql" else "pgsql_admin_url"
            raise ServerError(f"{self.name}.enabled: this server administers no {_label(self.name)} server "
                              f"([databases] {key} is empty)")
        return self.admin

    def _check_names(self, site, user: str, prefix: str) -> None:
        """InvalidArgument when another site holds ``user`` or a prefix overlapping ``prefix``."""
        with self._storage.read() as conn:
            others = store.load(conn, schema.sites.c.id != site.id, order_by_domain=False)
        for other in others:
            if other.value(_P(self.name, "dbaseadmin")) is None and not other.value(_P(self.name, "enabled")):
                continue  # never had the service
            other_user, other_prefix = self.names(other)
            if other_user == user:
                raise InvalidArgument(f"{self.name}.dbaseadmin: {user!r} is the database user of another site; "
                                      "name another")
            if other_prefix.startswith(prefix) or prefix.startswith(other_prefix):
                raise InvalidArgument(f"{self.name}.dbaseprefix: {prefix!r} overlaps the prefix {other_prefix!r} of "
                                      "another site; name another")

    def _remember(self, site, user: str, prefix: str) -> None:
        """Store the names used, so that they never change under the site."""
        with self._storage.write() as conn:
            found = store.load(conn, schema.sites.c.id == site.id)
            if not found:
                return
            values = found[0].values()
            values[_P(self.name, "dbaseadmin")] = user
            values[_P(self.name, "dbaseprefix")] = prefix
            store.update_site(conn, site.id, services=store.stored_json(values))

    def _write_file(self, site, user: str, password: str) -> None:
        owner = self._admin_of(site.id, site.admin_user)
        content = mysql_option_file(user, password) if self.name == "mysql" else pgpass_file(user, password)
        write_private_file(owner.home, self.file_name, content, owner.uid, owner.gid)

    # --- the lifecycle's calls ------------------------------------------------------------------
    def add(self, site, values: dict) -> None:
        if values.get(_P(self.name, "enabled")):
            self._create(site, values.get(_P(self.name, "passwd")))

    def _create(self, site, password: Optional[str]) -> None:
        admin = self._admin()
        user, prefix = self.names(site)
        self._check_names(site, user, prefix)
        password = password or new_password()
        admin.create_user(user, password, prefix, limited=self.limit_of(site) is not None)
        try:
            self._remember(site, user, prefix)
            self._write_file(site, user, password)
        except BaseException:
            admin.drop(user, None)
            raise

    def edit(self, site, before, values: dict, changed: dict) -> None:
        enabled = _P(self.name, "enabled")
        password = changed.get(_P(self.name, "passwd"))
        was, now = bool(before.value(enabled)), bool(site.value(enabled))
        if not was and now:
            user, _ = self.names(before)
            if before.value(_P(self.name, "dbaseadmin")) and self._admin().user_exists(user):
                self._admin().unlock(user)  # disabled before, its user kept: enabled again
                if password:
                    self._set_password(site, password)
            else:
                self._create(site, password)
        elif was and not now:
            self._admin().lock(self.names(before)[0])
        elif now and password:
            self._set_password(site, password)
        if now and _P(self.name, "dbasenum") in changed and self._admin().user_exists(self.names(site)[0]):
            self._admin().limit(*self.names(site), limited=self.limit_of(site) is not None)

    def _set_password(self, site, password: str) -> None:
        user, _ = self.names(site)
        self._admin().set_password(user, password)
        self._write_file(site, user, password)

    # --- the site's databases (mysql_create_database, pgsql_create_database) -------------------
    def limit_of(self, site) -> Optional[int]:
        """``dbasenum``: the most databases of the site (None: unlimited)."""
        return site.value(_P(self.name, "dbasenum"))

    def list_databases(self, site) -> list:
        """The site's databases (named with its prefix), sorted."""
        self._enabled(site)
        user, prefix = self.names(site)
        found = self._admin().databases(prefix) if self.name == "mysql" else self._admin().databases(prefix, user)
        return sorted(found)

    def create_database(self, site, name: str, charset: Optional[str] = None, collation: Optional[str] = None) -> str:
        """The database ``name`` (the site's prefix added when missing) made for the site's user;
        its full name.  Denied once the site has ``dbasenum`` databases (ApisCP's "database
        limit reached"); InvalidArgument for a bad name, or a ``charset``/``collation`` the
        MariaDB server lacks; Exists when it exists; ServerError when another create for the
        site (any node) holds the server's lock past ``lock_timeout``."""
        self._enabled(site)
        user, prefix = self.names(site)
        full = name if name.startswith(prefix) else prefix + name
        if not re.fullmatch(r"[a-z0-9_]+", name or "") or len(full) > _NAME_LIMIT[self.name] or full == prefix:
            raise InvalidArgument(f"db: invalid database name {name!r}: lower-case letters, digits and '_', "
                                  f"at most {_NAME_LIMIT[self.name]} characters with the prefix {prefix!r}")
        if self.name == "mysql":
            charset, collation = self._admin().charset_of(charset, collation)
        with self._admin().site_lock(site.id, self.lock_timeout):  # count and create: one step on every node
            existing = self.list_databases(site)
            if full in existing:
                raise Exists(f"database {full!r} exists")
            limit = self.limit_of(site)
            if limit is not None and len(existing) >= limit:
                raise Denied(f"database limit {limit} reached ({self.name}.dbasenum): cannot create additional "
                             f"databases")
            if limit is not None:  # rights on the existing databases only, none left on dropped ones
                self._admin().limit(user, prefix, limited=True)
            if self.name == "mysql":
                self._admin().create_database(user, full, charset, collation)
            else:
                self._admin().create_database(user, full)
        return full

    def _enabled(self, site) -> None:
        if not site.value(_P(self.name, "enabled")):
            raise Denied(f"{_label(self.name)} service not enabled for this site ({self.name}.enabled)")

    def suspend(self, site) -> None:
        if site.value(_P(self.name, "enabled")):
            self._admin().lock(self.names(site)[0])

    def activate(self, site) -> None:
        if site.value(_P(self.name, "enabled")):
            self._admin().unlock(self.names(site)[0])

    def delete(self, site) -> None:
        """Drop the site's databases and user (when the service was ever applied: a stored name)."""
        if site.value(_P(self.name, "dbaseadmin")) is None and not site.value(_P(self.name, "enabled")):
            return
        user, prefix = self.names(site)
        self._admin().drop(user, prefix)


def database_appliers(settings, storage, site_accounts) -> list:
    """The ``mysql`` and ``pgsql`` appliers of ``[databases]`` (``site_accounts``:
    :class:`apiserver.host.accounts.SiteAccounts`, who the administrator is on the host;
    ``lock_timeout``: how long a create waits for its site's lock)."""
    mysql_url, pgsql_url = settings.get("databases", "mysql_admin_url"), settings.get("databases", "pgsql_admin_url")
    admin_of, lock_timeout = site_accounts.identity, settings.get("databases", "lock_timeout")
    return [DatabaseApplier("mysql", MariaDbAdmin(mysql_url) if mysql_url else None, storage, admin_of, lock_timeout),
            DatabaseApplier("pgsql", PostgresAdmin(pgsql_url) if pgsql_url else None, storage, admin_of, lock_timeout)]


def default_prefix(user: str) -> str:
    """The prefix of a site that names none: its database user's name (cut to 15) and ``_``."""
    cleaned = "".join(c for c in user.lower() if c.isascii() and (c.isalnum() or c == "_")) or "db"
    if not cleaned[0].isalpha():
        cleaned = "d" + cleaned
    return cleaned[:15].rstrip("_") + "_"


#: The longest database name of each server (MariaDB 64, PostgreSQL 63).
_NAME_LIMIT = {"mysql": 64, "pgsql": 63}


def _label(name: str) -> str:
    return "MariaDB" if name == "mysql" else "PostgreSQL"
