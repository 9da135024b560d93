"""``[frontend] https_only`` (apiserver.middleware.https_only) on real twisted.web requests.

It lives with the TLS tests because it is the HTTP side of the HTTPS policy.
"""

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from apiserver.addresses import is_loopback
from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.middleware.https_only import HttpsOnly


def make_settings(**frontend) -> Config:
    """A config with https_only on and 127.0.0.1 as trusted proxy (``frontend`` keys over it)."""
    raw = {"frontend": {"https_only": "true", "https_port": "2083", **frontend},
           "core": {"http_trusted_forward": "127.0.0.1"}}
    return Config(BUILTIN_SECTIONS, raw, None)


def make_request(peer="192.0.2.10", secure=False, host=b"api.example.com:2082", path=b"/soap",
                 forwarded_for=None, forwarded_proto=None) -> Request:
    """A twisted.web Request as the HTTP(S) listener builds it."""
    address = IPv6Address("TCP", peer, 5555) if ":" in peer else IPv4Address("TCP", peer, 5555)
    channel = DummyChannel(peer=address)
    if secure:
        channel.transport = DummyChannel.SSL(address)
    request = Request(channel)
    request.method, request.path, request.uri = b"POST", path, path + b"?authkey=0123456789abcdef"
    if host is not None:
        request.requestHeaders.setRawHeaders(b"host", [host])
    if forwarded_for:
        request.requestHeaders.setRawHeaders(b"x-forwarded-for", [forwarded_for])
    if forwarded_proto:
        request.requestHeaders.setRawHeaders(b"x-forwarded-proto", forwarded_proto)
    return request


def test_remote_plain_http_is_refused_naming_the_https_url():
    """A remote client over HTTP is told where HTTPS is; the query (an API key) is not echoed."""
    reason = HttpsOnly(make_settings()).refusal(make_request())
    assert reason == "plain HTTP is refused for remote clients ([frontend] https_only); use https://api.example.com:2083/soap"


def test_remote_client_behind_trusted_proxy_is_refused():
    """Loopback proxy forwarding for 192.0.2.10: the client is remote, so refused."""
    request = make_request(peer="127.0.0.1", forwarded_for=b"192.0.2.10")
    assert "https://api.example.com:2083/soap" in HttpsOnly(make_settings()).refusal(request)


def test_https_ended_at_a_trusted_proxy_passes():
    """A trusted proxy that ended TLS says X-Forwarded-Proto: https (its right-most value): the remote client passes."""
    settings = make_settings()
    for proto in ([b"https"], [b"HTTPS"], [b"http, https"], [b"http", b"https"]):
        assert HttpsOnly(settings).refusal(make_request(peer="127.0.0.1", forwarded_for=b"192.0.2.10",
                                                   forwarded_proto=proto)) is None


@pytest.mark.parametrize("peer, proto", [
    ("127.0.0.1", [b"http"]), ("127.0.0.1", [b"https, http"]), ("127.0.0.1", [b"https", b"http"]),
    ("192.0.2.10", [b"https"]),  # the client's own word: not a trusted proxy
])
def test_forwarded_proto_http_or_untrusted_is_refused(peer, proto):
    """X-Forwarded-Proto counts only from a trusted proxy, and only its right-most value."""
    request = make_request(peer=peer, forwarded_for=b"192.0.2.10", forwarded_proto=proto)
    assert HttpsOnly(make_settings()).refusal(request) is not None


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
def test_loopback_http_keeps_working(peer):
    """Loopback clients (cp-proxy) may still use plain HTTP."""
    assert HttpsOnly(make_settings()).refusal(make_request(peer=peer)) is None


def test_https_requests_and_switched_off_setting_pass():
    """HTTPS is never refused; with https_only false remote HTTP passes; the switch is read live."""
    settings = make_settings()
    assert HttpsOnly(settings).refusal(make_request(secure=True)) is None
    settings.set("frontend", "https_only", "false")
    assert HttpsOnly(settings).refusal(make_request()) is None
    settings.set("frontend", "https_only", "true")
    assert HttpsOnly(settings).refusal(make_request()) is not None


def test_public_url_and_host_forms():
    """public_url wins; IPv6 hosts keep brackets; port 443 is implied; a junk Host is not echoed."""
    assert HttpsOnly(make_settings(public_url="https://panel.example.net/")).refusal(make_request()).endswith(
        "use https://panel.example.net/soap")
    assert HttpsOnly(make_settings()).refusal(make_request(host=b"[2001:db8::5]:2082")).endswith(
        "use https://[2001:db8::5]:2083/soap")
    assert HttpsOnly(make_settings(https_port="443")).refusal(make_request()).endswith("use https://api.example.com/soap")
    junk = HttpsOnly(make_settings()).refusal(make_request(host=b"evil.example/<script>"))
    assert "<script>" not in junk and "https://10.0.0.1:2083/soap" in junk


def test_no_https_listener_still_refuses_without_url():
    """With https_port 0 and no public_url the refusal still explains itself."""
    reason = HttpsOnly(make_settings(https_port="0")).refusal(make_request())
    assert reason == "plain HTTP is refused for remote clients ([frontend] https_only); use HTTPS"


def test_is_loopback_rejects_non_addresses():
    """Only real loopback addresses count; 'unix' and garbage do not."""
    assert [is_loopback(a) for a in ("127.0.0.1", "::1", "192.0.2.1", "unix", "")] == [True, True, False, False, False]
