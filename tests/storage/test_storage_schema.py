"""Schema creation, migration and round-trips on a real SQLite file, PostgreSQL and MariaDB."""

from __future__ import annotations

import contextlib
import datetime
import os
import stat

import pytest
import sqlalchemy as sa

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.storage import SchemaError, Storage
from apiserver.storage.migrations import MIGRATIONS
from tests.conftest import run_in_threads
from tests.storage.support import database_url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def storage(request, tmp_path):
    """An empty database of each backend, removed afterwards."""
    url, drop = database_url(request.param, tmp_path)
    store = Storage.from_url(url, pool_size=4)
    yield store
    store.dispose()
    drop()


def _now() -> datetime.datetime:
    return datetime.datetime(2026, 11, 28, 18, 30, 15, 123456)


def _add_site(conn, t, domain="example.com") -> int:
    return conn.execute(t.sites.insert().values(domain=domain, created_at=_now())).inserted_primary_key[0]


def _add_user(conn, t, site_id, username, role="user") -> int:
    return conn.execute(t.users.insert().values(
        site_id=site_id, username=username, role=role, password_hash="$pbkdf2-sha512$1000$x$y",
        email=f"{username}@example.com", created_at=_now())).inserted_primary_key[0]


@contextlib.contextmanager
def back_to_version(storage, version: int, *undo: str):
    """Test set-up: the current schema taken back to ``version`` (later versions no longer recorded,
    ``undo``'s SQL run), ``(conn, tables)`` yielded for more of that and the rows of that version,
    in one transaction; the database then says it is at ``version``."""
    storage.create_schema()
    t = storage.tables
    with storage.write() as conn:
        conn.execute(t.schema_version.delete().where(t.schema_version.c.version > version))
        for sql in undo:
            conn.execute(sa.text(sql))
        yield conn, t
    assert storage.version() == version


def _migrated_from(storage, version: int) -> None:
    """Every migration after ``version`` applied, in order, and the schema then checks out."""
    assert storage.migrate() == [m.version for m in MIGRATIONS if m.version > version]
    storage.check()


def test_create_schema_creates_every_table_once(storage):
    """create_schema builds all tables, reports True the first time and False after."""
    assert storage.version() == 0
    assert storage.create_schema() is True
    names = set(sa.inspect(storage.engine).get_table_names())
    assert {"schema_version", "sites", "users", "api_keys", "ip_restrictions", "login_history",
            "scope_changes", "sessions"} <= names
    assert storage.create_schema() is False
    assert storage.version() == MIGRATIONS[-1].version
    assert storage.migrate() == []
    storage.check()


def test_check_refuses_missing_and_newer_schema(storage):
    """check() names the missing schema; a database newer than the code is refused by migrate()."""
    with pytest.raises(SchemaError, match="apiserver init"):
        storage.check()
    storage.create_schema()
    with storage.write() as conn:
        conn.execute(storage.tables.schema_version.insert().values(
            version=storage.latest_version + 1, description="from the future", applied_at=_now()))
    with pytest.raises(SchemaError, match="newer"):
        storage.migrate()


def test_a_migration_that_landed_after_a_higher_one_is_applied(storage):
    """A database at version 12 made before migration 11 landed (numbers are reserved per branch) gets
    11 from migrate(); check() names it until then."""
    storage.create_schema()
    t = storage.tables
    with storage.write() as conn:
        t.dav_locks.drop(conn)
        t.dav_properties.drop(conn)
        conn.execute(t.schema_version.delete().where(t.schema_version.c.version == 11))
    assert storage.version() == storage.latest_version
    with pytest.raises(SchemaError, match="lacks schema migration 11"):
        storage.check()
    assert storage.migrate() == [11]
    storage.check()
    with storage.write() as conn:
        site = _add_site(conn, t)
        conn.execute(t.dav_properties.insert().values(site_id=site, key_hash="k", path_hash="p", folder_hash="f",
                                                      path="/p", name="n", value="v", size=2))


