"""Anvil's Redis store against the real Redis on 127.0.0.1:6379: shared, atomic, expiring counters."""

import concurrent.futures
import uuid

import pytest
import redis

from apiserver.context import Gate
from apiserver.errors import Throttled
from apiserver.middleware.anvil import make_anvil_store
from apiserver.middleware.anvil_store import AnvilState
from apiserver.middleware.anvil_redis import DEFAULT_PREFIX, RedisAnvilStore
from tests.middleware.support import result_of

REDIS_URL = "redis://127.0.0.1:6379/0"
REMOTE = "192.0.2.30"


@pytest.fixture
def prefix():
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"apiserver-test:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=name + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def node(node_factory, prefix):
    """``node()``: an Anvil of its own node sharing this test's Redis prefix (``recorders[anvil]``:
    the events its node fired)."""
    stores = []

    def make(overrides=None):
        node = node_factory(overrides)
        store = RedisAnvilStore(REDIS_URL, node.clock, node.run_blocking, prefix=prefix)
        stores.append(store)
        anvil = node.anvil(store)
        make.recorders[anvil] = node.recorder
        return anvil

    make.recorders = {}

    yield make
    for store in stores:
        store.close()


def test_backend_redis_selects_the_redis_store(node_factory):
    """[anvil] backend=redis makes Anvil keep its state in Redis at [anvil] redis_url."""
    node = node_factory({"anvil": {"backend": "redis", "redis_url": REDIS_URL}})
    store = make_anvil_store(node.config, node.clock, node.run_blocking)
    try:
        assert isinstance(store, RedisAnvilStore) and store.prefix == DEFAULT_PREFIX
        assert store.client.connection_pool.connection_kwargs["port"] == 6379
    finally:
        store.close()


def test_counts_and_blocks_like_the_memory_store(node, clock):
    """19 failures pass, the 20th blocks, a check is refused until ttl, then the slate is clean."""
    anvil = node()
    answers = [result_of(anvil.fail(REMOTE, Gate.SOAP, "key")) for _ in range(20)]
    assert answers[:19] == [None] * 19 and isinstance(answers[19], Throttled)
    with pytest.raises(Throttled):
        result_of(anvil.check(REMOTE))
    clock.advance(900)
    assert result_of(anvil.check(REMOTE)) is None
    assert result_of(anvil.status(REMOTE)) is None


def test_nodes_share_counters_and_blocks(node):
    """Failures on two nodes add up; the block one node starts refuses the address on the other."""
    first, second = node(), node()
    for _ in range(10):
        result_of(first.fail(REMOTE, Gate.SOAP, "key"))
        result_of(second.fail(REMOTE, Gate.UI, "password"))
    assert result_of(first.status(REMOTE)).count == 20
    with pytest.raises(Throttled):
        result_of(first.check(REMOTE))
    with pytest.raises(Throttled):
        result_of(second.check(REMOTE))
    assert len(node.recorders[first].blocked) + len(node.recorders[second].blocked) == 1


def test_concurrent_failures_are_atomic(node_factory, prefix):
    """50 failures from 50 threads at once: every one counted, exactly one starts the block."""
    made = node_factory()
    store = RedisAnvilStore(REDIS_URL, made.clock, made.run_blocking, prefix=prefix)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(
                lambda _: store._record(keys=[prefix + REMOTE], args=["1000.5", 900, 20]), range(50)))
    finally:
        store.close()
    assert sorted(int(r[0]) for r in results) == list(range(1, 51))
    assert sum(int(r[3]) for r in results) == 1


def test_state_keeps_fractional_times(node, clock):
    """Times survive the round trip through Redis exactly (not truncated to integers)."""
    anvil = node({"anvil": {"limit": "2"}})
    clock.advance(1764350000.125)
    result_of(anvil.fail(REMOTE, Gate.SOAP, "key"))
    clock.advance(0.5)
    result_of(anvil.fail(REMOTE, Gate.SOAP, "key"))
    assert result_of(anvil.status(REMOTE)) == AnvilState(2, 1764350900.125, 1764350900.625)


