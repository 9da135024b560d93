"""Sessions: random ids, sliding idle timeout on the injected clock, bounded memory, shared table."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest
import redis
import sqlalchemy as sa
from twisted.internet import task

from apiserver.accounts.sessions import DatabaseSessionStore, MemorySessionStore, RedisSessionStore
from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import AuthenticationFailed
from apiserver.module import Role
from tests.accounts.support import Harness

TTL = 900
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_store(clock, storage, ttl=lambda: TTL):
    """A Redis store under a prefix of its own (so parallel runs never collide), or a skip."""
    store = RedisSessionStore(clock, ttl, storage, REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        store.client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return store


@pytest.fixture(params=["memory", "db", "redis"])
def stores(request, harness):
    """(store, clock, site admin identity, appliance identity) for each backend."""
    clock = task.Clock()
    clock.advance(1000)
    if request.param == "memory":
        store = MemorySessionStore(clock, lambda: TTL)
    elif request.param == "db":
        store = DatabaseSessionStore(clock, lambda: TTL, harness.app.storage)
    else:
        store = redis_store(clock, harness.app.storage)
    yield store, clock, harness.add_site(), harness.admin
    if request.param == "redis":
        keys = list(store.client.scan_iter(match=store._prefix + "*"))
        if keys:
            store.client.delete(*keys)


def test_ids_are_256_random_bits(stores):
    """Session ids are 64 hex characters and never repeat."""
    store, _clock, site, _admin = stores
    ids = {store.create(site) for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"[0-9a-f]{64}", sid) for sid in ids)


def test_idle_timeout_slides_with_use(stores):
    """Each use restarts the idle time; ttl idle seconds end the session."""
    store, clock, site, admin = stores
    sid = store.create(dataclasses.replace(site, impersonator=admin), "UI")
    clock.advance(TTL - 1)
    session = store.lookup(sid)
    assert session.identity.username == "siteadmin" and session.identity.impersonator.username == "admin"
    assert session.gate == "UI"
    clock.advance(TTL - 1)
    assert store.get(sid).user_id == site.user_id
    clock.advance(TTL)
    assert store.get(sid) is None
    assert store.get(sid) is None


def test_data_is_kept_with_the_session_and_hidden_from_repr(stores):
    """A session's data comes back from every backend, sessions without data have None, repr omits it."""
    store, _clock, site, _admin = stores
    with_data = store.create(site, "UI", "nonce-and-ciphertext")
    without = store.create(site)
    session = store.lookup(with_data)
    assert (session.gate, session.data) == ("UI", "nonce-and-ciphertext")
    assert "nonce-and-ciphertext" not in repr(session) and "nonce-and-ciphertext" not in str(session)
    assert store.lookup(without).data is None


def test_delete_and_unknown_ids(stores):
    """A deleted or unknown id names no session; deleting twice is harmless."""
    store, _clock, site, _admin = stores
    sid = store.create(site)
    store.delete(sid)
    store.delete(sid)
    assert store.get(sid) is None
    assert store.get("0" * 64) is None
    assert store.get("") is None


def test_forgetting_deleted_accounts_ends_their_sessions(stores, harness):
    """Sessions of a deleted site, including hijacked ones, end with it."""
    store, _clock, site, admin = stores
    own = store.create(site)
    hijacked = store.create(dataclasses.replace(site, impersonator=admin))
    kept = store.create(admin)
    wait_delete = harness.call(admin, "admin_delete_site", "example.com")
    assert wait_delete is True
    store.forget_users([site.user_id])
    assert store.get(own) is None and store.get(hijacked) is None
    assert store.get(kept).username == "admin"


def test_forgetting_live_accounts_ends_their_sessions(stores):
    """forget_users ends sessions of accounts that still exist (a reset), as or opened by them."""
    store, _clock, site, admin = stores
    own = store.create(site)
    opened = store.create(dataclasses.replace(admin, impersonator=site))
    kept = store.create(admin)
    store.forget_users([site.user_id])
    assert store.get(own) is None and store.get(opened) is None
    assert store.get(kept).username == "admin"