def test_version_1_database_gains_session_data(storage):
    """Migration 2 adds sessions.data to a version-1 database, keeping its sessions; data round-trips."""
    with back_to_version(storage, 1, "ALTER TABLE sessions DROP COLUMN data") as (conn, t):
        admin = _add_user(conn, t, None, "admin", role="admin")
        conn.execute(sa.text("INSERT INTO sessions (id_hash, user_id, gate, created, last_seen) "
                             "VALUES ('old', :uid, 'SOAP', 1.0, 2.0)"), {"uid": admin})
    _migrated_from(storage, 1)
    with storage.write() as conn:
        conn.execute(t.sessions.insert().values(id_hash="new", user_id=admin, data="sealed", created=3.0,
                                                last_seen=3.0))
        rows = dict(conn.execute(sa.select(t.sessions.c.id_hash, t.sessions.c.data)).all())
    assert rows == {"old": None, "new": "sealed"}


def test_version_2_database_gains_fortifications(storage):
    """Migration 3 adds the fortifications table to a version-2 database; a row round-trips."""
    with back_to_version(storage, 2) as (conn, t):
        t.fortifications.drop(conn)
    assert 3 in storage.migrate()
    with storage.write() as conn:
        site = _add_site(conn, t)
        conn.execute(t.fortifications.insert().values(site_id=site, path="blog", app="wordpress", mode="learn",
                                                      until=1800000060.5, learn_since_ns=2 ** 62, profile=None,
                                                      updated_at=_now()))
        row = conn.execute(sa.select(t.fortifications)).mappings().one()
    assert (row["path"], row["mode"], row["until"], row["learn_since_ns"]) == ("blog", "learn", 1800000060.5, 2 ** 62)


def test_migration_6_counts_existing_restrictions_and_indexes_roles(storage):
    """Migration 6 gives a version-2 database users.ip_restriction_count, set from the rows, and ix_users_role."""
    on_users = " ON users" if storage.engine.dialect.name in ("mysql", "mariadb") else ""
    with back_to_version(storage, 2, "DROP INDEX ix_users_role" + on_users,  # no counter, no role index
                         "ALTER TABLE users DROP COLUMN ip_restriction_count") as (conn, t):
        site = _add_site(conn, t)
        conn.execute(sa.text("INSERT INTO users (site_id, username, role, created_at) "
                             "VALUES (:site, 'busy', 'site', :now)"), {"site": site, "now": _now()})
        busy_id = conn.execute(sa.text("SELECT id FROM users WHERE username = 'busy'")).scalar()
        conn.execute(sa.text("INSERT INTO users (site_id, username, role, created_at) "
                             "VALUES (:site, 'idle', 'user', :now)"), {"site": site, "now": _now()})
        conn.execute(t.ip_restrictions.insert(), [{"user_id": busy_id, "network": f"192.0.2.{i}", "gate": None}
                                                  for i in range(3)])
    assert 6 in storage.migrate()
    storage.check()
    with storage.read() as conn:
        counts = dict(conn.execute(sa.select(t.users.c.username, t.users.c.ip_restriction_count)).all())
    assert counts == {"busy": 3, "idle": 0}
    assert "ix_users_role" in {i["name"] for i in sa.inspect(storage.engine).get_indexes("users")}


def test_migration_7_adds_the_restriction_generation(storage):
    """Migration 7 gives a version-6 database users.ip_restriction_generation, 0 for every account."""
    with back_to_version(storage, 6, "ALTER TABLE users DROP COLUMN ip_restriction_generation") as (conn, t):
        site = _add_site(conn, t)
        conn.execute(sa.text("INSERT INTO users (site_id, username, role, created_at) "
                             "VALUES (:site, 'old', 'site', :now)"), {"site": site, "now": _now()})
    _migrated_from(storage, 6)
    with storage.read() as conn:
        assert conn.execute(sa.select(t.users.c.username, t.users.c.ip_restriction_generation)).all() == [("old", 0)]


