"""The ``mysql`` and ``pgsql`` modules: a site administrator's databases, as ApisCP's
``mysql_create_database``/``pgsql_create_database`` make them, within the site's ``dbasenum``.

The work (prefix, names, the limit, the grants) is
:class:`apiserver.lifecycle.databases.DatabaseApplier`'s; the appliance acts on a site through
``admin_hijack`` or ``cpcmd -d``.
"""

from __future__ import annotations

from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export


class _SiteDatabases(BuiltinModule):
    def _applier(self):
        return self.core.lifecycle.appliers.get(self.name)

    def _site(self, ctx):
        return self.core.lifecycle.record_of(ctx.identity)


class MysqlModule(_SiteDatabases):
    """The site's MariaDB databases."""

    name = "mysql"

    @export(roles=Role.SITE)
    def create_database(self, ctx, db: str) -> bool:
        """Make the database DB (the site's prefix added when missing); refused once the site has mysql.dbasenum."""
        self._applier().create_database(self._site(ctx), db)
        return True

    @export(roles=Role.SITE)
    def list_databases(self, ctx) -> list[str]:
        """The site's MariaDB databases (named with its prefix)."""
        return self._applier().list_databases(self._site(ctx))


class PgsqlModule(_SiteDatabases):
    """The site's PostgreSQL databases."""

    name = "pgsql"

    @export(roles=Role.SITE)
    def create_database(self, ctx, db: str) -> bool:
        """Make the database DB owned by the site's role (prefix added when missing); refused at pgsql.dbasenum."""
        self._applier().create_database(self._site(ctx), db)
        return True

    @export(roles=Role.SITE)
    def list_databases(self, ctx) -> list[str]:
        """The site's PostgreSQL databases (named with its prefix or owned by its role)."""
        return self._applier().list_databases(self._site(ctx))


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``mysql`` and ``pgsql`` modules."""
    return [MysqlModule, PgsqlModule]
