"""Storage: one SQLAlchemy engine and the versioned schema.

SQLite in ``[core] state_dir`` by default (WAL, foreign keys on); any SQLAlchemy URL in
``[db] url`` (PostgreSQL and MariaDB/MySQL are tested).  Every method blocks: call it through
the blocking pool (``run_blocking``), never on the reactor thread.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
import threading
import time
from typing import Iterator

import sqlalchemy as sa

from apiserver.storage import schema
from apiserver.storage.migrations import MIGRATIONS, Migration

__all__ = ["Storage", "SchemaError", "DEFAULT_SQLITE_FILE", "utcnow"]

DEFAULT_SQLITE_FILE = "apiserver.db"

#: Bytes of the SQLite file each connection maps (address space, shared with the OS page cache).
SQLITE_MMAP_BYTES = 1 << 30

#: Seconds a SQLite connection waits for another's lock before giving up.
SQLITE_BUSY_TIMEOUT = 30


_MIGRATION_LOCK_ID = 0x61706973  # PostgreSQL advisory lock key ("apis")
_MIGRATION_LOCK_NAME = "apiserver_schema_migration"


class SchemaError(Exception):
    """The database's schema is missing or newer than this code."""


def utcnow(clock) -> datetime.datetime:
    """``clock.seconds()`` as a naive UTC datetime, the form every timestamp column holds."""
    return datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc).replace(tzinfo=None)


