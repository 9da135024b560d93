"""Plain DAV GETs served by the reactor: a file streamed with back-pressure, holding no thread
while the client does not read.

A GET without ``Range``, ``If-*`` headers or a body, of a path that does not end in ``/``, is
opened exactly as WsgiDAV's GET opens it (:func:`apiserver.dav.located.open_answer`: the same
checks, as the sites' owner), on a DAV thread or, on plain TCP once the account's root was
located, on the reactor (:mod:`apiserver.dav.located`);
anything else (a folder, a refusal, a conditional or partial GET) goes to WsgiDAV.  A small
file is read whole on that thread and written at once; a larger one is sent by
:class:`FileStream`: one block read on a DAV thread each time the connection can take more,
nothing while it cannot, the connection closed after :data:`STALLED_CLIENT_TIMEOUT` seconds
of a client reading nothing.  On plain TCP (no TLS) the file, whatever its size, is sent by
:class:`SocketStream` instead: straight from the reactor into the socket each time it can take
more (copied by the kernel from a mapping of the file, or with ``sendfile``: see
:mod:`apiserver.transport.file_senders`), no thread and no buffer in between; its status line
and headers go into the socket the same way (:meth:`SocketStream.start`), not through Twisted's
write buffer.
"""

from __future__ import annotations

import socket
from typing import Callable, Optional

from zope.interface import implementer

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from apiserver.transport.file_senders import FAILED, FULL, SHRANK, MappedSender, SendfileSender
from apiserver.transport.tcp_buffer import ConnectionBuffer

log = Logger(namespace="apiserver.dav")

#: Seconds a paused stream waits for its client to read before the connection is closed.
STALLED_CLIENT_TIMEOUT = 60
#: Bytes read per step of a stream.
STREAM_BLOCK = 256 * 1024
#: Bytes sent into one socket in one reactor turn at most, before other connections get theirs.
SEND_TURN = 4 * 1024 * 1024
#: Answers of at least this many bytes are copied from a mapping (unless ``[dav] sendfile``);
#: smaller ones go with one ``sendfile``, cheaper than mapping a window for them.
MAPPED_FROM = 1024 * 1024
#: ``TCP_NOTSENT_LOWAT`` of a socket a file is sent into: the kernel takes no more than this
#: beyond what the client's window lets out.  Bytes queued past the window are sent later from
#: the acknowledgements' path, on the client's own core when it is on this machine; this keeps
#: that work with the server (measured: 0.65x -> 0.76x of Apache for a 10 MB GET).
NOT_SENT_LOW = 1024 * 1024

_MSG_MORE = getattr(socket, "MSG_MORE", 0)

_CONDITIONS = (b"range", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
               b"if-range", b"if", b"content-length", b"transfer-encoding")


def plain_get_path(request) -> Optional[str]:
    """The DAV path of a GET the reactor may serve (see the module docstring), else None."""
    if request.method != b"GET" or any(request.requestHeaders.hasHeader(h) for h in _CONDITIONS):
        return None
    depth = request.getHeader(b"depth")
    if depth not in (None, b"0") or not request.postpath or request.postpath[-1] == b"":
        return None
    try:
        return "/" + "/".join(seg.decode("utf-8") for seg in request.postpath)
    except UnicodeDecodeError:
        return None


def plain_tcp_transport(request):
    """The TCP connection of ``request`` when its answer may be written straight into its socket
    (plain TCP, no TLS, still open), else None."""
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if (isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False)
            and not transport.disconnecting):
        return transport
    return None


