"""A request refused over HTTPS while its body is still coming: the client reads the answer, not a reset."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl

import pytest

from twisted.internet import protocol, task
from twisted.internet.error import ConnectionDone
from twisted.internet.address import IPv4Address
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import resource

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.transport.http import DRAIN_LIMIT, DRAIN_TIMEOUT, ApiSite
from apiserver.transport.tls import server_context_factory
from tests.scopes.clients import certificate_path

#: Far more than the client's small send buffer and the server's unread receive window, less than DRAIN_LIMIT.
BODY = b"\0" * (3 * 1024 * 1024)
MAX_BODY = 64 * 1024
#: The client's SO_SNDBUF: the server must read for the body to leave, buffers cannot hide a stall.
SEND_BUFFER = 32 * 1024


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """One apiserver with HTTPS, a small [soap] max_body_size, and a block after three failed logins."""
    from tests.conftest import start_server

    server = start_server(str(tmp_path_factory.mktemp("tls-refusals")),
                          {"soap": {"max_body_size": str(MAX_BODY)}, "anvil": {"limit": "3", "min_attempts": "1000"}},
                          https=True)
    yield server
    server.stop()


def _tls_socket(server) -> ssl.SSLSocket:
    """A TLS connection to ``server``'s HTTPS port, verified, with a small send buffer."""
    context = ssl.create_default_context(cafile=certificate_path(server))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    raw.settimeout(60)  # past the server's DRAIN_TIMEOUT: a stalled server shows as a reset
    raw.connect(("127.0.0.1", int(server.https_url.rsplit(":", 1)[1])))
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _head(method: str, path: str, headers: dict, length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    return ("\r\n".join(lines + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode()


def _send_whole_body(server, method: str, path: str, headers: dict) -> tuple:
    """``method path`` with :data:`BODY` sent whole before anything is read, like http.client
    does; then the answer: (status, body).  A reset while sending or reading raises."""
    with _tls_socket(server) as sock:
        sock.sendall(_head(method, path, headers, len(BODY)) + BODY)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def test_oversized_soap_body_over_tls_gets_its_413(https_server):
    """A 3 MB POST over the 64 KB limit, sent whole by a client that reads only afterwards: 413 arrives."""
    status, body = _send_whole_body(https_server, "POST", f"/soap?authkey={https_server.admin_key}",
                                    {"Content-Type": "text/xml; charset=utf-8"})
    assert status == 413 and b"larger than" in body


def test_dav_uploads_with_wrong_credentials_over_tls_get_their_401_then_429(https_server):
    """3 MB DAV PUTs with a stranger's password, refused while their bodies wait for admission (the
    connection paused): the server reads on, each client sends its body whole and reads the answer,
    401 twice, then 429 as the third failure blocks the address."""
    token = base64.b64encode(b"nobody@nowhere.example:wrong-password").decode()
    headers = {"Authorization": f"Basic {token}", "X-Forwarded-For": "192.0.2.60"}
    statuses = [_send_whole_body(https_server, "PUT", "/dav/upload.bin", headers)[0] for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_client_sending_past_the_drain_limit_over_tls_is_cut_off(https_server):
    """After its 413 a client that keeps sending is cut off once DRAIN_LIMIT more bytes arrived."""
    size = 64 * DRAIN_LIMIT  # beyond DRAIN_LIMIT plus any kernel buffers (tcp_rmem's most is 32 MB here)
    piece = b"\0" * (256 * 1024)
    sent = 0
    with _tls_socket(https_server) as sock:
        sock.sendall(_head("POST", f"/soap?authkey={https_server.admin_key}", {"Content-Type": "text/xml"}, size))
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
        with pytest.raises(OSError):
            while sent < size:
                sock.sendall(piece)
                sent += len(piece)
    assert DRAIN_LIMIT // 2 < sent < size


class _Wire(StringTransport):
    """A StringTransport that takes the TCP option Twisted's HTTP channel sets."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class _TlsPair:
    """An ApiSite connection over TLS in memory: the server's TLS protocol and a client's, each on a
    StringTransport, bytes passed between them by :meth:`pump`; the site's timers on ``clock``."""

    def __init__(self, tmp_path, clock: task.Clock):
        config = Config(BUILTIN_SECTIONS, {"core": {"state_dir": str(tmp_path)},
                                           "soap": {"max_body_size": str(MAX_BODY)}}, None)
        site = ApiSite(resource.Resource(), config, reactor=clock)
        peer, host = IPv4Address("TCP", "127.0.0.1", 40000), IPv4Address("TCP", "127.0.0.1", 2083)
        self.clock = clock
        self.server = TLSMemoryBIOFactory(server_context_factory(config), False, site, clock).buildProtocol(peer)
        self.server_wire = _Wire(peerAddress=peer, hostAddress=host)
        self.received = []
        client_factory = protocol.Factory.forProtocol(protocol.Protocol)
        self.client = TLSMemoryBIOFactory(CertificateOptions(), True, client_factory, clock).buildProtocol(host)
        self.client_wire = _Wire(peerAddress=host, hostAddress=peer)
        self.server.makeConnection(self.server_wire)
        self.client.makeConnection(self.client_wire)
        self.client.wrappedProtocol.dataReceived = self.received.append
        self.pump()

    def pump(self) -> None:
        """Pass what each side wrote to the other until neither has more to say (the TLS
        transports' small writes go out on the clock's next turn: ``advance(0)``)."""
        self.clock.advance(0)
        while self.client_wire.value() or self.server_wire.value():
            to_server, to_client = self.client_wire.value(), self.server_wire.value()
            self.client_wire.clear()
            self.server_wire.clear()
            if to_server:
                self.server.dataReceived(to_server)
            if to_client:
                self.client.dataReceived(to_client)
            self.clock.advance(0)


def test_a_drained_tls_connection_is_given_up_at_the_drain_timeout_not_before(tmp_path):
    """After its 413 a TLS client that neither closes nor sends much is cut off DRAIN_TIMEOUT s later, not sooner."""
    clock = task.Clock()
    pair = _TlsPair(tmp_path, clock)
    pair.client.write(_head("POST", "/soap", {"Content-Type": "text/xml"}, 10 * MAX_BODY) + b"\0" * 1024)
    pair.pump()
    assert b"".join(pair.received).startswith(b"HTTP/1.1 413 ")
    assert pair.server.wrappedProtocol._draining
    clock.advance(DRAIN_TIMEOUT - 0.5)
    pair.client.write(b"\0" * 1024)  # a little more of the refused body: dropped, no reprieve
    pair.pump()
    assert not pair.server_wire.disconnected
    clock.advance(0.5)
    assert pair.server_wire.disconnected  # aborted: the client had its time to read and close


def test_a_tls_client_closing_in_time_is_not_aborted_later(tmp_path):
    """A TLS client that reads its 413 and closes within DRAIN_TIMEOUT leaves no give-up timer behind."""
    clock = task.Clock()
    pair = _TlsPair(tmp_path, clock)
    pair.client.write(_head("POST", "/soap", {"Content-Type": "text/xml"}, 10 * MAX_BODY))
    pair.pump()
    assert b"".join(pair.received).startswith(b"HTTP/1.1 413 ")
    clock.advance(DRAIN_TIMEOUT - 1)
    pair.client.loseConnection()  # its close_notify
    pair.pump()
    assert pair.server_wire.disconnecting and not pair.server_wire.disconnected
    pair.server.connectionLost(Failure(ConnectionDone()))  # as the reactor tells once the socket closed
    assert not [call for call in clock.getDelayedCalls() if call.active()]
    clock.advance(DRAIN_TIMEOUT)
    assert not pair.server_wire.disconnected
