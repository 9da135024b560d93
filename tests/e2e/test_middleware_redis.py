"""Anvil shared by two running servers through the real Redis on 127.0.0.1:6379 ([anvil] backend=redis)."""

from __future__ import annotations

import ipaddress
import secrets

import pytest
import redis

from apiserver.middleware.anvil_redis import DEFAULT_PREFIX
from tests.scopes.clients import soap_post

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def network():
    """A /64 of the IPv6 documentation range that no other run uses; its Redis key is deleted afterwards."""
    net = ipaddress.IPv6Network((0x20010DB8 << 96 | secrets.randbits(32) << 64, 64))
    yield net
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(DEFAULT_PREFIX + str(net))
    client.close()


def whoami(server, key, address):
    return soap_post(f"{server.url}/soap?authkey={key}", "common_whoami", headers={"X-Forwarded-For": str(address)})


def test_two_nodes_share_counters_and_blocks(server_factory, network):
    """Failures on two nodes add up per /64 in Redis; a block started on one refuses on the other."""
    settings = {"anvil": {"backend": "redis", "redis_url": REDIS_URL, "limit": "3", "min_attempts": "1000"}}
    node_a, node_b = server_factory(settings), server_factory(settings)
    bad = "0" * 64
    hosts = [network[n] for n in (1, 2, 3, 4)]
    assert "Client.Denied" in whoami(node_a, bad, hosts[0]).text
    assert "Client.Denied" in whoami(node_b, bad, hosts[1]).text
    assert "Client.Throttled" in whoami(node_b, bad, hosts[2]).text
    assert "Client.Throttled" in whoami(node_a, node_a.admin_key, hosts[3]).text
    assert "appliance" in whoami(node_a, node_a.admin_key, "192.0.2.101").text
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.hget(DEFAULT_PREFIX + str(network), "n") == b"3"
        assert 0 < client.ttl(DEFAULT_PREFIX + str(network)) <= 901
    finally:
        client.close()
    assert f"blocking {network}" in node_b.log() and f"blocking {network}" not in node_a.log()
