"""The reactor side of plain DAV GETs: which requests it takes, and a stream that reads only while
the client takes data, closes a stalled connection after its timeout and its file in every case."""

from __future__ import annotations

import errno
import io
import mmap
import os
import socket

from twisted.internet import defer, task, tcp
from twisted.web.http_headers import Headers

from apiserver.transport import dav_files
import pytest

from apiserver.transport.dav_files import STREAM_BLOCK, FileStream, SocketStream, plain_get_path, plain_tcp_transport
from apiserver.dav.wsgi import FileAnswer
from apiserver.transport.file_senders import MappedSender, SendfileSender
from tests.transport.socket_pairs import tcp_pair


class FakeRequest:
    """What FileStream and plain_get_path use of a twisted.web request."""

    def __init__(self, method=b"GET", postpath=(b"a.txt",), headers=None):
        self.method, self.postpath, self.path = method, list(postpath), b"/dav/a.txt"
        self.requestHeaders = Headers({k: [v] for k, v in (headers or {}).items()})
        self.written, self.finished, self.lost, self.producer = [], False, False, None
        self.channel = object()
        self._finish = defer.Deferred()

    def getHeader(self, name):
        return self.requestHeaders.getRawHeaders(name, [None])[0]

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.requestHeaders.setRawHeaders(b"answer-" + name, [value])

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.written.append(data)

    def finish(self):
        self.finished = True

    def loseConnection(self):
        self.lost = True

    def notifyFinish(self):
        return self._finish


def test_only_plain_gets_of_files_are_taken():
    """GET of a file without Range, If-* or a body is taken; HEAD, folders, conditions and ranges are not."""
    assert plain_get_path(FakeRequest(postpath=(b"var", b"x.txt"))) == "/var/x.txt"
    for request in (FakeRequest(method=b"HEAD"), FakeRequest(postpath=(b"var", b"")),
                    FakeRequest(headers={b"range": b"bytes=0-1"}), FakeRequest(headers={b"if-none-match": b'"x"'}),
                    FakeRequest(headers={b"depth": b"1"}), FakeRequest(postpath=(b"\xff",))):
        assert plain_get_path(request) is None


def reads_counted(calls):
    def read_block(fileobj, size):
        calls.append(size)
        return defer.succeed(fileobj.read(size))
    return read_block