def test_migration_9_adds_site_services_and_seeds_the_site_counter(storage):
    """Migration 9 gives a version-7 database the sites' service columns, rampart_entries and a
    site counter starting above the highest site id, so site<N> is never handed out twice."""
    on_sites = " ON sites" if storage.engine.dialect.name in ("mysql", "mariadb") else ""
    columns = ("plan", "services", "invoice", "parent_invoice", "suspended_at", "suspension_reason")
    with back_to_version(storage, 7, *(f"DROP INDEX {index}{on_sites}" for index in ("ix_sites_invoice",
                                                                                      "ix_sites_parent_invoice")),
                         *(f"ALTER TABLE sites DROP COLUMN {column}" for column in columns)) as (conn, t):
        t.rampart_entries.drop(conn)
        t.id_counters.drop(conn)
        conn.execute(sa.text("INSERT INTO sites (domain, created_at) VALUES ('a.example', :now), ('b.example', :now)"),
                     {"now": _now()})
        highest = conn.execute(sa.text("SELECT max(id) FROM sites")).scalar()
    assert 9 in storage.migrate()
    storage.check()
    with storage.write() as conn:
        conn.execute(sa.text("DELETE FROM sites WHERE id = :id"), {"id": highest})
    with storage.write() as conn:
        from apiserver.storage.counters import next_number
        assert next_number(conn, "sites") == highest + 1  # the deleted site's number is not given again
        conn.execute(t.sites.update().values(invoice="WHMCS-1", services='{"ssh":{"enabled":1}}'))
        assert conn.execute(sa.select(t.sites.c.invoice, t.sites.c.services)).all() == [
            ("WHMCS-1", '{"ssh":{"enabled":1}}')]
    indexes = {i["name"] for i in sa.inspect(storage.engine).get_indexes("sites")}
    assert {"ix_sites_invoice", "ix_sites_parent_invoice"} <= indexes


def test_site_numbers_are_never_reused(storage):
    """next_number hands out each site number once, even after the site with the highest one is
    deleted (SQLite and MariaDB would give its id again), and several writers get distinct ones."""
    from apiserver.storage.counters import next_number

    storage.create_schema()
    t = storage.tables

    def add(domain):
        with storage.write() as conn:
            return conn.execute(t.sites.insert().values(id=next_number(conn, "sites"), domain=domain,
                                                        created_at=_now())).inserted_primary_key[0]

    first, second = add("a.example"), add("b.example")
    with storage.write() as conn:
        conn.execute(t.sites.delete().where(t.sites.c.id == second))
    third = add("c.example")
    assert first < second < third
    numbers = []
    errors = run_in_threads(lambda i: numbers.append(add(f"p{i}.example")), [(i,) for i in range(8)])
    assert errors == [] and len(set(numbers)) == 8 and min(numbers) > third


def test_rows_round_trip(storage):
    """Every table stores and returns its values, timestamps to the microsecond."""
    storage.create_schema()
    t = storage.tables
    with storage.write() as conn:
        site = _add_site(conn, t)
        admin = _add_user(conn, t, None, "admin", role="admin")
        bob = _add_user(conn, t, site, "bob")
        conn.execute(t.api_keys.insert().values(user_id=bob, lookup_hash="a" * 64, key_encrypted="b" * 80,
                                                comment="ci", created_at=_now(), last_used=_now()))
        conn.execute(t.ip_restrictions.insert().values(user_id=bob, network="2001:db8::/32", gate=None))
        conn.execute(t.ip_restrictions.insert().values(user_id=bob, network="192.0.2.0/24", gate="SOAP"))
        conn.execute(t.login_history.insert().values(user_id=bob, at=_now(), address="192.0.2.1", gate="SOAP",
                                                     method="key", success=True))
        conn.execute(t.scope_changes.insert().values(name="cp.api", actor="appliance admin", changed_at=_now(),
                                                     old_value="true", new_value="false"))
        conn.execute(t.sessions.insert().values(id_hash="c" * 64, user_id=bob, impersonator_id=admin, gate=None,
                                                created=1.5, last_seen=1234567890.25))
    with storage.read() as conn:
        user = conn.execute(sa.select(t.users).where(t.users.c.id == bob)).one()
        assert (user.site_id, user.username, user.role, user.email) == (site, "bob", "user", "bob@example.com")
        assert user.created_at == _now()
        key = conn.execute(sa.select(t.api_keys)).one()
        assert (key.lookup_hash, key.comment, key.last_used) == ("a" * 64, "ci", _now())
        nets = conn.execute(sa.select(t.ip_restrictions.c.network, t.ip_restrictions.c.gate)
                            .order_by(t.ip_restrictions.c.id)).all()
        assert [tuple(r) for r in nets] == [("2001:db8::/32", None), ("192.0.2.0/24", "SOAP")]
        login = conn.execute(sa.select(t.login_history)).one()
        assert login.success is True and login.at == _now()
        change = conn.execute(sa.select(t.scope_changes)).one()
        assert (change.name, change.old_value, change.new_value) == ("cp.api", "true", "false")
        session = conn.execute(sa.select(t.sessions)).one()
        assert (session.impersonator_id, session.last_seen) == (admin, 1234567890.25)


