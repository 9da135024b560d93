"""A real DAV state (SQLite file, the sites in it) for tests that call the DAV application directly."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime

from twisted.internet.task import Clock

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.dav.state import DavLimits, DavState
from apiserver.dav.state_db import DbDavState
from apiserver.storage import Storage


@contextlib.contextmanager
def dav_state(db_path: str, domains):
    """A :class:`DavState` over a new SQLite file holding ``domains`` as sites; its storage calls run
    on a thread of their own, as the blocking pool runs them in the server (a DAV thread acting
    as a site's account could not open the database)."""
    storage = Storage.from_url(f"sqlite:///{db_path}")
    storage.create_schema()
    with storage.write() as conn:
        for domain in domains:
            conn.execute(storage.tables.sites.insert().values(domain=domain, created_at=datetime.datetime(2026, 1, 1)))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-blocking")
    database = DbDavState(storage)
    try:
        yield DavState(database, database, DavLimits(Config(BUILTIN_SECTIONS, {}, None)), Clock(),
                       lambda fn, *args: pool.submit(fn, *args).result())
    finally:
        pool.shutdown()
        storage.dispose()