def test_a_stream_reads_only_while_the_client_takes_data():
    """Paused: no block is read; resumed: the rest follows; the file is closed and the request finished."""
    data = bytes(range(256)) * (3 * STREAM_BLOCK // 256 + 10)
    fileobj, calls, clock = io.BytesIO(data), [], task.Clock()
    request = FakeRequest()
    stream = FileStream(request, fileobj, len(data), reads_counted(calls), clock)
    request.write = lambda chunk: (request.written.append(chunk), stream.pauseProducing())  # buffer full
    stream.start()
    assert len(calls) == 1 and len(request.written) == 1
    clock.advance(30)
    assert len(calls) == 1  # nothing read while the client reads nothing
    for _ in range(4):
        stream.resumeProducing()
    assert b"".join(request.written) == data and request.finished and fileobj.closed
    assert not clock.getDelayedCalls()


def test_a_stalled_client_is_cut_off_and_the_file_closed():
    """A client that reads nothing for the timeout loses its connection; the file is closed."""
    data = b"x" * (2 * STREAM_BLOCK)
    fileobj, clock = io.BytesIO(data), task.Clock()
    request = FakeRequest()
    stream = FileStream(request, fileobj, len(data), reads_counted([]), clock, stall_timeout=60)
    request.write = lambda chunk: (request.written.append(chunk), stream.pauseProducing())
    stream.start()
    clock.advance(59)
    assert not request.lost
    clock.advance(2)
    assert request.lost and not request.finished and fileobj.closed


def test_a_client_gone_stops_the_stream_and_closes_the_file():
    """stopProducing (connection lost) ends the stream at once; a file that shrank closes the connection."""
    fileobj = io.BytesIO(b"y" * (2 * STREAM_BLOCK))
    request = FakeRequest()
    stream = FileStream(request, fileobj, 2 * STREAM_BLOCK, reads_counted([]), task.Clock())
    request.write = lambda chunk: (request.written.append(chunk), stream.pauseProducing())
    stream.start()
    stream.stopProducing()
    assert fileobj.closed and len(request.written) == 1
    short = FakeRequest()
    FileStream(short, io.BytesIO(b"z" * 10), 100, reads_counted([]), task.Clock()).start()
    assert short.lost and not short.finished


class SocketTransport(tcp.Connection):
    """The parts of Twisted's TCP connection SocketStream uses, on a real non-blocking socket;
    :meth:`writable` does what the reactor's ``doWrite`` does once the buffer is sent."""

    def __init__(self, sock, channel):  # no reactor: the test plays it
        self.socket, self.producer = sock, channel
        self.dataBuffer, self.offset, self._tempDataLen = b"", 0, 0
        self.disconnected = self.disconnecting = self.writing = self.producerPaused = False

    def fileno(self):
        return self.socket.fileno()

    def startWriting(self):
        self.writing = True

    def doWrite(self):  # nothing buffered in these tests: the headers are written by FakeRequest
        return None

    def writable(self):
        self.writing = False
        if self.producerPaused:
            self.producerPaused = False
            self.producer.resumeProducing()


class FakeChannel:
    """HTTPChannel's part: it forwards the transport's pause and resume to the request's producer."""

    def __init__(self, request):
        self.request, self.timeouts_reset = request, 0

    def pauseProducing(self):
        self.request.producer.pauseProducing()

    def resumeProducing(self):
        if self.request.producer is not None:
            self.request.producer.resumeProducing()

    def resetTimeout(self):
        self.timeouts_reset += 1


def socket_request():
    request = FakeRequest()
    request.sentLength = 0
    request.channel = FakeChannel(request)
    return request


#: Both ways of moving the file's bytes: the kernel's copy from a mapping, and sendfile.
SENDERS = pytest.mark.parametrize("sender", [MappedSender, SendfileSender], ids=["mapped", "sendfile"])


def read_available(sock) -> bytes:
    sock.setblocking(False)
    parts = []
    try:
        while chunk := sock.recv(1 << 20):
            parts.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(parts)


@SENDERS
def test_socket_stream_sends_only_while_the_socket_takes_data(tmp_path, sender):
    """Sent until the socket is full, then paused (stall timer on) until writable; all of the file arrives."""
    data = os.urandom(8 * 1024 * 1024)
    (tmp_path / "f").write_bytes(data)
    server, client = tcp_pair()
    request, clock = socket_request(), task.Clock()
    transport = SocketTransport(server, request.channel)
    fileobj = open(tmp_path / "f", "rb")
    stream = SocketStream(request, transport, fileobj, len(data), clock, sender(fileobj))
    try:
        stream.start()
        assert 0 < stream.sent < len(data)  # the socket's buffer is far smaller than the file
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == dav_files.NOT_SENT_LOW
        assert transport.producerPaused and transport.writing and len(clock.getDelayedCalls()) == 1
        sent_while_unread = stream.sent
        clock.advance(30)
        assert stream.sent == sent_while_unread and not request.lost  # nothing more while unread
        received = []
        for _ in range(100000):
            received.append(read_available(client))
            if request.finished:
                break
            transport.writable()
        received.append(read_available(client))
        assert b"".join(received) == data and request.finished and fileobj.closed
        assert request.sentLength == len(data) and request.producer is None and not clock.getDelayedCalls()
    finally:
        server.close(), client.close(), fileobj.close()


@SENDERS
def test_socket_stream_gives_other_connections_a_turn(tmp_path, monkeypatch, sender):
    """While the socket takes data, each turn sends at most SEND_TURN and the next follows on the clock."""
    monkeypatch.setattr(dav_files, "SEND_TURN", 16 * 1024)
    data = os.urandom(64 * 1024)
    (tmp_path / "f").write_bytes(data)
    server, client = tcp_pair(send_buffer=1024 * 1024)
    request, clock = socket_request(), task.Clock()
    transport = SocketTransport(server, request.channel)
    fileobj = open(tmp_path / "f", "rb")
    try:
        stream = SocketStream(request, transport, fileobj, len(data), clock, sender(fileobj))
        stream.start()
        assert stream.sent == 16 * 1024 and not request.finished
        assert not transport.producerPaused and len(clock.getDelayedCalls()) == 1  # the next turn, no stall timer
        clock.advance(0)  # runs the turns due now, one after another
        assert stream.sent == len(data) and request.finished and not clock.getDelayedCalls()
        assert read_available(client) == data and fileobj.closed
    finally:
        server.close(), client.close(), fileobj.close()


@SENDERS
def test_socket_stream_to_a_client_that_reads_nothing_is_cut_off(tmp_path, sender):
    """A client that reads nothing for the stall timeout loses its connection; the file is closed."""
    (tmp_path / "f").write_bytes(b"x" * (4 * 1024 * 1024))
    server, client = tcp_pair()
    request, clock = socket_request(), task.Clock()
    fileobj = open(tmp_path / "f", "rb")
    try:
        SocketStream(request, SocketTransport(server, request.channel), fileobj, 4 * 1024 * 1024, clock,
                     sender(fileobj), stall_timeout=60).start()
        clock.advance(59)
        assert not request.lost
        clock.advance(2)
        assert request.lost and not request.finished and fileobj.closed
    finally:
        server.close(), client.close(), fileobj.close()


@SENDERS
def test_socket_stream_of_a_file_that_shrank_closes_the_connection(tmp_path, sender):
    """A file shorter than the length promised ends the answer with a closed connection, never a finish."""
    (tmp_path / "f").write_bytes(b"z" * 1000)
    server, client = tcp_pair()
    request = socket_request()
    fileobj = open(tmp_path / "f", "rb")
    try:
        SocketStream(request, SocketTransport(server, request.channel), fileobj, 2000, task.Clock(),
                     sender(fileobj)).start()
        assert request.lost and not request.finished and fileobj.closed
        assert read_available(client) == b"z" * 1000
    finally:
        server.close(), client.close(), fileobj.close()


def test_straight_into_the_socket_only_on_plain_tcp():
    """Plain TCP is written into straight; TLS, a closing connection or another transport keep the read stream."""
    server, client = tcp_pair()
    try:
        request = socket_request()
        transport = SocketTransport(server, request.channel)
        request.channel.transport = transport
        assert plain_tcp_transport(request) is transport
        transport.TLS = True
        assert plain_tcp_transport(request) is None
        transport.TLS, transport.disconnecting = False, True
        assert plain_tcp_transport(request) is None
        request.channel.transport = object()
        assert plain_tcp_transport(request) is None
    finally:
        server.close(), client.close()


class BufferingTransport(SocketTransport):
    """SocketTransport with Twisted's own buffer and doWrite: what the request wrote first is sent by them."""

    doWrite = tcp.Connection.doWrite

    def stopWriting(self):
        self.writing = False


@SENDERS
def test_buffered_headers_leave_corked_with_the_file_and_the_cork_is_removed(tmp_path, sender):
    """Headers still buffered go first, corked with the file's first bytes; the socket is uncorked after."""
    data = os.urandom(64 * 1024)
    (tmp_path / "f").write_bytes(data)
    server, client = tcp_pair(send_buffer=1024 * 1024)
    request, clock = socket_request(), task.Clock()
    transport = BufferingTransport(server, request.channel)
    transport.streamingProducer = True  # the channel, as Twisted registers it
    transport._tempDataBuffer, transport._tempDataLen = [b"HTTP/1.1 200 OK\r\n\r\n"], 19
    fileobj = open(tmp_path / "f", "rb")
    try:
        SocketStream(request, transport, fileobj, len(data), clock, sender(fileobj)).start()
        assert request.finished and fileobj.closed
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) != dav_files.NOT_SENT_LOW  # small
        received = b""
        for _ in range(1000):
            received += read_available(client)
            if len(received) >= 19 + len(data):
                break
        assert received == b"HTTP/1.1 200 OK\r\n\r\n" + data
    finally:
        server.close(), client.close(), fileobj.close()


