"""The HTTP layer every listener shares: body size limit, request deadline, no form parsing,
a quiet access log.

:class:`ApiRequest` keeps request bodies in memory (never a temporary file), refuses a body
over ``[soap] max_body_size`` with 413 as soon as the limit is known to be exceeded (at once
from ``Content-Length``, while counting for chunked bodies) and skips Twisted's parsing of
POST form bodies, which no API URL needs.  :class:`ApiSite` builds such requests and logs one
short line per request only when ``[core] access_log`` is on, with ``authkey`` masked.  Bodies
are never logged.  :class:`ApiChannel` (its connections) gives each request
:data:`REQUEST_TIMEOUT` seconds to arrive whole (408) and answers over-long header lines 431.

:class:`ApiResource` is the base of every resource (SOAP, WSDL, XML-RPC, UI login): 405 for
other methods, HEAD as GET, one last-resort answer (the API dialects' shared pipeline is
:class:`apiserver.transport.pipeline.CallResource`).  :func:`gate_refusal`, :func:`refuse`,
:func:`content_type_is`, :func:`credentials_of` and :func:`auth_request` are the first steps
they take, :func:`finish_with` the last.
"""

from __future__ import annotations

import io
import re
import time
from typing import Callable, Optional
import tempfile
from urllib.parse import unquote_to_bytes

from twisted.internet import defer, tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.errors import Denied
from apiserver.logs import masked_uri
from apiserver.transport.body_gate import BodyRefused, InFlightBodies, busy
from apiserver.transport.channel_shortcuts import ChannelShortcuts
from apiserver.transport.waitable import WaitableSet

log = Logger(namespace="apiserver.access")
resource_log = Logger(namespace="apiserver.transport")

# Twisted has no phrase for 429 and would send "Unknown Status".
http.RESPONSES.setdefault(429, b"Too Many Requests")
#: The Server header: the product, never a version a scanner could match against advisories.
SERVER_HEADER = b"apiserver"


#: The challenge of ``/dav/`` (clients send ``user@domain`` and the account's password).
DAV_CHALLENGE = 'Basic realm="apiserver DAV: user@domain", charset="UTF-8"'

class _Discard:
    """Stands in for the body of a refused request: swallows what the client still sends."""

    def write(self, data: bytes) -> None:
        pass

    def tell(self) -> int:
        return 0

    def seek(self, *args) -> int:
        return 0

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        pass


_SLASHES = re.compile(rb"/{2,}")

#: Bytes per second a DAV upload must keep up: each chunk received moves the request deadline
#: (:data:`REQUEST_TIMEOUT`) by its length at this rate, so large uploads are not cut at 60 s.
MIN_UPLOAD_RATE = 64 * 1024
#: DAV bodies above this size are spooled to a temporary file instead of memory.
SPOOL_ABOVE = 256 * 1024


def is_dav_path(path: bytes) -> bool:
    """The request path (as sent, query included) is ``/dav`` or below it."""
    path = path.split(b"?", 1)[0]
    return path == b"/dav" or path.startswith(b"/dav/")