def test_unique_constraints_hold(storage):
    """Domains, usernames within a site and key look-up hashes are unique; roles are checked."""
    storage.create_schema()
    t = storage.tables
    with storage.write() as conn:
        site = _add_site(conn, t)
        user = _add_user(conn, t, site, "bob")
        conn.execute(t.api_keys.insert().values(user_id=user, lookup_hash="d" * 64, key_encrypted="x",
                                                created_at=_now()))
    attempts = [
        lambda conn: _add_site(conn, t),
        lambda conn: _add_user(conn, t, site, "bob"),
        lambda conn: conn.execute(t.api_keys.insert().values(user_id=user, lookup_hash="d" * 64,
                                                             key_encrypted="y", created_at=_now())),
        lambda conn: conn.execute(t.users.insert().values(site_id=site, username="eve", role="root",
                                                          created_at=_now())),
    ]
    for attempt in attempts:
        # MariaDB reports a failed CHECK as an OperationalError (4025), the others as IntegrityError.
        with pytest.raises((sa.exc.IntegrityError, sa.exc.OperationalError)):
            with storage.write() as conn:
                attempt(conn)
    with storage.write() as conn:  # the same name in another site is fine
        _add_user(conn, t, _add_site(conn, t, "example.org"), "bob")


def test_deleting_a_site_cascades(storage):
    """A site's users, keys, restrictions, sessions and history go with it; others stay."""
    storage.create_schema()
    t = storage.tables
    with storage.write() as conn:
        site = _add_site(conn, t)
        other = _add_site(conn, t, "example.net")
        for site_id, name in ((site, "bob"), (other, "carol")):
            uid = _add_user(conn, t, site_id, name)
            conn.execute(t.api_keys.insert().values(user_id=uid, lookup_hash=name.ljust(64, "0"),
                                                    key_encrypted="x", created_at=_now()))
            conn.execute(t.ip_restrictions.insert().values(user_id=uid, network="192.0.2.1/32"))
            conn.execute(t.sessions.insert().values(id_hash=name.ljust(64, "1"), user_id=uid, created=0, last_seen=0))
            conn.execute(t.login_history.insert().values(user_id=uid, at=_now(), address="::1", gate="UI",
                                                         method="password", success=False))
    with storage.write() as conn:
        conn.execute(t.sites.delete().where(t.sites.c.id == site))
    with storage.read() as conn:
        for table in (t.users, t.api_keys, t.ip_restrictions, t.sessions, t.login_history):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 1, table.name


def test_sqlite_file_uses_wal_and_foreign_keys(tmp_path):
    """The default SQLite file runs in WAL mode with foreign keys enforced."""
    store = Storage.from_url(f"sqlite:///{tmp_path / 'apiserver.db'}")
    store.create_schema()
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(sa.exc.IntegrityError):
        with store.write() as conn:
            conn.execute(store.tables.api_keys.insert().values(user_id=999, lookup_hash="e" * 64,
                                                               key_encrypted="x", created_at=_now()))
    store.dispose()


def test_sqlite_files_are_readable_by_the_owner_only(tmp_path):
    """The database, WAL and shared-memory files are 0600 even under a permissive umask."""
    old_umask = os.umask(0o022)
    try:
        store = Storage.from_url(f"sqlite:///{tmp_path / 'apiserver.db'}")
        store.create_schema()
        with store.read() as conn:
            conn.exec_driver_sql("SELECT 1")
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
        store.dispose()
    finally:
        os.umask(old_umask)
    assert modes == {"apiserver.db": 0o600, "apiserver.db-wal": 0o600, "apiserver.db-shm": 0o600}


def test_sqlite_concurrent_writers_all_succeed(tmp_path):
    """Writers on several threads queue on the SQLite lock instead of failing with 'database is locked'."""
    store = Storage.from_url(f"sqlite:///{tmp_path / 'apiserver.db'}")
    store.create_schema()
    t = store.tables

    def writer(n: int):
        for i in range(25):
            with store.write() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(t.sites)).scalar()
                conn.execute(t.sites.insert().values(domain=f"w{n}-{i}-{count}.example", created_at=_now()))

    errors = run_in_threads(writer, [(n,) for n in range(8)])
    assert errors == []
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.sites)).scalar() == 200
    store.dispose()