def mapped(path) -> bool:
    """``path`` is mapped into this process now."""
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        return any(line.rstrip().endswith(str(path)) for line in maps)


def test_a_file_truncated_while_mapped_ends_the_answer_and_the_server_lives(tmp_path):
    """Truncated mid-answer: the kernel's copy fails (no SIGBUS), the connection is closed, nothing stays mapped."""
    path = tmp_path / "f"
    path.write_bytes(os.urandom(8 * 1024 * 1024))
    server, client = tcp_pair()
    request, clock = socket_request(), task.Clock()
    transport = SocketTransport(server, request.channel)
    fileobj = open(path, "rb")
    try:
        stream = SocketStream(request, transport, fileobj, 8 * 1024 * 1024, clock, MappedSender(fileobj))
        stream.start()
        assert 0 < stream.sent < 1024 * 1024 and mapped(path)  # paused inside the first window
        os.truncate(path, 4096)
        for _ in range(1000):
            read_available(client)
            if request.lost:
                break
            transport.writable()
        assert request.lost and not request.finished and fileobj.closed and not mapped(path)
        assert stream.sent < 8 * 1024 * 1024
    finally:
        server.close(), client.close(), fileobj.close()


def test_a_mapped_sender_moves_window_by_window_and_a_file_shorter_than_the_next_window_shrank(tmp_path):
    """Windows follow one another with the right bytes; a file cut before the next window ends in SHRANK."""
    data = os.urandom(256 * 1024)
    path = tmp_path / "f"
    path.write_bytes(data)
    server, client = tcp_pair(send_buffer=1024 * 1024)
    fileobj = open(path, "rb")
    sender = MappedSender(fileobj, window=64 * 1024)
    try:
        count, state, _ = sender.send(server.fileno(), 0, len(data), 128 * 1024)
        assert (count, state) == (128 * 1024, "more")  # two windows, the budget spent
        assert read_available(client) == data[:128 * 1024]
        os.truncate(path, 100 * 1024)
        count, state, _ = sender.send(server.fileno(), 128 * 1024, len(data), 128 * 1024)
        assert (count, state) == (0, "shrank")
        sender.close()
        assert not mapped(path)
    finally:
        sender.close(), server.close(), client.close(), fileobj.close()