class ApiRequest(server.Request):
    """A request whose body is capped at the site's ``max_body_size`` and kept in memory.

    From the moment it is processed until it is answered (or the client is gone) it counts as
    in flight on its site (what a graceful shutdown waits for); the transports note on it the
    dialect, function and fault for the metrics (:func:`note_call`, :func:`note_fault`).
    ``PUT`` under ``/dav/`` is the exception: capped at ``[dav] max_upload_size``, spooled to
    a temporary file (never held in memory) and given time in proportion to its size
    (:data:`MIN_UPLOAD_RATE`).  Any body under ``/dav/`` is read only once its request is
    admitted, and counts in the site's bodies in flight (:mod:`apiserver.transport.body_gate`).
    """

    _refused = False
    _received = 0
    started_at: Optional[float] = None
    api_dialect: Optional[str] = None
    api_function: Optional[str] = None
    api_fault: Optional[str] = None
    _upload = False
    _limit = 0
    _held = None            # while a DAV body waits for its admission: what arrived meanwhile
    _in_flight = None       # the site's InFlightBodies, for a DAV body
    _reserved = 0           # bytes of it counted there
    dav_context = None      # the CallContext of a DAV request admitted before its body
    body_in_use = False     # a thread reads ``content``: it closes it, not connectionLost

    def process(self):
        site = self.channel.site
        self.started_at = time.perf_counter()
        site.request_started(self)
        self.notifyFinish().addBoth(lambda _: site.request_ended(self))
        # Repeated slashes count as one, as under Apache (MergeSlashes): ClientExec asks for
        # //apnscp.wsdl.  Only the path resources see changes; ``uri`` keeps what was sent.
        if b"//" in self.path:
            self.path = _SLASHES.sub(b"/", self.path)
        super().process()

    def render(self, resrc):
        self.setHeader(b"server", SERVER_HEADER)  # Twisted's process() set its own versioned one
        super().render(resrc)

    def gotLength(self, length):
        """Refuse a declared body over the limit before any of it is read; hold a DAV body until
        its request is admitted (:mod:`apiserver.transport.body_gate`); else store it."""
        site = self.channel.site
        dav = is_dav_path(getattr(self.channel, "_path", None) or b"")
        self._upload = dav and self.method_sent() == b"PUT"
        self._limit = site.dav_upload_limit() if self._upload else site.max_body_size
        if length is not None and length > self._limit:
            self._refuse_too_large()
            return
        if dav and (length is None or length > 0) and site.admit_body is not None:
            self._hold_body(length, site)
            return
        self._store_body(length)

    def _store_body(self, length) -> None:
        if self._upload and (length is None or length > SPOOL_ABOVE):
            self.content = tempfile.TemporaryFile(prefix="apiserver-dav-")
        else:
            self.content = io.BytesIO()

    def _hold_body(self, length, site) -> None:
        """Stop reading the connection and ask the site's admission; the body waits for its answer."""
        self._held, self._held_version = [], None
        self._in_flight = site.bodies_in_flight
        expect = self.requestHeaders.getRawHeaders(b"expect")
        self._expects_continue = bool(expect) and expect[0].lower() == b"100-continue" and \
            getattr(self.channel, "_version", None) == b"HTTP/1.1"
        self.requestHeaders.removeHeader(b"Expect")  # Twisted would send "100 Continue" right away
        self.content = _Discard()
        self.channel.transport.pauseProducing()
        path = _SLASHES.sub(b"/", self.channel._path.split(b"?", 1)[0])
        self.path = path
        self.prepath, self.postpath = [b"dav"], [unquote_to_bytes(seg) for seg in path[1:].split(b"/")][1:]
        try:
            d = site.admit_body(self)
        except Exception as exc:  # a bug: answered as one, never left hanging
            d = defer.fail(exc)
        d.addCallbacks(self._body_admitted, self._body_refused, callbackArgs=(length,))

    def _body_admitted(self, context, length) -> None:
        if self._refused or self._disconnected:
            return
        if length is not None and not self._in_flight.take(length):
            self._body_refused(Failure(busy(length, self._in_flight.limit)))
            return
        self._reserved = length or 0
        self.notifyFinish().addBoth(self._release_body)
        self.dav_context = context
        held, self._held = self._held, None
        self._store_body(length)
        for data in held:
            self.handleContentChunk(data)
        if self._refused:
            return
        if self._expects_continue:
            self.channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._held_version is not None:  # the whole body came with the headers
            super().requestReceived(*self._held_version)
        else:
            self.channel.transport.resumeProducing()

    def _body_refused(self, failure) -> None:
        self._held = None
        if self._refused or self._disconnected:
            return
        error = failure.value
        if not isinstance(error, BodyRefused):
            resource_log.failure("admitting a request body failed", failure)
            error = BodyRefused(500, "the request failed on the server; the error was logged")
        self._refused = True
        self.channel.answer_and_close(error.status, http.RESPONSES.get(error.status, b"Error").decode("ascii"),
                                      error.message, error.headers)

    def _release_body(self, _) -> None:
        reserved, self._reserved = self._reserved, 0
        if reserved:
            self._in_flight.give_back(reserved)

    def write(self, data: bytes) -> None:
        """The answer has begun, so the body was used: give its share of the bound back now, not
        at ``finish`` (a WSGI answer's last step), which the client may not wait for."""
        if self._reserved and self._in_flight is not None:
            self._release_body(None)
        super().write(data)

    @property
    def body_length(self) -> int:
        """Bytes of the request body received so far (counted as they arrive)."""
        return self._received

    def method_sent(self) -> bytes:
        """The method of the request line (known before ``requestReceived`` sets ``method``)."""
        return getattr(self.channel, "_command", None) or b""

    def handleContentChunk(self, data: bytes) -> None:
        """Count what arrives (chunked bodies declare no length) and refuse past the limit."""
        if self._refused:
            return
        if self._held is not None:  # not admitted yet: what came with the headers waits in memory
            self._held.append(data)
            return
        self._received += len(data)
        if self._received > self._limit:
            self.content.close()
            self._refuse_too_large()
            return
        if self._in_flight is not None and self._received > self._reserved:
            if not self._in_flight.take(len(data)):  # a chunked body counts as it arrives
                self.content.close()
                self._body_refused(Failure(busy()))
                return
            self._reserved += len(data)
        if self._upload:
            self.channel.extend_deadline(len(data) / MIN_UPLOAD_RATE)
        self.content.write(data)

    def requestReceived(self, command, path, version):
        """Ignore the end of a body that was refused; wait for the admission of a held one."""
        if self._refused:
            return
        if self._held is not None:
            self._held_version = (command, path, version)
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason):
        """Twisted closes the body here; one a DAV thread still reads (``body_in_use``) is closed by
        that thread when done, so a client gone mid-request costs no error in it."""
        content = self.content
        if self.body_in_use:
            self.content = None
        super().connectionLost(reason)
        self.content = content

    def _refuse_too_large(self) -> None:
        self._refused = True
        self.content = _Discard()
        # Nothing of the body was wanted: no "100 Continue" after this answer.
        self.requestHeaders.removeHeader(b"Expect")
        what = "upload ([dav] max_upload_size)" if self._upload else "request body"
        self.channel.answer_and_close(413, "Payload Too Large", f"{what} larger than {self._limit} bytes")


