"""DAV dead properties and locks in the project's storage: WsgiDAV's property manager and lock
manager over the real database (SQLite, PostgreSQL, MariaDB) and the real Redis, driven as
WsgiDAV drives them, with lock times on a ``twisted.internet.task.Clock``."""

from __future__ import annotations

import datetime
import secrets

import pytest
import redis
from lxml import etree
from twisted.internet.task import Clock
from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_INSUFFICIENT_STORAGE, HTTP_LOCKED, DAVError
from wsgidav.lock_man.lock_manager import LockManager

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.dav.state import DavLimits, DavScope, DavState, SiteLockStorage, SitePropertyManager
from apiserver.dav.state_db import DbDavState
from apiserver.dav.state_redis import RedisDavLocks
from apiserver.storage import Storage
from tests.conftest import run_in_threads
from tests.storage.support import storage  # noqa: F401 - the fixture

REDIS_URL = "redis://127.0.0.1:6379/0"
NS = "{http://example.com/neon/litmus/}"


def add_site(store: Storage, domain: str) -> int:
    with store.write() as conn:
        return conn.execute(store.tables.sites.insert().values(
            domain=domain, created_at=datetime.datetime(2026, 1, 1))).inserted_primary_key[0]


def limits(**dav) -> DavLimits:
    return DavLimits(Config(BUILTIN_SECTIONS, {"dav": {k: str(v) for k, v in dav.items()}}, None))


def direct(fn, *args):
    """The blocking pool stood in by the calling thread (these tests run no reactor)."""
    return fn(*args)


class Node:
    """What one server keeps for one DAV root: its state and WsgiDAV's managers of the root."""

    def __init__(self, store, domain, user=None, clock=None, locks=None, dav_limits=None):
        self.clock = clock or Clock()
        database = DbDavState(store)
        self.state = DavState(database, locks or database, dav_limits or limits(), self.clock, direct)
        site_id = database.site_id(domain)
        self.scope = DavScope.of(site_id, domain, user)
        self.props = SitePropertyManager(self.state, self.scope)
        self.lock_storage = SiteLockStorage(self.state, self.scope)
        self.locks = LockManager(self.lock_storage)

    def request(self) -> "Node":
        self.state.begin_request()
        return self

    def proppatch(self, url: str, values: dict) -> None:
        """As WsgiDAV's PROPPATCH: every property in a dry run, then each for real."""
        self.request()
        encoded = {name: etree.tostring(etree.fromstring(f"<ns0:x xmlns:ns0='urn:x'>{v}</ns0:x>"))
                   for name, v in values.items()}
        for name, value in encoded.items():
            self.props.write_property(url, name, value, dry_run=True)
        for name, value in encoded.items():
            self.props.write_property(url, name, value, dry_run=False)

    def lock(self, url: str, owner: bytes = b"<owner xmlns='DAV:'>t</owner>", timeout=-1, depth="0",
             scope="exclusive", principal="admin"):
        self.request()
        return self.locks.acquire(url=url, lock_type="write", lock_scope=scope, lock_depth=depth, lock_owner=owner,
                                  timeout=timeout, principal=principal, token_list=[])


@pytest.fixture
def site(storage):  # noqa: F811 - the fixture of tests.storage.support
    """A database of each backend with one site."""
    add_site(storage, "dav.example.com")
    return storage


def test_every_property_of_one_proppatch_is_kept(site):
    """A PROPPATCH setting ten properties keeps all ten (the in-memory manager kept only the last)."""
    node = Node(site, "dav.example.com")
    node.proppatch("/doc.txt", {f"{NS}prop{n}": f"value{n}" for n in range(10)})
    node.request()
    assert sorted(node.props.get_properties("/doc.txt")) == sorted(f"{NS}prop{n}" for n in range(10))
    assert b"value7" in node.props.get_property("/doc.txt", f"{NS}prop7")


def test_properties_follow_their_resources(site):
    """MOVE with children, COPY and DELETE carry or drop the properties of a tree, and nothing else; a
    URL given unquoted is the same resource as the quoted one."""
    node = Node(site, "dav.example.com")
    node.proppatch("/a/", {f"{NS}top": "1"})
    node.proppatch("/a/b/c.txt", {f"{NS}deep": "2"})
    node.proppatch("/ab.txt", {f"{NS}beside": "3"})
    node.request().props.move_properties("/a/", "/z/", with_children=True)
    node.request()
    assert node.props.get_properties("/a") == [] and node.props.get_properties("/a/b/c.txt") == []
    assert node.props.get_properties("/z") == [f"{NS}top"]
    assert node.props.get_properties("/z/b/c.txt") == [f"{NS}deep"]
    assert node.props.get_properties("/ab.txt") == [f"{NS}beside"]
    node.props.move_properties("/z/b/c.txt", "/z/b/new name.txt", with_children=False)  # unquoted, as a path
    node.request()
    assert node.props.get_properties("/z/b/new%20name.txt") == [f"{NS}deep"]
    node.props.move_properties("/z/b/new%20name.txt", "/z/b/c.txt", with_children=False)
    node.request()
    node.props.copy_properties("/z/b/c.txt", "/copy.txt")
    node.request()
    assert node.props.get_properties("/copy.txt") == [f"{NS}deep"]
    node.props.remove_properties("/z/")
    node.request()
    assert node.props.get_properties("/z/b/c.txt") == [] and node.props.get_properties("/z") == []
    assert node.props.get_properties("/copy.txt") == [f"{NS}deep"]


