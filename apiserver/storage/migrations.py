"""The ordered schema migrations.  Version N is applied once, in order, and recorded in
``schema_version``.  Add a migration by appending to :data:`MIGRATIONS`; never edit one that
has shipped (databases already carry it)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import sqlalchemy as sa

from apiserver.storage import schema


@dataclasses.dataclass(frozen=True)
class Migration:
    """One step: ``apply(connection)`` runs inside the migration's transaction."""

    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _v1_create_tables(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=[
        schema.sites, schema.users, schema.api_keys, schema.ip_restrictions, schema.login_history,
        schema.scope_changes, schema.sessions,
    ])


def _v2_session_data(conn: sa.Connection) -> None:
    # Version 1 creates the tables as they are now, so a database made by this code has the column.
    columns = {column["name"] for column in sa.inspect(conn).get_columns(schema.sessions.name)}
    if "data" not in columns:
        conn.execute(sa.text(f"ALTER TABLE {schema.sessions.name} ADD COLUMN data TEXT"))


def _v3_fortifications(conn: sa.Connection) -> None:
    schema.fortifications.create(conn, checkfirst=True)


def _v4_notices_events_devices(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.notices, schema.security_events, schema.known_devices])


def _v5_plugin_state(conn: sa.Connection) -> None:
    schema.plugin_state.create(conn, checkfirst=True)


def _v6_restriction_count_and_role_index(conn: sa.Connection) -> None:
    # Version 1 creates the tables as they are now: a database made by this code has both.
    inspector = sa.inspect(conn)
    if "ip_restriction_count" not in {c["name"] for c in inspector.get_columns(schema.users.name)}:
        conn.execute(sa.text(f"ALTER TABLE {schema.users.name} ADD COLUMN ip_restriction_count "
                             "INTEGER DEFAULT 0 NOT NULL"))
    conn.execute(sa.text(f"UPDATE {schema.users.name} SET ip_restriction_count = (SELECT count(*) FROM "
                         f"{schema.ip_restrictions.name} r WHERE r.user_id = {schema.users.name}.id)"))
    if "ix_users_role" not in {i["name"] for i in inspector.get_indexes(schema.users.name)}:
        # Plain DDL: an sa.Index built here would attach a second copy to the users Table.
        conn.execute(sa.text(f"CREATE INDEX ix_users_role ON {schema.users.name} (role)"))


def _v7_restriction_generation(conn: sa.Connection) -> None:
    if "ip_restriction_generation" not in {c["name"] for c in sa.inspect(conn).get_columns(schema.users.name)}:
        conn.execute(sa.text(f"ALTER TABLE {schema.users.name} ADD COLUMN ip_restriction_generation "
                             "BIGINT DEFAULT 0 NOT NULL"))


def _v9_site_services(conn: sa.Connection) -> None:
    # Version 1 creates the tables as they are now: a database made by this code has the columns.
    inspector = sa.inspect(conn)
    sites = schema.sites.name
    have = {c["name"] for c in inspector.get_columns(sites)}
    text_type = "MEDIUMTEXT" if conn.dialect.name in ("mysql", "mariadb") else "TEXT"
    stamp = "DATETIME(6)" if conn.dialect.name in ("mysql", "mariadb") else (
        "TIMESTAMP" if conn.dialect.name == "postgresql" else "DATETIME")
    for column, ddl in (("plan", "VARCHAR(64)"), ("services", text_type), ("invoice", "VARCHAR(255)"),
                        ("parent_invoice", "VARCHAR(255)"), ("suspended_at", stamp), ("suspension_reason", "TEXT")):
        if column not in have:
            conn.execute(sa.text(f"ALTER TABLE {sites} ADD COLUMN {column} {ddl}"))
    indexes = {i["name"] for i in inspector.get_indexes(sites)}
    for name, column in (("ix_sites_invoice", "invoice"), ("ix_sites_parent_invoice", "parent_invoice")):
        if name not in indexes:  # plain DDL: an sa.Index built here would attach to the Table
            conn.execute(sa.text(f"CREATE INDEX {name} ON {sites} ({column})"))
    schema.metadata.create_all(conn, tables=[schema.id_counters, schema.rampart_entries])
    counters = schema.id_counters
    if conn.execute(sa.select(counters.c.last).where(counters.c.name == "sites")).first() is None:
        highest = conn.execute(sa.select(sa.func.max(schema.sites.c.id))).scalar() or 0
        conn.execute(counters.insert().values(name="sites", last=highest))


def _v10_host_accounts(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.host_accounts])


def _v11_dav_state(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.dav_properties, schema.dav_locks])


def _v12_usage(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.site_usage, schema.site_traffic])


def _v13_fortification_restore_mode(conn: sa.Connection) -> None:
    # Version 3 creates the table as it is now: a database made by this code has the column.
    table = schema.fortifications.name
    if "restore_mode" not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN restore_mode VARCHAR(8)"))
        # A write window open during the upgrade returns where every window returned before: max.
        conn.execute(sa.text(f"UPDATE {table} SET restore_mode = 'max' WHERE mode = 'write'"))


MIGRATIONS = (
    Migration(1, "sites, users, api keys, IP restrictions, login history, scope changes, sessions", _v1_create_tables),
    Migration(2, "sessions.data for a UI login's sealed password", _v2_session_data),
    Migration(3, "fortifications: Fortification mode, learned profile and learn/write window per site folder",
              _v3_fortifications),
    Migration(4, "notice outbox, security events, known devices", _v4_notices_events_devices),
    Migration(5, "plugin_state: the per-plugin key/value store of the plugin API", _v5_plugin_state),
    Migration(6, "users.ip_restriction_count (constant-cost limit check) and an index on users.role",
              _v6_restriction_count_and_role_index),
    Migration(7, "users.ip_restriction_generation (cached IP restrictions checked with one row, not re-read)",
              _v7_restriction_generation),
    Migration(9, "sites: plan, services, invoices, suspension; id_counters (site numbers never reused); "
                 "rampart_entries (whitelist and unbans)", _v9_site_services),
    Migration(10, "host_accounts: the system account (uid, gid, host name) of every site user", _v10_host_accounts),
    Migration(11, "dav_properties and dav_locks: WebDAV dead properties and locks per site", _v11_dav_state),
    Migration(12, "site_usage (the last count of each site's files) and site_traffic (bytes per site and day)",
              _v12_usage),
    Migration(13, "fortifications.restore_mode: the mode a write window returns to when it closes",
              _v13_fortification_restore_mode),
)