def test_large_answers_are_copied_from_a_mapping_small_ones_and_the_sendfile_setting_use_sendfile(monkeypatch):
    """From MAPPED_FROM bytes a mapping (unless [dav] sendfile); below it, or with the setting, sendfile."""
    chosen = []
    monkeypatch.setattr(dav_files, "plain_tcp_transport", lambda request: object())
    monkeypatch.setattr(dav_files, "SocketStream", lambda *args: chosen.append(type(args[-1])) or FakeStart())
    with open(__file__, "rb") as fileobj:
        for size, use_sendfile in ((dav_files.MAPPED_FROM, False), (dav_files.MAPPED_FROM - 1, False),
                                   (dav_files.MAPPED_FROM, True)):
            answer = FileAnswer(fileobj=fileobj, size=size, headers=[])
            dav_files.send_answer(socket_request(), answer, None, task.Clock(), use_sendfile)
    assert chosen == [MappedSender, SendfileSender, SendfileSender]


class FakeStart:
    """A stream that is only started."""

    def start(self):
        return None


class TakingChannel(FakeChannel):
    """A channel that hands its headers over (ApiChannel.take_headers) and counts how often."""

    HEADERS = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n"

    def __init__(self, request):
        super().__init__(request)
        self.taken = 0

    def take_headers(self, request):
        self.taken += 1
        request.write(b"")
        return self.HEADERS


