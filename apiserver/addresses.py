"""IP address text: parsing, matching and the names a listener may bind to.

Small helpers with no project imports, shared by the config parsers (``config.py``), the
middleware and the metrics.  Addresses come back in canonical form: IPv4-mapped IPv6
(``::ffff:192.0.2.1``) is the IPv4 address, IPv6 zone ids are dropped.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Optional, Sequence, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Longest text taken for an address (``[<IPv6 with IPv4 tail>%zone]:port`` fits); longer is garbage.
MAX_ADDRESS_TEXT = 100

_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def parse_address(text: str) -> Optional[IPAddress]:
    """``text`` as an IP address (IPv4-mapped IPv6 as IPv4, zone id dropped), None if it is not one.

    Also accepts the forms proxies write into X-Forwarded-For: ``[2001:db8::1]``,
    ``[2001:db8::1]:443`` and ``192.0.2.1:8080``.
    """
    if len(text) > MAX_ADDRESS_TEXT:  # never cached: a header's garbage must not fill the cache
        return None
    return _parse_address(text)


@functools.lru_cache(maxsize=4096)  # every gate parses the same few addresses on every request
def _parse_address(text: str) -> Optional[IPAddress]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; an IPv6 address has at least two colons
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(ip: IPAddress, trusted_networks: Sequence[IPNetwork]) -> bool:
    """True when ``ip`` lies in one of ``trusted_networks`` (versions that differ never match)."""
    return any(ip in net for net in trusted_networks)


def unmap_network(net):
    """An IPv4-mapped network (``::ffff:192.0.2.0/120``) as the IPv4 network it maps (``192.0.2.0/24``),
    any other network as given: client addresses are compared as IPv4 when they are mapped."""
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        return ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
    return net


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a UNIX socket peer or garbage: not an address we can vouch for
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def is_host(host: str) -> bool:
    """True for an IP address or a syntactically valid DNS name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_NAME.fullmatch(host))
