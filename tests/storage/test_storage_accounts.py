"""The accounts' own queries on every backend: the same flows on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime
import shutil
import threading

import pytest
import sqlalchemy as sa

from apiserver.accounts.identities import HISTORY_KEEP, record_logins
from apiserver.accounts.keys import USAGE_FLUSH_DELAY
from apiserver.accounts.sessions import DatabaseSessionStore
from apiserver.context import Credentials, Gate
from apiserver.errors import AuthenticationFailed, Exists
from tests.accounts.support import Harness, wait
from tests.storage.support import database_url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def backend(request, tmp_path):
    """A harness whose [db] url is a fresh database of each backend, with db sessions."""
    url, drop = database_url(request.param, tmp_path)
    h = Harness(tmp_path / "state", {"db": {"url": url}, "session": {"backend": "db"}})
    yield h
    h.close()
    drop()


def test_account_flows(backend):
    """Sites, users, keys, write-behind usage, sessions, restrictions and cascading deletion."""
    h = backend
    assert isinstance(h.app.accounts.sessions, DatabaseSessionStore)
    site = h.add_site()
    bob = h.add_user(site, "bob", "bob-password", "bob@example.com")
    with pytest.raises(Exists):
        h.add_site()
    assert [u.username for u in h.call(site, "user_get_users")] == ["siteadmin", "bob"]
    key = h.call(bob, "auth_create_api_key", "ci")
    assert h.login_key(key) == bob
    h.advance(USAGE_FLUSH_DELAY)
    assert h.call(bob, "auth_get_api_keys")[0].last_used is not None
    assert h.login(Credentials(username="bob", site="example.com", password="bob-password")) == bob
    h.call(bob, "auth_restrict_ip", "192.0.2.0/24", "SOAP")
    assert [(r.ip, r.gate) for r in h.call(bob, "auth_get_ip_restrictions")] == [("192.0.2.0/24", "SOAP")]
    sid = h.call(h.admin, "admin_hijack", "example.com", "bob")
    assert h.login(Credentials(session_id=sid)).impersonator == h.admin
    assert [r.method for r in h.call(bob, "auth_get_login_history")] == ["password", "key"]
    h.call(h.admin, "admin_delete_site", "example.com")
    for credentials in (Credentials(api_key=key), Credentials(session_id=sid)):
        with pytest.raises(AuthenticationFailed):
            h.login(credentials)
    assert h.call(h.admin, "admin_list_sites") == []


def test_login_history_is_pruned_per_account(backend):
    """Only the newest HISTORY_KEEP records of an account are kept."""
    h = backend
    site = h.add_site()
    start = datetime.datetime(2027, 1, 1)
    for batch in range(3):
        rows = [dict(user_id=site.user_id, at=start + datetime.timedelta(seconds=batch * 1000 + i),
                     address="192.0.2.1", gate="SOAP", method="key", success=True) for i in range(HISTORY_KEEP - 50)]
        with h.app.storage.write() as conn:
            record_logins(conn, rows)
    history = h.call(site, "auth_get_login_history")
    assert len(history) == HISTORY_KEEP
    assert history[0].at == start + datetime.timedelta(seconds=2000 + HISTORY_KEEP - 51)


def test_concurrent_identical_restrictions_store_one_entry(backend):
    """An add racing an uncommitted identical entry (gate null, which no unique index covers) waits and is Exists."""
    h = backend
    site = h.add_site()
    users, restrictions = h.app.storage.tables.users, h.app.storage.tables.ip_restrictions
    outcome = []

    def racing_add():
        try:
            h.app.ip_restrictions.add(site, "192.0.2.0/24", None)
            outcome.append("added")
        except Exists:
            outcome.append("exists")

    with h.app.storage.write() as conn:
        conn.execute(sa.select(users.c.id).where(users.c.id == site.user_id).with_for_update())
        conn.execute(restrictions.insert().values(user_id=site.user_id, network="192.0.2.0/24", gate=None))
        racer = threading.Thread(target=racing_add)
        racer.start()
        racer.join(1.0)  # without the row lock the racer finishes here, before this commit
    racer.join(30)
    assert outcome == ["exists"]
    assert [(r.ip, r.gate) for r in h.call(site, "auth_get_ip_restrictions")] == [("192.0.2.0/24", None)]


def admitted(h: Harness, identity, address: str) -> bool:
    """Whether ``h``'s gatekeeper lets ``identity`` in from ``address`` through SOAP."""
    return wait(h.app.ip_restrictions.admits(identity, Gate.SOAP, address))


def counting_loads(h: Harness) -> list:
    """The user ids whose IP restrictions ``h`` reads from here on, in order."""
    rows, reads = h.app.ip_restrictions.rows, []
    load = rows.load
    rows.load = lambda user_id: reads.append(user_id) or load(user_id)
    return reads


def test_another_nodes_restriction_changes_show_after_the_ttl_by_their_generation(backend, tmp_path):
    """Each add and remove draws a new users.ip_restriction_generation; a second node sharing the
    database keeps its cached entries after the ttl while that number stands (one row read,
    no read of the entries) and reads them again once the first node changed it."""
    a = backend
    (tmp_path / "state-b").mkdir()
    shutil.copy(a.config.get("core", "state_dir") + "/secret", tmp_path / "state-b" / "secret")
    b = Harness(tmp_path / "state-b", {"db": {"url": a.app.storage.engine.url.render_as_string(hide_password=False)},
                                        "session": {"backend": "db"}})
    try:
        site = a.add_site()
        reads = counting_loads(b)

        def generation():
            return wait(a.app.run_blocking(a.app.ip_restrictions.rows.generation, site.user_id))

        assert generation() == 0
        assert admitted(b, site, "198.51.100.7") and reads == [site.user_id]
        ttl = b.config.get("auth", "ip_restriction_cache_ttl")
        for _ in range(3):  # nothing changed: the generation read keeps the cached entries
            b.clock.advance(ttl)
            assert admitted(b, site, "198.51.100.7")
        assert len(reads) == 1
        a.call(site, "auth_restrict_ip", "192.0.2.0/24")
        added = generation()
        assert added != 0
        assert admitted(b, site, "198.51.100.7")  # within b's ttl: still its cached entries
        b.clock.advance(ttl)
        assert not admitted(b, site, "198.51.100.7")
        assert admitted(b, site, "192.0.2.9") and len(reads) == 2
        a.call(site, "auth_remove_ip_restriction", "192.0.2.0/24")
        assert generation() not in (0, added)
        b.clock.advance(ttl)
        assert admitted(b, site, "198.51.100.7") and len(reads) == 3
    finally:
        b.close()


def test_this_nodes_restriction_changes_keep_the_cached_generation_current(backend):
    """A change made here carries the cached generation along, so after the ttl the entries
    are kept without a read, and they decide like the stored rows."""
    h = backend
    site = h.add_site()
    reads = counting_loads(h)
    assert admitted(h, site, "198.51.100.7")
    h.call(site, "auth_restrict_ip", "192.0.2.0/24")
    h.call(site, "auth_restrict_ip", "198.51.100.0/24", "SOAP")
    h.call(site, "auth_remove_ip_restriction", "192.0.2.0/24")
    h.clock.advance(h.config.get("auth", "ip_restriction_cache_ttl"))
    assert not admitted(h, site, "192.0.2.9")
    assert admitted(h, site, "198.51.100.7")
    assert reads == [site.user_id]
