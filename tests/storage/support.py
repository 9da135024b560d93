"""Scratch databases on the PostgreSQL and MariaDB test servers, one per test, dropped afterwards."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1/test",
}


def scratch_database(kind: str):
    """(url, drop): a uniquely named database on the ``kind`` server, so parallel runs never collide.

    Skips the test, naming the server, when it cannot be reached.
    """
    admin = sa.create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    name = f"h1_storage_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"{kind} server at {SERVERS[kind]} is unreachable: {exc.orig}")
    url = sa.make_url(SERVERS[kind]).set(database=name)

    def drop():
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}" + (" WITH (FORCE)" if kind == "postgresql" else ""))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def database_url(kind: str, tmp_path):
    """(url, drop) for ``sqlite`` (a file under ``tmp_path``), ``postgresql`` or ``mariadb``."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'apiserver.db'}", lambda: None
    return scratch_database(kind)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def schema_storage(request, tmp_path):
    """A Storage of each backend with the current schema, removed afterwards."""
    from apiserver.storage import Storage

    url, drop = database_url(request.param, tmp_path)
    store = Storage.from_url(url, pool_size=4)
    store.create_schema()
    yield store
    store.dispose()
    drop()