def test_property_bounds_answer_507(site):
    """Past max_properties or max_property_bytes a PROPPATCH's dry run gets 507, counting the properties it
    set before; replacing a property adds nothing; COPY past a bound is 507 too."""
    node = Node(site, "dav.example.com", dav_limits=limits(max_properties=3, max_property_bytes=600))
    node.proppatch("/f", {f"{NS}a": "1", f"{NS}b": "2"})
    with pytest.raises(DAVError) as refused:
        node.proppatch("/f", {f"{NS}c": "3", f"{NS}d": "4"})
    assert refused.value.value == HTTP_INSUFFICIENT_STORAGE and "max_properties" in str(refused.value)
    node.proppatch("/f", {f"{NS}a": "again", f"{NS}c": "3"})  # one new, one replaced: 3 in all
    with pytest.raises(DAVError) as refused:
        node.proppatch("/g", {f"{NS}big": "x" * 700})
    assert refused.value.value == HTTP_INSUFFICIENT_STORAGE
    with pytest.raises(DAVError) as refused:
        node.request().props.copy_properties("/f", "/f2")
    assert refused.value.value == HTTP_INSUFFICIENT_STORAGE
    node.request()
    assert len(node.props.get_properties("/f")) == 3 and node.props.get_properties("/f2") == []


def test_a_sites_user_and_administrator_share_state_other_sites_see_none(site):
    """/home/bob/x as the user is /home/bob/x to the administrator; another site sees nothing of it."""
    add_site(site, "other.example.com")
    admin = Node(site, "dav.example.com")
    bob = Node(site, "dav.example.com", user="bob")
    other = Node(site, "other.example.com")
    bob.proppatch("/notes.txt", {f"{NS}mine": "1"})
    admin.request()
    assert admin.props.get_properties("/home/bob/notes.txt") == [f"{NS}mine"]
    lock = admin.lock("/home/bob/notes.txt")
    bob.request()
    assert [found["root"] for found in bob.locks.get_url_lock_list("/notes.txt")] == ["/notes.txt"]
    with pytest.raises(DAVError) as refused:
        bob.locks.check_write_permission(url="/notes.txt", depth="0", token_list=[], principal="bob@dav")
    assert refused.value.value == HTTP_LOCKED
    other.request()
    assert other.props.get_properties("/home/bob/notes.txt") == []
    assert other.locks.get_url_lock_list("/home/bob/notes.txt") == []
    assert other.lock_storage.get(lock["token"]) is None and not other.lock_storage.delete(lock["token"])
    admin.request().locks.release(lock["token"])
    admin.lock("/home", depth="infinity")
    with pytest.raises(DAVError) as refused:  # the administrator's lock above bob's folder holds for bob
        bob.request().locks.check_write_permission(url="/new.txt", depth="0", token_list=[], principal="bob@dav")
    assert refused.value.value == HTTP_LOCKED


def test_locks_end_on_the_clock_and_are_cut_to_the_longest_timeout(site):
    """An infinite or too long timeout becomes max_lock_timeout; the lock ends when the clock passes it."""
    node = Node(site, "dav.example.com", dav_limits=limits(max_lock_timeout=600))
    lock = node.lock("/a.txt", timeout=-1)
    assert lock["timeout"] == 600
    assert node.lock("/b.txt", timeout=30)["timeout"] == 30
    node.clock.advance(599)
    assert node.request().locks.is_url_locked("/a.txt")
    assert not node.request().locks.is_url_locked("/b.txt")
    assert node.request().locks.refresh(lock["token"], timeout=10 ** 9)["timeout"] == 600
    node.clock.advance(599)
    assert node.request().locks.is_url_locked("/a.txt")
    node.clock.advance(2)
    assert node.request().locks.get_lock(lock["token"]) is None


def test_lock_bounds_answer_507_and_403(site):
    """Past max_locks a LOCK gets 507 (ended locks count no more); an owner over max_lock_owner gets 403."""
    node = Node(site, "dav.example.com", dav_limits=limits(max_locks=3, max_lock_owner=100, max_lock_timeout=60))
    for n in range(3):
        node.lock(f"/f{n}")
    with pytest.raises(DAVError) as refused:
        node.lock("/f3")
    assert refused.value.value == HTTP_INSUFFICIENT_STORAGE
    with pytest.raises(DAVError) as refused:
        node.lock("/big", owner=b"<owner xmlns='DAV:'>" + b"o" * 200 + b"</owner>")
    assert refused.value.value == HTTP_FORBIDDEN
    node.clock.advance(61)
    node.lock("/f3")