def send_answer(request, answer, read_block: Callable, clock, use_sendfile: bool = False) -> None:
    """Send a :class:`apiserver.dav.wsgi.FileAnswer` as a 200 (its file closed when done); on plain
    TCP with ``sendfile`` when ``use_sendfile`` (``[dav] sendfile``) or the file is smaller than
    :data:`MAPPED_FROM`, else copied from a mapping."""
    request.setResponseCode(200)
    for name, value in answer.headers:
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    if answer.content is not None:
        request.write(answer.content)
        request.finish()
        return
    transport = plain_tcp_transport(request)
    if transport is not None:
        mapped = not use_sendfile and answer.size >= MAPPED_FROM
        sender = MappedSender(answer.fileobj) if mapped else SendfileSender(answer.fileobj)
        SocketStream(request, transport, answer.fileobj, answer.size, clock, sender).start()
    else:
        FileStream(request, answer.fileobj, answer.size, read_block, clock).start()


@implementer(IPushProducer)
class FileStream:
    """Writes ``size`` bytes of ``fileobj`` to ``request``, one block per step while the transport
    takes them; ``read_block(fileobj, n)`` reads on a thread and returns a Deferred."""

    def __init__(self, request, fileobj, size: int, read_block: Callable, clock,
                 stall_timeout: float = STALLED_CLIENT_TIMEOUT):
        self.request, self.fileobj, self.size = request, fileobj, size
        self._read_block, self._clock, self._stall_timeout = read_block, clock, stall_timeout
        self.sent = 0
        self._paused = self._reading = self._done = False
        self._stall = None

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._next()

    def _next(self) -> None:
        if self._paused or self._reading or self._done:
            return
        self._reading = True
        d = self._read_block(self.fileobj, min(STREAM_BLOCK, self.size - self.sent))
        d.addCallbacks(self._read, self._failed)

    def _read(self, data: bytes) -> None:
        self._reading = False
        if self._done:
            self._close()
            return
        if not data:  # the file shrank: its promised length cannot be kept
            log.info("DAV GET {path}: the file changed while it was sent; connection closed", path=self.request.path)
            self._end(complete=False)
            return
        data = data[:self.size - self.sent]
        self.sent += len(data)
        self.request.write(data)
        if self.sent >= self.size:
            self._end(complete=True)
        else:
            self._next()

    def _failed(self, failure) -> None:
        self._reading = False
        log.error("DAV GET {path}: reading failed: {error}", path=self.request.path,
                  error=failure.getErrorMessage()[:200])
        self._end(complete=False)

    def _end(self, complete: bool) -> None:
        self._done = True
        self._cancel_stall()
        self._close()
        request = self.request
        if request.channel is None:
            return
        request.unregisterProducer()
        if complete:
            request.finish()
        else:
            request.loseConnection()

    def _close(self) -> None:
        if not self._reading and not self.fileobj.closed:
            self.fileobj.close()

    # --- IPushProducer ---------------------------------------------------------------------
    def pauseProducing(self) -> None:
        self._paused = True
        if self._stall is None and not self._done:
            self._stall = self._clock.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_stall()
        self._next()

    def stopProducing(self) -> None:
        if not self._done:
            self._done = True
            self._cancel_stall()
            self._close()

    def _stalled(self) -> None:
        self._stall = None
        log.info("DAV GET {path}: the client read nothing for {seconds}s; connection closed",
                 path=self.request.path, seconds=self._stall_timeout)
        self._end(complete=False)

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None