#: Seconds a connection may stay silent (Twisted's default is 12 hours: a slow-client hazard).
IDLE_TIMEOUT = 60
#: Bytes dropped after a refusal (so a reset does not lose the answer) before the connection is cut.
DRAIN_LIMIT = 4 << 20
#: Seconds a refused request's connection is drained (the client reading its answer, then closing;
#: over TLS its close_notify) before it is cut, however little the client sends meanwhile.
DRAIN_TIMEOUT = 10
#: Seconds from the first byte of a request to its last.  The idle timeout restarts on every
#: byte, so without this a client sending a byte a minute holds a connection for hours.
REQUEST_TIMEOUT = 60


class ApiChannel(ChannelShortcuts, http.HTTPChannel):
    """The HTTP/1.1 connection of every API listener (HTTP/2 is never negotiated).

    On top of Twisted's: a request must arrive whole within :data:`REQUEST_TIMEOUT` (else 408),
    and an over-long request or header line gets 431 instead of a silent close; headers handed to
    a writer that sends into the socket itself (:class:`ChannelShortcuts`).
    """

    _request_deadline = None
    _draining = False  # a refused request was answered: what the client still sends is dropped
    _drained = 0
    _drain_deadline = None  # when the draining is given up (DRAIN_TIMEOUT)

    def dataReceived(self, data):
        if self._draining:
            self._drained += len(data)
            if self._drained > DRAIN_LIMIT:  # the answer has had its chance; take no more
                self.transport.abortConnection()
            return
        # While a request is handled, Twisted buffers what follows; its clock starts once read.
        if self._request_deadline is None and not self._handlingRequest:
            self._request_deadline = self.callLater(REQUEST_TIMEOUT, self._request_too_slow)
        super().dataReceived(data)

    def allContentReceived(self):
        self._cancel_deadline()
        super().allContentReceived()

    def connectionMade(self):
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason):
        self._cancel_deadline()
        if self._drain_deadline is not None and self._drain_deadline.active():
            self._drain_deadline.cancel()
        super().connectionLost(reason)
        self.site.channel_closed(self)

    def lineLengthExceeded(self, line):
        self.answer_and_close(431, "Request Header Fields Too Large",
                              f"request line or header line longer than {self.MAX_LENGTH} bytes")

    def _request_too_slow(self) -> None:
        self._request_deadline = None
        self.answer_and_close(408, "Request Timeout", f"the request did not arrive within {REQUEST_TIMEOUT} seconds")

    def extend_deadline(self, seconds: float) -> None:
        """Give the request being received ``seconds`` more to arrive whole (DAV uploads)."""
        if self._request_deadline is not None and self._request_deadline.active():
            self._request_deadline.delay(seconds)

    def _cancel_deadline(self) -> None:
        if self._request_deadline is not None:
            if self._request_deadline.active():
                self._request_deadline.cancel()
            self._request_deadline = None

    def answer_and_close(self, status: int, reason: str, message: str, headers: dict | None = None) -> None:
        """Answer a plain-text error for a request that will not be processed, then close.

        For refusals before a request reaches a resource (nothing else was written for it).
        Up to :data:`DRAIN_LIMIT` bytes the client still sends are dropped; a client that has not
        closed (over TLS: sent its close_notify) :data:`DRAIN_TIMEOUT` seconds after the answer is
        cut off, by a timer on the site's clock.
        """
        self._cancel_deadline()
        body = (message + "\n").encode("utf-8")
        extra = b"".join(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii"))
                         for name, value in (headers or {}).items())
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%s"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (status, reason.encode("ascii"), extra, len(body), body))
        if isinstance(self.transport, (tcp.Server, TLSMemoryBIOProtocol)):
            # Closing with unread data sends a reset that may destroy the answer: drop what the
            # client still sends (reading again if a body awaiting admission paused it).
            self._draining = True
            if self._drain_deadline is None:
                self._drain_deadline = self.callLater(DRAIN_TIMEOUT, self._give_up_draining)
            self.transport.resumeProducing()
        if isinstance(self.transport, tcp.Server):
            self.transport.loseWriteConnection()  # FIN after the answer; reading goes on
        else:
            self.loseConnection()  # TLS: close_notify, then Twisted reads on until the client closes
        if not self._draining and self.abortTimeout is not None and self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def _give_up_draining(self) -> None:
        """The client neither closed nor sent past DRAIN_LIMIT within DRAIN_TIMEOUT: cut it off."""
        self._drain_deadline = None
        self.transport.abortConnection()