def test_a_deleted_accounts_session_never_passes_to_the_next_account(stores, harness):
    """SQLite gives a deleted account's id to the next one; its sessions must not follow."""
    store, _clock, site, _admin = stores
    bob = harness.add_user(site, "bob")
    sid = store.create(bob)
    harness.call(site, "user_delete", "bob")
    store.forget_users([bob.user_id])
    carol = harness.add_user(site, "carol")
    assert carol.user_id == bob.user_id  # the reuse this test is about
    assert store.get(sid) is None


def test_memory_store_prunes_expired_and_stays_bounded():
    """Expired sessions are dropped as new ones are made, and the count never exceeds the limit."""
    clock = task.Clock()
    store = MemorySessionStore(clock, lambda: 10, limit=100)
    identity = Identity(Role.USER, user_id=7, username="bob", site_id=1, site="example.com")
    for _ in range(50):
        store.create(identity)
    clock.advance(11)
    store.create(identity)
    assert len(store) == 1
    for _ in range(500):
        store.create(identity)
    assert len(store) == 100


def test_shared_stores_keep_only_a_hash_of_the_id(harness):
    """Neither the sessions table nor Redis contains the session id itself."""
    store = DatabaseSessionStore(harness.clock, lambda: TTL, harness.app.storage)
    sid = store.create(harness.admin)
    with harness.app.storage.read() as conn:
        rows = repr([tuple(r) for r in conn.execute(sa.select(harness.app.storage.tables.sessions))])
    assert sid not in rows
    assert store.get(sid).username == "admin"
    in_redis = redis_store(harness.clock, harness.app.storage)
    sid = in_redis.create(harness.admin)
    keys = [k.decode() for k in in_redis.client.scan_iter(match=in_redis._prefix + "*")]
    index = in_redis._index(harness.admin.user_id)
    assert sorted(keys) == sorted([index, in_redis._key(sid)]) and sid not in in_redis._key(sid)
    assert [m.decode() for m in in_redis.client.smembers(index)] == [in_redis._key(sid)]
    in_redis.client.delete(*keys)


@pytest.mark.parametrize("backend", ["memory", "db", "redis"])
def test_hijack_session_authenticates_until_idle(tmp_path, backend):
    """admin_hijack's id works as esprit_id for [session] ttl idle seconds on every backend."""
    if backend == "redis":
        redis_store(task.Clock(), storage=None)  # skips when the server is unreachable
    h = Harness(tmp_path / "state", {"session": {"backend": backend, "ttl": "60"}})
    try:
        expected = {"memory": MemorySessionStore, "db": DatabaseSessionStore, "redis": RedisSessionStore}[backend]
        assert isinstance(h.app.accounts.sessions, expected)
        h.add_site()
        sid = h.call(h.admin, "admin_hijack", "example.com", None, "soap")
        identity = h.login(Credentials(session_id=sid))
        assert (identity.username, identity.impersonator.username) == ("siteadmin", "admin")
        with pytest.raises(AuthenticationFailed) as wrong_gate:
            h.login(Credentials(session_id=sid), gate=Gate.UI)
        assert wrong_gate.value.reason == "session"
        h.clock.advance(61)
        with pytest.raises(AuthenticationFailed):
            h.login(Credentials(session_id=sid))
    finally:
        h.close()


def test_take_ends_a_session_and_serves_once(stores):
    """take returns a live session and ends it: of several takes of one id (threads at once) exactly
    one gets it; an expired or unknown id gives None."""
    from tests.conftest import run_in_threads

    store, clock, site, admin = stores
    sid = store.create(dataclasses.replace(site, impersonator=admin), "UI")
    taken = []
    assert run_in_threads(lambda: taken.append(store.take(sid)), [()] * 6) == []
    winners = [session for session in taken if session is not None]
    assert len(winners) == 1 and winners[0].identity.impersonator.username == "admin" and winners[0].gate == "UI"
    assert store.lookup(sid) is None and store.take(sid) is None and store.take("f" * 64) is None
    old = store.create(site, "UI")
    clock.advance(TTL)
    assert store.take(old) is None
