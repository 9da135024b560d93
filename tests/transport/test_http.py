"""HTTP hardening of every API listener, against a real listening Site on 127.0.0.1."""

from __future__ import annotations

import http.client
import socket

import pytest
from twisted.internet import task

from apiserver.logs import masked_uri
from apiserver.transport.http import REQUEST_TIMEOUT, ApiResource, ApiSite
from tests.transport.soap_testing import KEY, SECRET_MARKER, SoapTestServer

LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = SoapTestServer(str(tmp_path_factory.mktemp("http") / "server.log"),
                         {"soap": {"max_body_size": str(LIMIT)}, "core": {"access_log": "true"}})
    yield srv
    srv.stop()


def envelope(inner: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
            'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
            f'{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()


def raw_exchange(server, request: bytes) -> bytes:
    """Send raw bytes and return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def post(server, body: bytes, path: str = f"/soap?authkey={KEY}", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_declared_oversized_body_gets_413_before_it_is_sent(server):
    """A Content-Length over max_body_size is answered 413 while the body is still unsent."""
    answer = raw_exchange(server, (
        f"POST /soap?authkey={KEY} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {LIMIT * 1000}\r\nExpect: 100-continue\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


def test_chunked_body_past_the_limit_gets_413(server):
    """A chunked body is counted as it arrives and refused once it passes the limit."""
    chunk = b"x" * 1024
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // 1024 + 2)) + b"0\r\n\r\n"
    answer = raw_exchange(server, (
        f"POST /soap?authkey={KEY} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        "Transfer-Encoding: chunked\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_chunked_body_under_the_limit_is_served(server):
    """Chunked bodies within the limit are decoded and called like any other."""
    body = envelope('<m:sample_add xmlns:m="urn:x"><a>2</a><b>3</b></m:sample_add>')
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])) + b"0\r\n\r\n"
    answer = raw_exchange(server, (
        f"POST /soap?authkey={KEY} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunks)
    assert answer.startswith(b"HTTP/1.1 200 ") and b">5</return>" in answer


def test_body_at_the_limit_is_accepted(server):
    """A body of exactly max_body_size bytes is read, not refused."""
    body = envelope('<m:sample_whoami xmlns:m="urn:x"/>')
    body = body + b" " * (LIMIT - len(body))
    status, _, answer = post(server, body)
    assert status == 200 and b"admin" in answer


def test_get_soap_without_wsdl_is_405(server):
    """GET /soap is not a SOAP call: 405 naming POST."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/soap")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "POST"


def test_get_soap_wsdl_serves_the_rpc_wsdl(server):
    """GET /soap?wsdl serves the RPC-style WSDL naming the URL the client used."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/soap?wsdl")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and b'style="rpc"' in body
    assert f'location="http://127.0.0.1:{server.port}/soap"'.encode() in body


def test_hostile_host_header_does_not_reach_the_wsdl(server):
    """A Host header that is not a host name is not copied into soap:address."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("GET", "/apnscp.wsdl", skip_host=True)
    conn.putheader("Host", 'evil"/><x a="')
    conn.endheaders()
    body = conn.getresponse().read()
    assert b"evil" not in body and f"127.0.0.1:{server.port}/soap".encode() in body


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "text/xml; charset=iso-8859-1", None])
def test_wrong_content_type_is_415(server, ctype):
    """Only XML content types (UTF-8 or no charset) reach the SOAP decoder."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", f"/soap?authkey={KEY}")
    body = envelope('<m:sample_whoami xmlns:m="urn:x"/>')
    if ctype:
        conn.putheader("Content-Type", ctype)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    assert conn.getresponse().status == 415


@pytest.mark.parametrize("ctype", ["text/xml", "application/soap+xml; charset=utf-8", 'text/xml; charset="utf-8"',
                                   'text/xml; charset="UTF8"',
                                   'application/soap+xml;charset="US-ASCII";action="urn:x"'])
def test_accepted_content_types(server, ctype):
    """text/xml and application/soap+xml, with or without a UTF-8 charset, are served."""
    status, _, _ = post(server, envelope('<m:sample_whoami xmlns:m="urn:x"/>'), headers={"Content-Type": ctype})
    assert status == 200


def test_bodies_and_keys_never_reach_the_log(server):
    """The access log has one line per request with authkey masked and nothing of the body."""
    body = envelope(f'<m:sample_echo xmlns:m="urn:x"><text>{SECRET_MARKER}</text></m:sample_echo>')
    status, _, answer = post(server, body)
    assert status == 200 and SECRET_MARKER.encode() in answer
    post(server, envelope(f"<m:sample_nope xmlns:m='urn:x'>{SECRET_MARKER}</m:sample_nope>"))
    post(server, b"<broken " + SECRET_MARKER.encode())
    log = server.log()
    assert "POST /soap?authkey=*** 200" in log
    assert SECRET_MARKER not in log and KEY not in log


def test_pipelined_requests_on_one_connection(server):
    """Keep-alive works: two calls on one connection both get answers."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for n in (1, 2):
        conn.request("POST", f"/soap?authkey={KEY}", body=envelope(
            f'<m:sample_add xmlns:m="urn:x"><a>{n}</a><b>1</b></m:sample_add>'), headers={"Content-Type": "text/xml"})
        response = conn.getresponse()
        assert response.status == 200 and f">{n + 1}</return>".encode() in response.read()