class NoDelayCounted(BufferingTransport):
    """BufferingTransport counting its setTcpNoDelay calls."""

    no_delay_set = 0

    def setTcpNoDelay(self, enabled):
        self.no_delay_set += 1
        super().setTcpNoDelay(enabled)


@SENDERS
def test_taken_headers_go_straight_into_the_socket_and_no_delay_is_set_once(tmp_path, sender):
    """Headers taken from the channel go into the socket unbuffered, then the file; TCP_NODELAY once per connection."""
    data = os.urandom(64 * 1024)
    (tmp_path / "f").write_bytes(data)
    server, client = tcp_pair(send_buffer=1024 * 1024)
    request = socket_request()
    request.channel = channel = TakingChannel(request)
    transport = NoDelayCounted(server, channel)
    transport.streamingProducer = True
    transport._tempDataBuffer = []
    try:
        for _ in range(2):  # two answers on one connection
            request.finished = False
            fileobj = open(tmp_path / "f", "rb")
            SocketStream(request, transport, fileobj, len(data), task.Clock(), sender(fileobj)).start()
            assert request.finished and fileobj.closed and not transport.writing
            received = b""
            for _ in range(1000):
                received += read_available(client)
                if len(received) >= len(TakingChannel.HEADERS) + len(data):
                    break
            assert received == TakingChannel.HEADERS + data
        assert channel.taken == 2 and transport.no_delay_set == 1
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    finally:
        server.close(), client.close()


def test_headers_the_socket_does_not_take_are_buffered_and_leave_first(tmp_path):
    """A full socket takes none of the taken headers: they wait in Twisted's buffer and arrive before the file."""
    data = os.urandom(256 * 1024)
    (tmp_path / "f").write_bytes(data)
    server, client = tcp_pair()
    request = socket_request()
    request.channel = channel = TakingChannel(request)
    transport = BufferingTransport(server, channel)
    transport.streamingProducer = transport.connected = True
    transport._tempDataBuffer = []
    filler = b""
    try:
        while True:  # the client reads nothing yet: fill the socket
            try:
                filler += b"f" * server.send(b"f" * 65536)
            except BlockingIOError:
                break
        fileobj = open(tmp_path / "f", "rb")
        stream = SocketStream(request, transport, fileobj, len(data), task.Clock(), SendfileSender(fileobj))
        stream.start()
        assert stream.sent == 0 and transport._tempDataLen + len(transport.dataBuffer) > 0
        received = []
        for _ in range(100000):
            received.append(read_available(client))
            if request.finished:
                break
            transport.doWrite()
            transport.writable()
        received.append(read_available(client))
        assert b"".join(received) == filler + TakingChannel.HEADERS + data and fileobj.closed
    finally:
        server.close(), client.close()


def test_a_file_that_cannot_be_mapped_is_sent_with_sendfile(tmp_path, monkeypatch):
    """A file system without mmap (ENODEV): the whole file still arrives, sent with sendfile."""
    def no_mmap(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    data = os.urandom(300 * 1024)
    (tmp_path / "f").write_bytes(data)
    server, client = tcp_pair(send_buffer=1024 * 1024)
    fileobj = open(tmp_path / "f", "rb")
    sender = MappedSender(fileobj)
    try:
        count, state, _ = sender.send(server.fileno(), 0, len(data), len(data))
        assert (count, state) == (len(data), "more")
        assert read_available(client) == data
    finally:
        sender.close(), server.close(), client.close(), fileobj.close()