class ApiSite(server.Site):
    """The Site of every API listener; ``max_body_size`` and the access log come from config."""

    requestFactory = ApiRequest
    protocol = ApiChannel
    noisy = False  # "Starting factory" lines say nothing the listening log line does not

    def __init__(self, resource, config, client_address: Optional[Callable] = None, **kwargs):
        kwargs.setdefault("timeout", IDLE_TIMEOUT)
        super().__init__(resource, parsePOSTFormSubmission=False, **kwargs)
        self._parsePOSTFormSubmission = False  # parsing form bodies costs ~45 us per POST
        self.config = config
        self.displayTracebacks = False
        #: request -> the client address the middleware decided (trusted proxies applied)
        self.client_address = client_address or (lambda request: getattr(request.getClientAddress(), "host", "-"))
        #: callables(request) told of every answered request (the metrics)
        self.request_observers: list = []
        self.in_flight = WaitableSet()
        self.channels = WaitableSet()  # open connections
        #: request -> Deferred of the CallContext of a DAV request, asked before its body is read
        #: (fails with BodyRefused); set by ``/dav/``, None: bodies are read at once
        self.admit_body: Optional[Callable] = None
        self.bodies_in_flight = InFlightBodies(lambda: config.get("dav", "max_bodies_in_flight"))

    @property
    def max_body_size(self) -> int:
        """``[soap] max_body_size``, read live (run time)."""
        return self.config.get("soap", "max_body_size")

    @property
    def access_log(self) -> bool:
        """``[core] access_log``, read live (run time)."""
        return self.config.get("core", "access_log")

    def request_started(self, request) -> None:
        self.in_flight.add(request)

    def request_ended(self, request) -> None:
        self.in_flight.discard(request)

    def channel_closed(self, channel) -> None:
        self.channels.discard(channel)

    def close_connections(self) -> defer.Deferred:
        """Close every connection once what was written to it is sent; fires when all are closed."""
        closed = self.channels.emptied()
        for channel in list(self.channels):
            channel.loseConnection()
        return closed

    def dav_upload_limit(self) -> int:
        """``[dav] max_upload_size`` right now (the largest PUT under ``/dav/``)."""
        return self.config.get("dav", "max_upload_size")

    def log(self, request) -> None:
        """Tell the observers; one line per request when ``[core] access_log`` is on: the client
        address the middleware decided, the connection's peer (a proxy) when it differs, keys
        masked, no body."""
        for observer in self.request_observers:
            try:
                observer(request)
            except Exception:
                resource_log.failure("a request observer failed")
        if not self.access_log:
            return
        peer = getattr(request.getClientAddress(), "host", "-")
        try:
            client = self.client_address(request)
        except Exception:
            client = peer
        log.info("{client}{via} {method} {uri} {code} {length}",
                 client=client, via="" if client == peer else f" via {peer}", proxy=peer,
                 method=request.method.decode("ascii", "replace"),
                 uri=masked_uri(request.uri or b"")[:300],
                 code=request.code, length=request.sentLength)


