"""The ``mysql`` and ``pgsql`` modules: a site administrator's databases, as ApisCP's
``mysql_create_database``/``pgsql_create_database`` make them, within the site's ``dbasenum``.

The work (prefix, names, the limit, the grants) is
:class:`apiserver.lifecycle.databases.DatabaseApplier`'s; the appliance acts on a site through
``admin_hijack`` or ``cpcmd -d``.  Both modules export the same two functions (on the blocking
pool: they talk to the database server).
"""

from __future__ import annotations

from typing import Optional

from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export


class _SiteDatabases(BuiltinModule):
    """The two functions of either module; ``name`` picks the service (and its applier)."""

    def _applier(self):
        return self.core.lifecycle.appliers.get(self.name)

    def _site(self, ctx):
        return self.core.lifecycle.record_of(ctx.identity)

    @export(roles=Role.SITE)
    def create_database(self, ctx, db: str) -> bool:
        """Make the database DB for the site's user (its prefix added when missing); refused at the site's dbasenum."""
        self._applier().create_database(self._site(ctx), db)
        return True

    @export(roles=Role.SITE)
    def list_databases(self, ctx) -> list[str]:
        """The site's databases on this server (named with its prefix or, PostgreSQL, owned by its role)."""
        return self._applier().list_databases(self._site(ctx))


class MysqlModule(_SiteDatabases):
    """The site's MariaDB databases."""

    name = "mysql"

    @export(roles=Role.SITE)
    def create_database(self, ctx, db: str, charset: Optional[str] = None, collation: Optional[str] = None) -> bool:
        """Make the database DB (prefix added) in CHARSET, COLLATION (default utf8mb4); refused at the site's dbasenum.

        Omitted, the charset is the collation's (else utf8mb4) and the collation the charset's default;
        either unknown to the server (SHOW CHARACTER SET, SHOW COLLATION) is an InvalidArgument."""
        self._applier().create_database(self._site(ctx), db, charset, collation)
        return True


class PgsqlModule(_SiteDatabases):
    """The site's PostgreSQL databases."""

    name = "pgsql"


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``mysql`` and ``pgsql`` modules."""
    return [MysqlModule, PgsqlModule]