class Storage:
    """The database: ``engine``, ``metadata``, ``tables`` and schema versioning."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.metadata = schema.metadata
        self.tables = schema.Tables
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._sqlite_writer = threading.RLock()  # reentrant: a write may open a nested one

    @classmethod
    def from_config(cls, config) -> "Storage":
        """``[db] url``, or the SQLite file ``apiserver.db`` in ``state_dir``; connects lazily."""
        url = config.get("db", "url") or "sqlite:///" + config.state_path(DEFAULT_SQLITE_FILE)
        return cls.from_url(url, pool_size=config.get("core", "db_threads"))

    @classmethod
    def from_url(cls, url: str, pool_size: int = 8) -> "Storage":
        """An engine for ``url`` tuned for its backend (the pool matches the blocking threads)."""
        parsed = sa.make_url(url)
        # Database errors reach the server log: without hide_parameters their text would carry
        # the statement's values (password hashes, sealed UI passwords, addresses).
        if parsed.get_backend_name() == "sqlite":
            _create_private_file(parsed.database)
            # As many connections as the other backends get: the blocking pool's threads and as
            # many DAV threads asking themselves (apiserver.dav.state.storage_caller).
            engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, pool_size=pool_size,
                                      max_overflow=pool_size, hide_parameters=True)
            _configure_sqlite(engine)
        else:
            engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=pool_size,
                                      pool_pre_ping=True, pool_recycle=3600, hide_parameters=True)
        return cls(engine)

    # --- transactions -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that will write: committed on success, rolled back on error.

        On SQLite it starts with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout
        instead of one failing when it upgrades a read lock.
        """
        if self.is_sqlite:
            # SQLite has one writer at a time.  Writers of this process queue on a lock, handed
            # over at once, instead of in SQLite's busy handler, which sleeps up to 100 ms
            # between tries (measured: a third of the throughput and a p99 of a second with 8
            # threads writing).  Other processes on the same file still queue there.
            with self._sqlite_writer, self.engine.connect() as conn:
                with conn.execution_options(sqlite_immediate=True).begin():
                    yield conn
            return
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for reading.

        On SQLite each statement reads the latest committed data on its own (no ``BEGIN``): a
        statement that releases and retakes the GIL costs a thread switch when the reactor
        is busy, and most reads are one statement.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(sqlite_autocommit_read=True)
            yield conn

    # --- schema -----------------------------------------------------------------------------
    def version(self) -> int:
        """The schema version the database carries (0: no schema)."""
        with self.read() as conn:
            return _version(conn)

    @property
    def latest_version(self) -> int:
        """The schema version this code creates and migrates to."""
        return MIGRATIONS[-1].version

    def create_schema(self) -> bool:
        """Create the schema when the database has none; True if this call created it.

        An existing schema is brought up to date with :meth:`migrate`.
        """
        applied = self.migrate()
        return bool(applied) and applied[0] == MIGRATIONS[0].version

    def migrate(self) -> list:
        """Apply every pending migration in order; returns the versions applied.

        Several nodes may start at once: the migrations run under a database-wide lock, and a
        node that waited finds them applied.  A migration below the highest applied one that the
        database lacks (numbers are reserved per branch, so they may land out of order) is applied
        too.  Raises :class:`SchemaError` when the database is newer than this code.
        """
        with self._migration_lock() as conn:
            current = _version(conn)
            if current > self.latest_version:
                raise SchemaError(f"the database has schema version {current}, newer than this apiserver "
                                  f"({self.latest_version}); upgrade apiserver")
            done = _applied_versions(conn)
            applied = []
            for migration in MIGRATIONS:
                if migration.version not in done:
                    self._apply(conn, migration)
                    applied.append(migration.version)
        return applied

    def check(self) -> None:
        """Raise :class:`SchemaError` unless the schema exists and is current."""
        current = self.version()
        if current == 0:
            raise SchemaError("the database has no schema: run 'apiserver init'")
        if current != self.latest_version:
            raise SchemaError(f"the database has schema version {current}, this apiserver needs "
                              f"{self.latest_version}: run 'apiserver init' to migrate")
        missing = self._missing_migrations()
        if missing:
            raise SchemaError(f"the database lacks schema migration {', '.join(map(str, missing))}: "
                              "run 'apiserver init' to migrate")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[sa.Connection]:
        """A write transaction only one process holds at a time (SQLite: BEGIN IMMEDIATE is the lock)."""
        if self.engine.dialect.name in ("mysql", "mariadb"):
            # DDL commits implicitly on MySQL, so the lock is a session's, held on a connection of
            # its own and released only after the migrations' transaction has committed.
            with self.engine.connect() as lock:
                if lock.exec_driver_sql(f"SELECT GET_LOCK('{_MIGRATION_LOCK_NAME}', 300)").scalar() != 1:
                    raise SchemaError("another apiserver has been migrating the schema for 5 minutes; try again")
                try:
                    with self.write() as conn:
                        yield conn
                finally:
                    lock.exec_driver_sql(f"SELECT RELEASE_LOCK('{_MIGRATION_LOCK_NAME}')")
            return
        with self.write() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
            yield conn

    def _missing_migrations(self) -> list:
        """Versions of this code's migrations the database does not record (skipped by a later one)."""
        with self.read() as conn:
            done = _applied_versions(conn)
        return [migration.version for migration in MIGRATIONS if migration.version not in done]

    @staticmethod
    def _apply(conn: sa.Connection, migration: Migration) -> None:
        schema.schema_version.create(conn, checkfirst=True)
        migration.apply(conn)
        conn.execute(schema.schema_version.insert().values(
            version=migration.version, description=migration.description,
            applied_at=datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _create_private_file(path) -> None:
    """Create the SQLite file readable by its owner only, whatever the umask: it holds password
    hashes, and SQLite gives its -wal and -shm files the database file's permissions."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except (FileExistsError, FileNotFoundError):
        pass  # exists already, or no directory yet: SQLite's own error then says what is wrong


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL, foreign keys and explicit BEGINs (pysqlite's own transaction handling is off)."""

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        if engine.url.database and engine.url.database != ":memory:":
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Pages are read through a shared memory map instead of a read() into each
            # connection's own small page cache: a large database costs no more per query
            # than a small one (benchmarks/bench_scale.py).
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn):
        options = conn.get_execution_options()
        if options.get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get("sqlite_autocommit_read"):
            conn.exec_driver_sql("BEGIN")


def _switch_to_wal(cursor, patience: float = SQLITE_BUSY_TIMEOUT) -> None:
    """Blocking.  ``PRAGMA journal_mode=WAL``, tried again while another connection holds the
    lock it needs: SQLite answers "database is locked" at once there, without waiting in its
    busy handler (seen with several processes opening a new file together)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _applied_versions(conn: sa.Connection) -> set:
    """The versions ``schema_version`` records (none when it does not exist)."""
    if not sa.inspect(conn).has_table(schema.schema_version.name):
        return set()
    return set(conn.execute(sa.select(schema.schema_version.c.version)).scalars())


def _version(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table(schema.schema_version.name):
        return 0
    return conn.execute(sa.select(sa.func.max(schema.schema_version.c.version))).scalar() or 0
