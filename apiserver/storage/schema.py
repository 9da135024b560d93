"""The tables, as SQLAlchemy Core objects portable to SQLite, PostgreSQL and MariaDB/MySQL.

Times of day are naive UTC ``DateTime`` (microseconds kept on MariaDB too); session times are
clock ``seconds()`` floats because sessions slide on the injected clock.
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
    # site<N>: never reused, drawn from id_counters (apiserver.lifecycle.store.next_site_id).
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain", sa.String(253), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # --- migration 9: the site's services (issue 20) ---
    # The plan the site took (siteinfo.plan); NULL: none recorded (a site made before plans).
    sa.Column("plan", sa.String(64), nullable=True),
    # JSON {service: {param: value}} of every stored parameter but those with a column here or on
    # the administrator's users row (domain, admin_user, email, plan, invoices) and secrets.
    sa.Column("services", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=True),
    # billing.invoice and billing.parent_invoice: a site argument may name them (account groups).
    sa.Column("invoice", sa.String(255), nullable=True),
    sa.Column("parent_invoice", sa.String(255), nullable=True),
    # When the site was suspended (NULL: active) and why (admin_deactivate_site's reason).
    sa.Column("suspended_at", Timestamp, nullable=True),
    sa.Column("suspension_reason", sa.Text, nullable=True),
    sa.Index("ix_sites_invoice", "invoice"),
    sa.Index("ix_sites_parent_invoice", "parent_invoice"),
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
    # A random number the accounts service draws anew in every transaction that adds or removes
    # an ip_restrictions row (migration 7): a node whose cached entries carry the number it reads
    # has them all, and keeps them without reading every row again.  Random rather than counted,
    # as SQLite may give a new account the id of a deleted one.
    sa.Column("ip_restriction_generation", sa.BigInteger, nullable=False, server_default="0"),
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

fortifications = sa.Table(
    "fortifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    # The fortified folder relative to the site's document root ('' for the document root).
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("app", sa.String(32), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    # End of a learn or write window on the injected clock (its seconds()); NULL otherwise.
    sa.Column("until", sa.Double, nullable=True, index=True),
    # The filesystem's time (st_mtime_ns of a fresh file) when a learn window opened.
    sa.Column("learn_since_ns", sa.BigInteger, nullable=True),
    # The learned profile: JSON list of paths relative to the folder ('dir/' means the whole tree).
    sa.Column("profile", sa.Text, nullable=True),
    # The mode a write window returns to (the folder's mode before it); NULL otherwise.  Migration 13.
    sa.Column("restore_mode", sa.String(8), nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("site_id", "path", name="uq_fortifications_site_path"),
)

plugin_state = sa.Table(
    "plugin_state", metadata,
    # One row per (plugin, key): the per-plugin key/value store of apiserver.plugin_api.PluginState.
    sa.Column("plugin", sa.String(100), primary_key=True),
    # Keys compare exactly on every backend (MariaDB's default collation ignores case).
    sa.Column("key", sa.String(200).with_variant(mysql.VARCHAR(200, charset="utf8mb4", collation="utf8mb4_bin"),
                                                 "mysql", "mariadb"), primary_key=True),
    # The value as JSON text (MEDIUMTEXT on MariaDB, whose TEXT stops at 64 KB).
    sa.Column("value", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# --- migration 4: the notice outbox, the security event trail, the devices accounts used -----

notices = sa.Table(
    "notices", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),          # password, device
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("message", sa.Text, nullable=False),             # the whole RFC 5322 message, never a secret
    sa.Column("state", sa.String(8), nullable=False),          # queued, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("sent_at", Timestamp, nullable=True),
    # Injected-clock seconds: when the next attempt may start, and the lease of the node sending it.
    sa.Column("next_attempt", sa.Double, nullable=False),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", sa.Double, nullable=True),
    sa.Column("last_error", sa.String(255), nullable=True),
    sa.Index("ix_notices_state_next", "state", "next_attempt"),
)

security_events = sa.Table(
    "security_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # Few indexes: every event is an insert; the filters of admin_get_security_events walk ``at``.
    sa.Column("at", Timestamp, nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    # No foreign key: the trail outlives deleted accounts and sites.
    sa.Column("user_id", sa.Integer, nullable=True, index=True),
    sa.Column("account", sa.String(64), nullable=True),
    sa.Column("site", sa.String(253), nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Column("gate", sa.String(8), nullable=True),
    sa.Column("detail", sa.String(255), nullable=True),
)

known_devices = sa.Table(
    "known_devices", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # SHA-256 of what tells the device apart (the UI's device cookie, else address and User-Agent).
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("first_seen", Timestamp, nullable=False),
    sa.UniqueConstraint("user_id", "device", name="uq_known_devices_entry"),
)


# --- migration 9: numbers never reused, rampart's whitelist and unbans ----------------------

id_counters = sa.Table(
    "id_counters", metadata,
    # The last number handed out per name ("sites": site<N>), so a deleted site's N is never
    # given again (SQLite and MariaDB may reuse the highest id of a deleted row).
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("last", sa.BigInteger, nullable=False),
)

rampart_entries = sa.Table(
    "rampart_entries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # The site whose administrator acted (NULL: the appliance administrator).
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=True),
    # An address or network in its canonical text.
    sa.Column("address", sa.String(64), nullable=False),
    # whitelist: kept until removed; unban: counted against rampart.max for 24 hours.
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_rampart_entries_kind_address", "kind", "address"),
    sa.Index("ix_rampart_entries_site", "site_id"),
)


# --- migration 10: sites' system accounts (issue 19) ------------------------------------------

host_accounts = sa.Table(
    "host_accounts", metadata,
    # The system account of one site user (the administrator included): apiserver.host made it.
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
              autoincrement=False),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    # <user>.<N> (apiserver.host.names), unique on the host, so here too.
    sa.Column("host_name", sa.String(32), nullable=False, unique=True),
    sa.Column("uid", sa.Integer, nullable=False),
    # The site's group admin<N>: the same for every user of a site.
    sa.Column("gid", sa.Integer, nullable=False),
    sa.Index("ix_host_accounts_site", "site_id"),
)


# --- migration 12: measured use (storage counts, traffic) --------------------------------------

site_usage = sa.Table(
    "site_usage", metadata,
    # The last count of a site's files: KB (st_blocks, hard links once) and inodes.
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kilobytes", sa.BigInteger, nullable=False),
    sa.Column("files", sa.BigInteger, nullable=False),
    # "quota" (the filesystem's group quota) or "count" (a walk of the site's home).
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("counted_at", Timestamp, nullable=False),
)

site_traffic = sa.Table(
    "site_traffic", metadata,
    # Bytes carried for a site on one UTC day (days since 1970-01-01): bandwidth periods start at
    # 00:00 UTC, so a period's sum is the sum of its days.
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
)


# --- migration 11: WebDAV dead properties and locks, per site (issue 21) ---------------------
# Paths are DAV reference URLs (quoted, no trailing slash) from the site's home down, so a site's
# administrator and its users (whose DAV root is /home/<user>) see the same properties and locks.

#: Dead property values: MEDIUMTEXT on MariaDB, whose TEXT stops at 64 KB.
_LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

dav_properties = sa.Table(
    "dav_properties", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    # SHA-256 (hex) of path NUL name, of the path and of its folder's path: exact and indexable on
    # every backend whatever the paths' length (MariaDB compares TEXT ignoring case).
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("path_hash", sa.String(64), nullable=False),
    sa.Column("folder_hash", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("value", _LongText, nullable=False),
    # Bytes of name and value, counted against [dav] max_property_bytes.
    sa.Column("size", sa.Integer, nullable=False),
    sa.UniqueConstraint("site_id", "key_hash", name="uq_dav_properties_key"),
    sa.Index("ix_dav_properties_path", "site_id", "path_hash"),
    sa.Index("ix_dav_properties_folder", "site_id", "folder_hash"),
)

dav_locks = sa.Table(
    "dav_locks", metadata,
    sa.Column("token", sa.String(100), primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("depth", sa.String(16), nullable=False),
    sa.Column("principal", sa.String(320), nullable=False),
    # The LOCK's <owner> element as sent (at most [dav] max_lock_owner bytes).
    sa.Column("owner", sa.LargeBinary, nullable=False),
    sa.Column("timeout", sa.Double, nullable=False),
    # Clock seconds when the lock ends.
    sa.Column("expire", sa.Double, nullable=False),
    sa.Index("ix_dav_locks_site_expire", "site_id", "expire"),
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
    fortifications = fortifications
    plugin_state = plugin_state
    notices = notices
    security_events = security_events
    known_devices = known_devices
    id_counters = id_counters
    rampart_entries = rampart_entries
    host_accounts = host_accounts
    site_usage = site_usage
    site_traffic = site_traffic
    dav_properties = dav_properties
    dav_locks = dav_locks
