"""The reactor side of plain DAV GETs: which requests it takes, and a stream that reads only while
the client takes data, closes a stalled connection after its timeout and its file in every case."""

from __future__ import annotations

import io

from twisted.internet import defer, task
from twisted.web.http_headers import Headers

from apiserver.transport.dav_files import STREAM_BLOCK, FileStream, plain_get_path


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
