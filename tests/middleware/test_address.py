"""Client address: peer unless a trusted proxy, then the right-most untrusted X-Forwarded-For entry."""

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.test.requesthelper import DummyRequest

from apiserver.config import parse_networks
from apiserver.addresses import parse_address
from apiserver.middleware.address import client_address, request_client_address

PROXIES = parse_networks("127.0.0.1, 10.0.0.0/8, ::1")


def test_untrusted_peer_is_the_client():
    """With no trusted proxies the peer is the client, whatever the header says."""
    assert client_address("203.0.113.9", ["192.0.2.1"], ()) == "203.0.113.9"


def test_spoofed_header_from_untrusted_peer_is_ignored():
    """A peer outside http_trusted_forward cannot choose its address with X-Forwarded-For."""
    assert client_address("203.0.113.9", ["192.0.2.1"], PROXIES) == "203.0.113.9"


def test_trusted_peer_gives_forwarded_client():
    """Behind a trusted proxy the forwarded address is the client."""
    assert client_address("127.0.0.1", ["192.0.2.7"], PROXIES) == "192.0.2.7"


def test_right_most_untrusted_entry_wins():
    """Entries left of the first untrusted one (from the right) were written by the client."""
    headers = ["198.51.100.66, 192.0.2.7, 10.1.2.3"]
    assert client_address("127.0.0.1", headers, PROXIES) == "192.0.2.7"


def test_several_header_lines_form_one_list():
    """Two X-Forwarded-For lines are one chain, the later line nearer to us."""
    assert client_address("127.0.0.1", ["198.51.100.66", "192.0.2.7, 10.9.9.9"], PROXIES) == "192.0.2.7"


def test_every_entry_trusted_gives_left_most():
    """A chain of trusted hops only: the furthest hop is the client."""
    assert client_address("127.0.0.1", ["10.0.0.5, 10.0.0.6"], PROXIES) == "10.0.0.5"


def test_trusted_peer_without_header_is_the_client():
    """A trusted proxy that forwards nothing is itself the client."""
    assert client_address("127.0.0.1", [], PROXIES) == "127.0.0.1"


def test_garbage_entry_stops_at_last_trusted_hop():
    """An entry that is no address ends the walk; nothing left of it is believed."""
    assert client_address("127.0.0.1", ["192.0.2.7, unknown"], PROXIES) == "127.0.0.1"
    assert client_address("127.0.0.1", ["192.0.2.7, not-an-ip, 10.0.0.4"], PROXIES) == "10.0.0.4"
    assert client_address("127.0.0.1", ["\x00\xff;drop table, ,,"], PROXIES) == "127.0.0.1"


def test_garbage_left_of_client_is_ignored():
    """Garbage written by the client before the real entry does not matter."""
    assert client_address("127.0.0.1", ["<script>, 192.0.2.7"], PROXIES) == "192.0.2.7"


def test_ipv4_mapped_peer_is_ipv4():
    """::ffff:a.b.c.d counts as a.b.c.d, as peer and as trusted proxy."""
    assert client_address("::ffff:203.0.113.9", [], ()) == "203.0.113.9"
    assert client_address("::ffff:127.0.0.1", ["192.0.2.7"], PROXIES) == "192.0.2.7"


def test_ipv4_mapped_forwarded_entry_is_ipv4():
    """A forwarded IPv4-mapped address is the IPv4 address."""
    assert client_address("127.0.0.1", ["::ffff:192.0.2.7"], PROXIES) == "192.0.2.7"


def test_ipv6_is_canonical_and_ports_brackets_zones_are_dropped():
    """Forms proxies write: [v6]:port, v4:port, zone ids, upper case; all canonical out."""
    assert client_address("::1", ["[2001:DB8:0::1]:443"], PROXIES) == "2001:db8::1"
    assert client_address("::1", ["192.0.2.7:8080"], PROXIES) == "192.0.2.7"
    assert client_address("fe80::1%eth0", [], ()) == "fe80::1"


def test_long_chains_are_cut():
    """A chain padded with thousands of trusted hops is not walked to the end."""
    headers = [", ".join(["192.0.2.1"] + ["10.0.0.1"] * 5000)]
    assert client_address("127.0.0.1", headers, PROXIES) == "10.0.0.1"


def test_parse_address_refuses_non_addresses():
    """parse_address gives None for anything that is not an address."""
    for text in ("", "localhost", "1.2.3", "[::1", "1.2.3.4/24", "999.1.1.1"):
        assert parse_address(text) is None, text
    assert parse_address(" 192.0.2.1 ") == ipaddress.ip_address("192.0.2.1")


def request_from(peer, forwarded=()):
    request = DummyRequest([b""])
    request.client = peer
    for value in forwarded:
        request.requestHeaders.addRawHeader(b"X-Forwarded-For", value)
    return request


def test_twisted_request_wrapper():
    """The wrapper reads the peer and every X-Forwarded-For line of a twisted.web request."""
    request = request_from(IPv4Address("TCP", "127.0.0.1", 5555), [b"198.51.100.1", b"192.0.2.9"])
    assert request_client_address(request, PROXIES) == "192.0.2.9"
    request = request_from(IPv6Address("TCP", "::ffff:203.0.113.4", 5555), [b"192.0.2.9"])
    assert request_client_address(request, PROXIES) == "203.0.113.4"


def test_twisted_request_over_unix_socket():
    """A UNIX socket peer has no address: it is named 'unix', headers ignored."""
    request = request_from(UNIXAddress(b"/tmp/sock"), [b"192.0.2.9"])
    assert request_client_address(request, PROXIES) == "unix"


def test_ipv4_mapped_trusted_proxy_entry_trusts_the_ipv4_peer():
    """[core] http_trusted_forward written as IPv4-mapped IPv6 trusts that proxy's IPv4 (and mapped) peer address."""
    trusted = parse_networks("::ffff:10.0.0.1")
    assert client_address("10.0.0.1", ["192.0.2.1"], trusted) == "192.0.2.1"
    assert client_address("::ffff:10.0.0.1", ["192.0.2.1"], trusted) == "192.0.2.1"


def test_long_garbage_entries_are_not_cached():
    """Overlong X-Forwarded-For entries are no address and never kept in the parse cache."""
    from apiserver import addresses as address

    before = address._parse_address.cache_info().currsize
    for n in range(100):
        assert parse_address(f"{n}" + "x" * 10_000) is None
    assert client_address("10.0.0.1", ["y" * 10_000 + ", 192.0.2.7"], PROXIES) == "192.0.2.7"
    assert address._parse_address.cache_info().currsize <= before + 2
