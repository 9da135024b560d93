"""The client address of a request: the one place that decides who is calling from where.

Rules (``[core] http_trusted_forward`` lists the proxies whose ``X-Forwarded-For`` is believed):

* the peer of the TCP connection is the client, unless the peer is a trusted proxy;
* behind a trusted proxy, the ``X-Forwarded-For`` entries (every header line, comma
  separated, left = furthest from us) are walked from the right; trusted proxies are skipped
  and the first untrusted entry is the client.  Entries left of it were written by the client
  and are ignored, so a client cannot spoof its address by sending the header itself;
* an entry that is not an IP address (``unknown``, an obfuscated RFC 7239 name, garbage) ends
  the walk: the last trusted hop is taken as the client, because whatever lies left of a
  broken entry cannot be attributed to anyone;
* when every entry is trusted (or the header is absent), the left-most trusted hop is the client;
* IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is the IPv4 address; IPv6 zone ids are dropped;
  addresses come back in canonical text form (``2001:db8::1``, never ``2001:DB8:0::1``).

A peer that is not an IP address (a UNIX socket) is returned as given.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from apiserver.addresses import IPNetwork, is_trusted, parse_address

#: Most X-Forwarded-For entries looked at (from the right); a longer chain is a client's padding.
MAX_FORWARDED_HOPS = 32


def client_address(peer_host: str, forwarded_for_headers: Iterable[str], trusted_networks: Sequence[IPNetwork]) -> str:
    """The client address for a connection from ``peer_host`` carrying ``forwarded_for_headers``.

    ``forwarded_for_headers`` are the raw values of every ``X-Forwarded-For`` line in order;
    ``trusted_networks`` is ``[core] http_trusted_forward``.  See the module docstring.
    """
    peer = parse_address(peer_host)
    if peer is None:
        return peer_host
    if not trusted_networks or not is_trusted(peer, trusted_networks):
        return str(peer)
    entries = [e for line in forwarded_for_headers for e in line.split(",") if e.strip()]
    client = peer
    for entry in reversed(entries[-MAX_FORWARDED_HOPS:]):
        hop = parse_address(entry)
        if hop is None:
            break
        client = hop
        if not is_trusted(hop, trusted_networks):
            break
    return str(client)


def request_client_address(request, trusted_networks: Sequence[IPNetwork]) -> str:
    """:func:`client_address` for a ``twisted.web`` request."""
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if host is None:  # UNIX socket: no host; name the socket kind for logs
        return "unix"
    headers = request.requestHeaders.getRawHeaders(b"x-forwarded-for", ())
    return client_address(host, [h.decode("latin-1") for h in headers], trusted_networks)


def trusted_forwarded_value(request, name: bytes, trusted_networks: Sequence[IPNetwork]) -> str:
    """The right-most value of the forwarding header ``name`` (``x-forwarded-proto``) of a
    ``twisted.web`` request when its peer is a trusted proxy (the value that proxy wrote), else
    ``""``: from anyone else such a header is the client's unverified word."""
    peer = parse_address(getattr(request.getClientAddress(), "host", None) or "")
    if peer is None or not is_trusted(peer, trusted_networks):
        return ""
    lines = request.requestHeaders.getRawHeaders(name, ())
    entries = [entry.strip() for line in lines for entry in line.decode("latin-1").split(",")]
    return entries[-1] if entries else ""