def test_from_config_defaults_to_sqlite_in_state_dir(tmp_path):
    """Without [db] url the database is apiserver.db in state_dir; with it, the URL is used."""
    config = Config(BUILTIN_SECTIONS, {"core": {"state_dir": str(tmp_path)}}, None)
    store = Storage.from_config(config)
    assert store.engine.url.database == str(tmp_path / "apiserver.db")
    other = Config(BUILTIN_SECTIONS, {"db": {"url": f"sqlite:///{tmp_path / 'other.db'}"}}, None)
    assert Storage.from_config(other).engine.url.database == str(tmp_path / "other.db")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_nodes_starting_together_migrate_once(kind, tmp_path):
    """Several processes creating the schema at once: exactly one creates it, none fails."""
    url, drop = database_url(kind, tmp_path)
    stores = [Storage.from_url(url, pool_size=2) for _ in range(4)]
    results = []
    errors = run_in_threads(lambda store: results.append(store.create_schema()), [(store,) for store in stores])
    try:
        assert errors == []
        assert sorted(results) == [False, False, False, True]
        with stores[0].read() as conn:
            applied = conn.execute(sa.select(sa.func.count()).select_from(stores[0].tables.schema_version)).scalar()
            assert applied == len(MIGRATIONS)
    finally:
        for store in stores:
            store.dispose()
        drop()


def test_database_errors_never_show_the_values(storage):
    """A failed statement's error (which the server logs) names no value it carried, such as a password hash."""
    storage.create_schema()
    with pytest.raises(sa.exc.IntegrityError) as failed:
        with storage.write() as conn:
            conn.execute(storage.tables.api_keys.insert().values(
                user_id=424242, lookup_hash="f" * 64, key_encrypted="sealed-key-value", created_at=_now()))
    assert "sealed-key-value" not in str(failed.value) and "f" * 64 not in str(failed.value)


def test_switching_to_wal_is_tried_again_while_the_file_is_locked():
    """SQLite may answer "database is locked" to journal_mode=WAL at once, without its busy
    handler (nodes opening a new file together): the switch is tried again; other errors raise."""
    import sqlite3

    from apiserver.storage import _switch_to_wal

    class Cursor:
        def __init__(self, failures):
            self.failures, self.calls = list(failures), 0

        def execute(self, sql):
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)

    locked = Cursor([sqlite3.OperationalError("database is locked")] * 2)
    _switch_to_wal(locked)
    assert locked.calls == 3
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _switch_to_wal(Cursor([sqlite3.OperationalError("disk I/O error")]))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _switch_to_wal(Cursor([sqlite3.OperationalError("database is locked")] * 1000), patience=0.05)


def test_migration_13_gives_open_write_windows_max_to_return_to(storage):
    """Migration 13 adds fortifications.restore_mode to a version-12 database: an open write window returns to max."""
    with back_to_version(storage, 12, "ALTER TABLE fortifications DROP COLUMN restore_mode") as (conn, t):
        site = _add_site(conn, t)
        for path, mode, until in (("", "write", 1800000600.0), ("blog", "min", None)):
            conn.execute(sa.text("INSERT INTO fortifications (site_id, path, app, mode, until, updated_at) "
                                 "VALUES (:site, :path, 'wordpress', :mode, :until, :now)"),
                         {"site": site, "path": path, "mode": mode, "until": until, "now": _now()})
    _migrated_from(storage, 12)
    with storage.read() as conn:
        rows = dict(conn.execute(sa.select(t.fortifications.c.path, t.fortifications.c.restore_mode)).all())
    assert rows == {"": "max", "blog": None}


def test_a_sqlite_file_gets_connections_for_the_pool_and_as_many_dav_threads(tmp_path):
    """SQLite's pool holds db_threads connections and db_threads more: the blocking pool's and DAV threads' at once."""
    store = Storage.from_url(f"sqlite:///{tmp_path / 'apiserver.db'}", pool_size=3)
    try:
        opened = [store.engine.connect() for _ in range(6)]
        assert store.engine.pool.size() == 3 and store.engine.pool.overflow() == 3
        for conn in opened:
            conn.close()
    finally:
        store.dispose()