def note_call(request, dialect: str, function: Optional[str]) -> None:
    """Record on ``request`` which dialect and function it called (for the metrics)."""
    request.api_dialect, request.api_function = dialect, function


def note_site(ctx, request):
    """Record on ``request`` the site number the admitted caller ``ctx`` acts for (its traffic
    counts for that site's bandwidth); returns ``ctx``."""
    request.api_site_id = ctx.identity.site_id
    return ctx


def note_fault(request, code: str) -> None:
    """Record on ``request`` the fault code it was answered with (for the metrics)."""
    request.api_fault = code


# --- shared by the API resources (SOAP, XML-RPC, UI login) ---------------------------------

class ApiResource(resource.Resource):
    """A leaf resource answering the methods it has a ``render_<METHOD>`` for, HEAD as GET.

    Any other method gets :meth:`method_not_allowed` (405 with ``Allow``) instead of Twisted's
    HTML pages (501 "Huh?" for OPTIONS or PUT) or its HEAD fallback, which calls a
    ``render_GET`` that a POST-only resource does not have.
    """

    isLeaf = True

    def render(self, request):
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            handler = getattr(self, "render_GET", None)
        else:
            handler = getattr(self, "render_" + method, None)
        if handler is None:
            return self.method_not_allowed(request, self.allowed_methods())
        body = handler(request)
        if method == "HEAD" and isinstance(body, bytes):
            # The length of the GET answer, without Twisted's "HEAD returning a body" log line.
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body

    def allowed_methods(self) -> list[str]:
        """The methods this resource answers (HEAD wherever GET is)."""
        methods = {name[len("render_"):] for name in dir(type(self))
                   if name.startswith("render_") and name[len("render_"):].isupper()}
        methods.discard("HEAD")
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def method_not_allowed(self, request, allowed: list[str]) -> bytes:
        """The 405 answer: plain text naming the allowed methods."""
        return refuse(request, 405, f"method {request.method.decode('ascii', 'replace')[:20]} is not allowed "
                                    f"here; use {', '.join(allowed)}", {"allow": ", ".join(allowed)})

    def server_failure(self, request) -> bytes:
        """The answer when the server failed, in the resource's own format (plain text here)."""
        return refuse(request, 500, "the request failed on the server; the error was logged")

    def last_resort(self, failure, request) -> None:
        """The final errback of every deferred answer: log, and answer :meth:`server_failure` if
        nothing was sent yet, so a bug never leaves the client waiting or with an empty 500."""
        resource_log.failure("answering {method} {path} failed", failure, method=request.method, path=request.path)
        if answerable(request):
            finish_with(request, self.server_failure(request))