@pytest.mark.parametrize("uri, logged", [
    (b"/soap?authkey=K1&x=1", "/soap?authkey=***&x=1"),
    (b"/soap?x=1&%61uthkey=K1&AuthKey=K2", "/soap?x=1&%61uthkey=***&AuthKey=***"),
    (b"/soap?authkey+=K1", "/soap?authkey+=***"),
    (b"/soap?a=\x1b[31m\xff", "/soap?a=?[31m\\xff"),
    (b"/soap", "/soap"),
])
def test_masked_uri_hides_every_spelling_of_authkey(uri, logged):
    """Any parameter the query parser reads as authkey is masked; control characters never reach the log."""
    assert masked_uri(uri) == logged


def test_percent_encoded_authkey_never_reaches_the_log(server):
    """``%61uthkey=KEY`` authenticates like authkey=KEY, so the access log masks it too."""
    status, _, _ = post(server, envelope('<m:sample_whoami xmlns:m="urn:x"/>'), path=f"/soap?%61uthkey={KEY}")
    assert status == 200
    assert KEY not in server.log() and "%61uthkey=***" in server.log()


class _Hello(ApiResource):
    def render_GET(self, request):
        return b"hello\n"


def _channel(clock):
    """An ApiSite connection on a StringTransport whose timers run on ``clock``."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport
    from twisted.web import resource

    from apiserver.config import BUILTIN_SECTIONS, Config

    root = resource.Resource()
    root.putChild(b"hello", _Hello())
    site = ApiSite(root, Config(BUILTIN_SECTIONS, {}, None), reactor=clock)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    channel = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 2082))
    channel.makeConnection(transport)
    return channel, transport


def test_trickled_request_is_cut_off_with_408():
    """A byte every few seconds keeps the idle timer alive, but the request as a whole must arrive in time."""
    clock = task.Clock()
    channel, transport = _channel(clock)
    for _ in range(REQUEST_TIMEOUT // 5 + 1):
        channel.dataReceived(b"X")  # never a whole header line
        clock.advance(5)
    assert transport.value().startswith(b"HTTP/1.1 408 ") and transport.disconnecting


def test_requests_on_a_kept_alive_connection_each_get_the_full_time():
    """The deadline covers one request: a connection serving several in sequence is not cut off."""
    clock = task.Clock()
    channel, transport = _channel(clock)
    for _ in range(3):
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        clock.advance(REQUEST_TIMEOUT - 1)
        channel.dataReceived(b"\r\n")
        clock.advance(REQUEST_TIMEOUT - 1)
    assert transport.value().count(b"HTTP/1.1 200 ") == 3 and b" 408 " not in transport.value()
    assert not transport.disconnecting


def test_overlong_header_line_gets_431_not_a_silent_close(server):
    """A header line past Twisted's line limit is answered 431 naming the limit."""
    answer = raw_exchange(server, b"GET /apnscp.wsdl HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"longer than 16384 bytes" in answer


class ChannelsOnly:
    """The part of ApiSite an ApiChannel uses when it connects and closes."""

    def __init__(self):
        self.channels = set()

    def channel_closed(self, channel):
        self.channels.discard(channel)


def bare_channel():
    """An ApiChannel of no listener, no idle timer (nothing on the global reactor)."""
    from apiserver.transport.http import ApiChannel

    channel = ApiChannel()
    channel.site, channel.timeOut = ChannelsOnly(), None
    return channel


def test_taken_headers_are_twisteds_and_never_reach_the_transport():
    """ApiChannel.take_headers returns exactly what Twisted writes (header values sanitised), writing nothing."""
    from twisted.internet.testing import StringTransport
    from twisted.web import http as twisted_http

    def answered(take: bool):
        channel, transport = bare_channel(), StringTransport()
        channel.makeConnection(transport)
        request = twisted_http.Request(channel)
        request.clientproto, request.method = b"HTTP/1.1", b"GET"
        request.setResponseCode(200)
        request.setHeader(b"Content-Length", b"5")
        request.setHeader(b"ETag", b'"1-2-5"\r\nInjected: yes')  # Twisted turns CR/LF into spaces
        request.responseHeaders.addRawHeader(b"X-Twice", b"a")
        request.responseHeaders.addRawHeader(b"X-Twice", b"b")
        taken = channel.take_headers(request) if take else request.write(b"")
        written = transport.value()
        channel.connectionLost(None)
        return taken, written, request.startedWriting

    taken, written, started = answered(take=True)
    twisted_taken, twisted_written, _ = answered(take=False)
    assert written == b"" and started and twisted_taken is None
    assert taken == twisted_written and b"\r\nInjected" not in taken and taken.endswith(b"\r\n\r\n")


def test_the_local_address_is_asked_once_per_connection():
    """ApiChannel.getHost asks its transport once; every later request gets the same address."""
    from twisted.internet.testing import StringTransport

    class CountingTransport(StringTransport):
        asked = 0

        def getHost(self):
            self.asked += 1
            return super().getHost()

    channel, transport = bare_channel(), CountingTransport()
    channel.makeConnection(transport)
    try:
        assert channel.getHost() is channel.getHost() and transport.asked == 1
    finally:
        channel.connectionLost(None)
