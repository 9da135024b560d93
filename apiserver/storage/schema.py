"""The tables, as SQLAlchemy Core objects portable to SQLite, PostgreSQL and MariaDB/MySQL.

Times of day are naive UTC ``DateTime`` (microseconds kept on MariaDB too); session times are
``app.clock.seconds()`` floats because sessions slide on the injected clock.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Naive UTC timestamp with microseconds on every backend (MySQL's DATETIME drops them by default).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

ROLES = ("admin", "site", "user")
GATES = ("UI", "SOAP", "DAV", "CLI")

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", Timestamp, nullable=False),
)

sites = sa.Table(
    "sites", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain", sa.String(253), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # NULL for the appliance administrator, who belongs to no site.
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("role", sa.String(8), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # How many ip_restrictions rows the account has, kept by the accounts service in the
    # transaction that adds or removes one, so the limit check reads one row however many
    # there are (added by migration 6).
    sa.Column("ip_restriction_count", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("site_id", "username", name="uq_users_site_username"),
    sa.CheckConstraint("role IN ('admin', 'site', 'user')", name="ck_users_role"),
    # The appliance administrator is found by role (cpcmd as root, init): no scan of every user.
    sa.Index("ix_users_role", "role"),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    # HMAC-SHA256 of the normalised key: look-up without storing the key.
    sa.Column("lookup_hash", sa.String(64), nullable=False, unique=True),
    # AES-256-GCM nonce + ciphertext + tag, base64: shown again by get_api_keys.
    sa.Column("key_encrypted", sa.String(128), nullable=False),
    sa.Column("comment", sa.String(255), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used", Timestamp, nullable=True),
)

ip_restrictions = sa.Table(
    "ip_restrictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("network", sa.String(64), nullable=False),
    sa.Column("gate", sa.String(8), nullable=True),  # NULL: every gate
    sa.UniqueConstraint("user_id", "network", "gate", name="uq_ip_restrictions_entry"),
)

login_history = sa.Table(
    "login_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("gate", sa.String(8), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Index("ix_login_history_user_at", "user_id", "at"),
)

scope_changes = sa.Table(
    "scope_changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("changed_at", Timestamp, nullable=False),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=True),
)

sessions = sa.Table(
    "sessions", metadata,
    # SHA-256 of the session id: a copy of the table does not yield live sessions.
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("impersonator_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("gate", sa.String(8), nullable=True),
    # Opaque data the session carries (a UI login's sealed password); added by migration 2.
    sa.Column("data", sa.Text, nullable=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False, index=True),
)


class Tables:
    """Namespace of the tables: ``storage.tables.users`` ..."""

    schema_version = schema_version
    sites = sites
    users = users
    api_keys = api_keys
    ip_restrictions = ip_restrictions
    login_history = login_history
    scope_changes = scope_changes
    sessions = sessions