def refuse(request, status: int, message: str, headers: dict | None = None) -> bytes:
    """Answer a plain-text HTTP error (for refusals before any request body is read)."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode() if isinstance(name, str) else name,
                          value.encode() if isinstance(value, str) else value)
    return (message.rstrip("\n") + "\n").encode("utf-8")


def answerable(request) -> bool:
    """The client is still there and nothing of the answer has been sent yet."""
    return not (request._disconnected or request.finished or request.startedWriting)


def finish_with(request, body: bytes) -> None:
    """Send ``body`` as the whole answer of a request that returned NOT_DONE_YET (if still answerable)."""
    if not answerable(request):
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def gate_refusal(gatekeeper, request):
    """The API gate's refusal (``gatekeeper.check_http``) answered on ``request`` as bytes, or None
    when the request may go on."""
    refusal = gatekeeper.check_http(request)
    if refusal is None:
        return None
    return refuse(request, refusal.status, refusal.message, refusal.headers)


_UTF8_CHARSETS = (b"utf-8", b"utf8", b"us-ascii")  # ASCII is a subset: the body is read as UTF-8


def content_type_is(request, media_types) -> bool:
    """The request's Content-Type is one of ``media_types`` (lower case), charset UTF-8 or none."""
    raw = request.getHeader(b"content-type")
    if raw is None:
        return False
    parts = [p.strip().lower() for p in raw.split(b";")]
    if parts[0] not in media_types:
        return False
    for param in parts[1:]:
        name, _, value = param.partition(b"=")
        if name.strip() == b"charset" and value.strip().strip(b'"') not in _UTF8_CHARSETS:
            return False
    return True


def credentials_of(request) -> Credentials:
    """``?authkey=`` or the ``esprit_id`` cookie, as sent.

    Raises Denied for a repeated ``authkey``: which copy counts would be a guess, and a proxy
    or filter in front may have read the other one.
    """
    keys = request.args.get(b"authkey") if request.args else None
    if keys and len(keys) > 1:
        raise Denied("authkey is given more than once; send one API key")
    sid = request.received_cookies.get(b"esprit_id")
    return Credentials(
        api_key=keys[0].decode("utf-8", "replace") if keys else None,
        session_id=sid.decode("utf-8", "replace") if sid else None,
    )


def auth_request(gatekeeper, request, credentials: Credentials, gate: Gate = Gate.SOAP) -> AuthRequest:
    """What ``gatekeeper.admit`` needs: ``credentials`` at ``gate`` from the request's client address."""
    agent = request.getHeader(b"user-agent")
    return AuthRequest(gate=gate, address=gatekeeper.client_address(request),
                       credentials=credentials, secure=request.isSecure(),
                       user_agent=agent.decode("utf-8", "replace")[:512] if agent else None)
