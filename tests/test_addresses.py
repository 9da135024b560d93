"""IP address text helpers: host names a listener may bind to, mapped networks, loopback."""

import ipaddress

from apiserver.addresses import is_host, is_loopback, is_trusted, parse_address, unmap_network


def test_is_host_takes_addresses_and_dns_names_only():
    """An IP address or a DNS name is a host; spaces, slashes and empty text are not."""
    assert all(is_host(h) for h in ("127.0.0.1", "::1", "api.example.com", "localhost"))
    assert not any(is_host(h) for h in ("", "a b", "example.com/x", "-bad.example"))


def test_mapped_networks_compare_as_ipv4():
    """::ffff:192.0.2.0/120 is 192.0.2.0/24, so a mapped client address matches it as IPv4."""
    net = unmap_network(ipaddress.ip_network("::ffff:192.0.2.0/120"))
    assert net == ipaddress.ip_network("192.0.2.0/24")
    assert is_trusted(parse_address("::ffff:192.0.2.9"), [net])
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("192.0.2.1")