def test_state_outlives_the_process_and_is_shared_by_nodes(tmp_path):
    """A second Storage on the same database (a restart, another node) sees the properties and locks."""
    url = f"sqlite:///{tmp_path / 'apiserver.db'}"
    first = Storage.from_url(url)
    first.create_schema()
    add_site(first, "dav.example.com")
    node = Node(first, "dav.example.com")
    node.proppatch("/kept", {f"{NS}p": "v"})
    lock = node.lock("/kept")
    first.dispose()
    second = Storage.from_url(url)
    try:
        again = Node(second, "dav.example.com", clock=node.clock).request()
        assert again.props.get_properties("/kept") == [f"{NS}p"]
        assert again.locks.get_lock(lock["token"], key="root") == "/kept"
    finally:
        second.dispose()


@pytest.fixture
def redis_locks():
    """Two nodes' Redis lock stores under a prefix no other run uses; their keys are deleted afterwards."""
    prefix = f"apiserver-test:davlock:{secrets.token_hex(6)}:"
    stores = [RedisDavLocks(REDIS_URL, prefix=prefix) for _ in range(2)]
    try:
        stores[0].client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield stores
    for key in stores[0].client.scan_iter(prefix + "*"):
        stores[0].client.delete(key)
    for store in stores:
        store.close()


def test_redis_locks_are_shared_by_nodes_and_bounded_atomically(tmp_path, redis_locks):
    """A lock taken on one node refuses a write on the other; 20 LOCKs at once over two nodes get
    exactly max_locks; expiry and release reach both."""
    store = Storage.from_url(f"sqlite:///{tmp_path / 'apiserver.db'}")
    store.create_schema()
    add_site(store, "dav.example.com")
    clock = Clock()
    bounds = limits(max_locks=5, max_lock_timeout=60)
    node_a, node_b = (Node(store, "dav.example.com", clock=clock, locks=locks, dav_limits=bounds)
                      for locks in redis_locks)
    lock = node_a.lock("/shared.txt")
    with pytest.raises(DAVError) as refused:
        node_b.request().locks.check_write_permission(url="/shared.txt", depth="0", token_list=[], principal="x")
    assert refused.value.value == HTTP_LOCKED
    node_b.request().locks.release(lock["token"])
    assert not node_a.request().locks.is_url_locked("/shared.txt")

    errors = run_in_threads(lambda node, n: node.lock(f"/f{n}"),
                            [(node_a if n % 2 else node_b, n) for n in range(20)])
    assert len(errors) == 15 and all(e.value == HTTP_INSUFFICIENT_STORAGE for e in errors)
    assert len(node_a.request().locks.get_url_lock_list("/", recursive=True)) == 5
    clock.advance(61)
    assert node_b.request().locks.get_url_lock_list("/", recursive=True) == []
    node_b.lock("/after")
    store.dispose()


def test_conflicting_locks_taken_at_once_on_two_nodes_are_granted_once(site):
    """Ten exclusive LOCKs of one file at once, over two nodes (each its own LockManager): one is
    granted, nine get 423; a depth-infinity lock over a locked file is refused, also by the database's
    own check in the transaction that stores it; shared locks stay compatible."""
    nodes = [Node(site, "dav.example.com") for _ in range(2)]
    errors = run_in_threads(lambda node: node.lock("/contended.txt"), [(nodes[n % 2],) for n in range(10)])
    assert len(errors) == 9 and all(e.value == HTTP_LOCKED for e in errors)
    with pytest.raises(DAVError) as refused:
        nodes[1].lock("/", depth="infinity")
    assert refused.value.value == HTTP_LOCKED
    lock = {"root": "/", "type": "write", "scope": "exclusive", "depth": "infinity", "owner": b"", "timeout": 60,
            "principal": "b"}
    with pytest.raises(DAVError) as refused:  # the storage alone, as after a WsgiDAV check that passed
        nodes[1].request().lock_storage.create("/", lock)
    assert refused.value.value == HTTP_LOCKED
    shared = [Node(site, "dav.example.com") for _ in range(2)]
    for node in shared:
        node.lock("/both.txt", scope="shared")


def test_redis_refuses_a_conflicting_lock_taken_on_another_node(tmp_path, redis_locks):
    """A lock one node's WsgiDAV check did not see (taken on the other node in between) is refused by
    Redis's atomic check with 423; shared locks stay compatible."""
    store = Storage.from_url(f"sqlite:///{tmp_path / 'apiserver.db'}")
    store.create_schema()
    add_site(store, "dav.example.com")
    node_a, node_b = (Node(store, "dav.example.com", locks=locks) for locks in redis_locks)
    node_a.lock("/dir/file.txt")
    node_b.request()
    lock = {"root": "/dir", "type": "write", "scope": "exclusive", "depth": "infinity", "owner": b"",
            "timeout": 60, "principal": "b"}
    with pytest.raises(DAVError) as refused:  # the storage call alone, as after a check that passed
        node_b.lock_storage.create("/dir", lock)
    assert refused.value.value == HTTP_LOCKED
    node_a.lock("/s.txt", scope="shared")
    node_b.lock("/s.txt", scope="shared")
    store.dispose()