class SocketStream(FileStream):
    """Sends ``size`` bytes of ``fileobj`` into the plain TCP connection ``transport`` with
    ``sender`` (:mod:`apiserver.transport.file_senders`): as much as the socket takes (at most
    :data:`SEND_TURN` per reactor turn), then it waits for the socket to be writable again, as
    Twisted's own buffer does (the transport pauses it and resumes it when writable).  A client
    that reads nothing holds no thread and no buffer, and is cut off after the stall timeout."""

    def __init__(self, request, transport, fileobj, size: int, clock, sender,
                 stall_timeout: float = STALLED_CLIENT_TIMEOUT):
        super().__init__(request, fileobj, size, None, clock, stall_timeout)
        self.transport = transport
        self.sender = sender
        self.buffer = ConnectionBuffer(transport)
        self._turn = None  # the next turn's call while the socket still takes data

    def start(self) -> None:
        channel = self.request.channel
        if not getattr(channel, "tcp_no_delay", False):  # once per connection: it stays set
            # As Apache does: no segment waits for an earlier one's acknowledgement (Nagle), so
            # the headers and the end of the file leave at once.
            self.transport.setTcpNoDelay(True)
            channel.tcp_no_delay = True
        if self.size > NOT_SENT_LOW:  # a smaller answer leaves in one turn anyway
            _tcp_option(self.transport, "TCP_NOTSENT_LOWAT", NOT_SENT_LOW)
        take_headers = getattr(channel, "take_headers", None)
        if take_headers is not None and self.size > 0 and not self.buffer.holds_bytes():
            self._send_headers(take_headers(self.request))
        else:
            self.request.write(b"")  # the status line and headers, into the transport's buffer
        super().start()

    def _send_headers(self, headers: bytes) -> None:
        """The status line and headers straight into the socket, held back (``MSG_MORE``) to leave
        in the file's first segment; what the socket does not take goes into the transport's
        buffer, sent first by :meth:`_next` as before.  Twisted's buffer is not used when it need
        not be: no registering for writability and unregistering again on every answer."""
        try:
            sent = self.transport.socket.send(headers, _MSG_MORE)
        except OSError:  # full, or broken: the transport's own write finds out and tells the request
            sent = 0
        if sent < len(headers):
            self.transport.write(headers[sent:])

    def _next(self) -> None:
        if self._paused or self._done:
            return
        transport = self.transport
        if transport.disconnected or self.request.channel is None:
            self.stopProducing()
            return
        corked = False
        if self.buffer.holds_bytes():  # the headers (or anything before) go first: now, not a turn later
            # Corked, they leave in the file's first segment, not in one of their own.
            corked = self.sent < self.size and _tcp_option(transport, "TCP_CORK", 1)
            if not self.buffer.send_now():
                if corked:
                    _tcp_option(transport, "TCP_CORK", 0)
                self._wait_writable()
                return
        outcome = self.sender.send(transport.fileno(), self.sent, self.size, SEND_TURN)
        if corked:
            _tcp_option(transport, "TCP_CORK", 0)
        self._sent(outcome)

    def _sent(self, outcome) -> None:
        """What the sender did."""
        count, state, error = outcome
        self.sent += count
        self.request.sentLength += count
        if state == SHRANK:  # the file shrank: its promised length cannot be kept
            log.info("DAV GET {path}: the file changed while it was sent; connection closed", path=self.request.path)
            self._end(complete=False)
            return
        if state == FAILED:  # the client is gone (EPIPE, ECONNRESET) or the file unreadable
            log.info("DAV GET {path}: sending stopped: {error}", path=self.request.path, error=error)
            self._end(complete=False)
            return
        if count and self.request.channel is not None:
            self.request.channel.resetTimeout()
        if self.sent >= self.size:
            self._end(complete=True)
        elif state == FULL:
            self._wait_writable()
        else:  # the socket takes more: the next turn goes on, after other connections had theirs
            self._turn = self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self._next()

    def _close(self) -> None:
        self.sender.close()  # the mapping goes before the file it maps
        super()._close()

    def stopProducing(self) -> None:
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        super().stopProducing()

    def _wait_writable(self) -> None:
        """Be paused until the socket is writable, as the connection pauses its own producer (the
        channel, which pauses this stream and starts its stall timer)."""
        self.buffer.pause_until_writable(self.pauseProducing)


def _tcp_option(transport, name: str, value: int) -> bool:
    """Set the TCP option ``name`` (``TCP_CORK``, ``TCP_NOTSENT_LOWAT``: Linux) of the connection;
    False where the system has no such option or refuses it."""
    option = getattr(socket, name, None)
    if option is None:
        return False
    try:
        transport.socket.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        return False
    return True