def test_keys_expire_in_redis(node, prefix):
    """Redis forgets an address by itself once its window and block are over."""
    anvil = node({"anvil": {"ttl": "60"}})
    result_of(anvil.fail(REMOTE, Gate.SOAP, "key"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert 0 < client.ttl(prefix + REMOTE) <= 61
    finally:
        client.close()


def test_window_expiry_restarts_the_count(node, clock):
    """Failures older than ttl are forgotten, as with the memory store."""
    anvil = node()
    for _ in range(19):
        result_of(anvil.fail(REMOTE, Gate.SOAP, "key"))
    clock.advance(900)
    assert result_of(anvil.status(REMOTE)) is None
    assert result_of(anvil.fail(REMOTE, Gate.SOAP, "key")) is None
    assert result_of(anvil.status(REMOTE)).count == 1


def closed_port_url() -> str:
    """A Redis URL on a loopback port where nothing listens (Redis down)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


def test_redis_down_fails_closed_with_a_clear_error_logged_once(node_factory):
    """Redis down: good and bad keys alike get ServerError saying why (never admitted, never a traceback per request);
    logged once."""
    from twisted.logger import capturedLogs

    from apiserver.context import AuthRequest, Credentials
    from apiserver.errors import ServerError
    from apiserver.middleware.anvil import STORE_DOWN_MESSAGE
    from tests.middleware.support import GOOD_KEY

    node = node_factory()
    gatekeeper = node.gatekeeper(anvil=node.anvil(RedisAnvilStore(closed_port_url(), node.clock, node.run_blocking)))
    with capturedLogs() as events:
        for key in (GOOD_KEY, "b" * 64, GOOD_KEY):
            request = AuthRequest(gate=Gate.SOAP, address=REMOTE, credentials=Credentials(api_key=key))
            with pytest.raises(ServerError) as raised:
                result_of(gatekeeper.admit(request))
            assert str(raised.value) == STORE_DOWN_MESSAGE
        assert result_of(gatekeeper.admit(AuthRequest(  # whitelisted: Anvil does not need its store
            gate=Gate.SOAP, address="127.0.0.1", credentials=Credentials(api_key=GOOD_KEY)))).identity.user_id == 1
    anvil_lines = [e for e in events if e.get("log_namespace") == "apiserver.middleware.anvil"]
    assert len(anvil_lines) == 1 and "store failed" in anvil_lines[0]["log_format"]
    assert not [e for e in events if e.get("log_failure") is not None]
    gatekeeper.anvil.store.close()


def test_failure_while_redis_is_down_is_not_reported_as_bad_credentials(node_factory):
    """A failed login that cannot be counted answers ServerError, not a plain 'authentication failed'."""
    from apiserver.errors import ServerError

    node = node_factory()
    anvil = node.anvil(RedisAnvilStore(closed_port_url(), node.clock, node.run_blocking))
    with pytest.raises(ServerError):
        result_of(anvil.fail(REMOTE, Gate.SOAP, "key"))
    anvil.store.close()


def test_outage_asks_the_store_once_a_second_and_recovery_is_logged_once(node, clock):
    """During an outage answers fail at once between probes (no thread held per request); recovery is logged once."""
    from twisted.logger import capturedLogs

    from apiserver.errors import ServerError
    from apiserver.middleware.anvil import STORE_RETRY_SECONDS

    anvil = node()
    working = anvil.store
    anvil.store = RedisAnvilStore(closed_port_url(), anvil.clock, working.run_blocking)
    with capturedLogs() as events:
        with pytest.raises(ServerError):
            result_of(anvil.check(REMOTE))
        anvil.store.close()
        anvil.store = working
        asked = []
        working.get = lambda key, real=working.get: asked.append(key) or real(key)
        with pytest.raises(ServerError):
            result_of(anvil.check(REMOTE))
        assert asked == []
        clock.advance(STORE_RETRY_SECONDS)
        assert result_of(anvil.check(REMOTE)) is None
        assert result_of(anvil.check(REMOTE)) is None
    texts = [e["log_format"] for e in events if e.get("log_namespace") == "apiserver.middleware.anvil"]
    assert len(texts) == 2 and "answers again" in texts[1]
