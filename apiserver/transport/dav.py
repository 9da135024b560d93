"""``/dav/``: each account's site files over WebDAV (RFC 4918 classes 1 and 2), gate DAV.

On the reactor thread, for every request, in this order:

1. ``gatekeeper.check_http(request, Gate.DAV)``: ``https_only`` and ``[dav] enabled``
   (the ``apache.dav`` scope), 403 with the reason;
2. no path segment may decode to ``..`` or carry ``/``, ``\\`` or NUL (403), and the path must
   be UTF-8 (400);
3. HTTP Basic ``user@domain`` and the account's password (none or unreadable: 401 with the
   challenge, not counted), admitted by ``gatekeeper.admit`` at gate DAV like every gate: Anvil
   (429 with ``Retry-After``), the password (checked on the hashing pool; a verified one is
   remembered, see :mod:`apiserver.accounts.verified`) and the account's IP restrictions; a
   wrong password and a refused address are the same 401 and count in Anvil;
4. the request goes to WsgiDAV on the DAV thread pool (:mod:`apiserver.dav.wsgi`), which
   serves the site's home to its administrator and ``/home/<user>`` to a user of the site;
   its answer is sent as fast as the client takes it (:class:`Backpressure`); a plain GET of a
   file is opened there (or, on plain TCP once its account's root was located, on the reactor:
   :mod:`apiserver.dav.located`) and sent by the reactor, holding no thread while the client
   does not read (:mod:`apiserver.transport.dav_files`).  One site holds
   at most ``[core] account_threads`` of the DAV threads at once (its other requests wait,
   holding none): a site whose clients stall cannot take the threads of the others.

Steps 1 to 3 run before any of a request body is read (:meth:`DavResource.admit_body`, see
:mod:`apiserver.transport.body_gate`): a stranger's upload is refused without being stored.
The appliance administrator has no site home: its correct password gets 403 naming
``user@domain``.  Bodies: see :class:`apiserver.transport.http.ApiRequest` (PUT is spooled to
a temporary file and capped at ``[dav] max_upload_size``).
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from typing import Optional

from zope.interface import implementer

from twisted.internet import defer, threads
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import resource, server
from twisted.web.wsgi import WSGIResource

from apiserver.accounts.passwords import MAX_PASSWORD_LENGTH
from apiserver.context import Credentials, Gate
from apiserver.dav.located import MISSING, LocatedRoots
from apiserver.dav.wsgi import DavAccount, DavApplication
from apiserver.errors import ApiError, AuthenticationFailed, Throttled
from apiserver.module import Role
from apiserver.pools import KeyedSlots, share_of
from apiserver.transport.body_gate import BodyRefused
from apiserver.transport.dav_files import plain_get_path, plain_tcp_transport, send_answer
from apiserver.transport.http import DAV_CHALLENGE, answerable, auth_request, finish_with, note_site, refuse

log = Logger(namespace="apiserver.dav")

LOGIN_FAILED = "login failed: wrong user@domain or password, or this address may not log in"
NO_CREDENTIALS = "log in with HTTP Basic: user@domain and the account's password"
APPLIANCE_HAS_NO_SITE = ("the appliance administrator has no site home; log in as a site's administrator "
                         "or user (user@domain)")
DAV_OFF = "WebDAV is off for site {site} (its dav.enabled is 0)"
_MAX_AUTHORIZATION = 4096


def basic_credentials(request) -> Optional[Credentials]:
    """``user@domain`` and password from ``Authorization: Basic``, or None when absent or unreadable.

    The domain is what follows the last ``@``; without one the name is the appliance
    administrator's (who has no site home).  Credentials are UTF-8 (RFC 7617's charset).
    """
    raw = request.getHeader(b"authorization")
    if raw is None or len(raw) > _MAX_AUTHORIZATION:
        return None
    scheme, _, token = raw.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    login, sep, password = decoded.partition(":")
    if not sep or not login or len(password) > MAX_PASSWORD_LENGTH or "\x00" in decoded:
        return None
    user, at, domain = login.rpartition("@")
    if not at:
        return Credentials(username=login, site=None, password=password)
    if not user or not domain:
        return None
    return Credentials(username=user, site=domain, password=password)


def escapes_home(request) -> bool:
    """A path segment that decodes to ``..`` or holds a separator or NUL (``%2e%2e``, ``%2f``)."""
    return any(seg == b".." or b"/" in seg or b"\\" in seg or b"\x00" in seg for seg in request.postpath)


def path_is_utf8(request) -> bool:
    """The decoded path is UTF-8, as WebDAV clients send it (RFC 4918 8.3)."""
    try:
        b"/".join(request.postpath).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class DavResource(resource.Resource):
    """``/dav`` and everything below it (a leaf: WsgiDAV resolves the rest)."""

    isLeaf = True

    def __init__(self, gatekeeper, reactor, settings, site_homes, dav_app: Optional[DavApplication] = None,
                 pool: Optional[ThreadPool] = None, dav_access=None, dav_state=None):
        """``gatekeeper``: HTTP checks and admission at gate DAV; ``reactor``: where WsgiDAV's answers
        come back to; ``settings``: the config (``[dav] threads``, ``sendfile``); ``site_homes``: the homes served;
        ``dav_access``: which sites' ``dav.enabled`` lets them in (None: every site); ``dav_state``:
        where the sites' dead properties and locks live (:mod:`apiserver.dav.state`)."""
        super().__init__()
        self.dav_access = dav_access
        self.gatekeeper = gatekeeper
        self.reactor = reactor
        self.pool = pool or ThreadPool(minthreads=0, maxthreads=settings.get("dav", "threads"), name="apiserver-dav")
        self.dav_app = dav_app or DavApplication(site_homes, dav_state)
        self.located = LocatedRoots(self.dav_app, reactor)
        self.use_sendfile = lambda: settings.get("dav", "sendfile")
        self._started = False
        threads = settings.get("dav", "threads")
        #: each site holds at most its share of the DAV threads; its other requests wait behind it
        self.site_slots = KeyedSlots(lambda: share_of(threads, settings.get("core", "account_threads")))

    def _ensure_pool(self) -> None:
        if not self._started:
            self._started = True
            self.pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)

    def admission(self, request) -> defer.Deferred:
        """Steps 1 to 3 above: fires with the :class:`CallContext` of an admitted request, fails
        with :class:`BodyRefused` (a refusal before the credentials) or admission's errors."""
        refusal = self.gatekeeper.check_http(request, Gate.DAV)
        if refusal is not None:
            return defer.fail(BodyRefused(refusal.status, refusal.message, refusal.headers))
        if escapes_home(request):
            return defer.fail(BodyRefused(403, "the path leads out of the site's home"))
        if not path_is_utf8(request):
            return defer.fail(BodyRefused(400, "the path must be UTF-8 (percent-encoded)"))
        credentials = basic_credentials(request)
        if credentials is None:
            return defer.fail(BodyRefused(401, NO_CREDENTIALS, {"WWW-Authenticate": DAV_CHALLENGE}))
        return self.gatekeeper.admit(auth_request(self.gatekeeper, request, credentials, Gate.DAV))

    def admit_body(self, request) -> defer.Deferred:
        """:attr:`ApiSite.admit_body`: :meth:`admission` of a request whose body is not read yet;
        every refusal (the appliance administrator's 403 too) as :class:`BodyRefused`."""
        d = self.admission(request).addCallback(_with_site_home)
        return d.addErrback(lambda failure: failure if failure.check(BodyRefused) else Failure(refusal_of(failure)))

    def render(self, request):
        if request.dav_context is not None:  # admitted before its body was read
            self._admitted(request.dav_context, request)
            return server.NOT_DONE_YET
        d = self.admission(request)
        d.addCallbacks(self._admitted, self._refused, callbackArgs=(request,), errbackArgs=(request,))
        d.addErrback(self._last_resort, request)
        return server.NOT_DONE_YET

    def _admitted(self, ctx, request) -> None:
        if not answerable(request):
            return
        identity = note_site(ctx, request).identity
        if identity.role is Role.ADMIN or identity.site is None:
            finish_with(request, refuse(request, 403, APPLIANCE_HAS_NO_SITE))
            return
        allowed = True if self.dav_access is None else self.dav_access.allowed(identity.site_id)
        if allowed is not True:
            if allowed is False:
                finish_with(request, refuse(request, 403, DAV_OFF.format(site=identity.site)))
            else:  # not known yet: read, then go on
                allowed.addCallback(self._dav_checked, ctx, request)
                allowed.addErrback(self._last_resort, request)
            return
        self._serve(ctx, request)

    def _dav_checked(self, allowed: bool, ctx, request) -> None:
        if not answerable(request):
            return
        if not allowed:
            finish_with(request, refuse(request, 403, DAV_OFF.format(site=ctx.identity.site)))
            return
        self._serve(ctx, request)

    def _serve(self, ctx, request) -> None:
        identity = ctx.identity
        account = DavAccount(site=identity.site, user=identity.username if identity.role is Role.USER else None)
        self._ensure_pool()
        path = plain_get_path(request)
        if path is None:
            self._through_wsgidav(request, account)
            return
        # A plain GET on plain TCP, its root located recently: opened here and written straight
        # into the socket, no thread hop (see apiserver.dav.located).  Else opened on a DAV thread
        # within the site's share (which locates the root), sent by the reactor.
        read_small = plain_tcp_transport(request) is None
        if not read_small:
            answer = self.located.open_now(account, path)
            if answer is not MISSING:
                self._send_file(answer, request, account)
                return
        d = self.site_slots.run(account.site, lambda: threads.deferToThreadPool(
            self.reactor, self.pool, self.located.open_located, account, path, read_small))
        d.addCallback(self._send_file, request, account)
        d.addErrback(self._last_resort, request)

    def _send_file(self, answer, request, account) -> None:
        if answer is None:
            self._through_wsgidav(request, account)
        elif not answerable(request):
            if answer.fileobj is not None:
                answer.fileobj.close()
        else:
            send_answer(request, answer, self._read_block, self.reactor, self.use_sendfile())

    def _read_block(self, fileobj, size: int):
        return threads.deferToThreadPool(self.reactor, self.pool, fileobj.read, size)

    def _through_wsgidav(self, request, account: DavAccount) -> None:
        length = _body_length(request)
        dav_app, reactor = self.dav_app, self.reactor
        backpressure = Backpressure()
        request.registerProducer(backpressure, True)

        def application(environ, start_response):
            environ["apiserver.dav.account"] = account
            if length is not None:  # Twisted has de-chunked the body: tell WsgiDAV its length
                environ.pop("HTTP_TRANSFER_ENCODING", None)
                environ["CONTENT_LENGTH"] = str(length)
            try:
                result = dav_app(environ, start_response)
                try:
                    for chunk in result:
                        if not backpressure.wait_writable():
                            reactor.callFromThread(_drop, request)  # before WSGIResource's finish
                            return
                        yield chunk
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            finally:  # queued before WSGIResource's finish, which must find no producer
                reactor.callFromThread(_unregister, request)
                request.content.close()  # read to its end or no longer wanted (see body_in_use)

        slots, site = self.site_slots, account.site
        released = []

        def release(_=None):
            if not released:
                released.append(True)
                slots.release(site)

        def start(_):
            request.notifyFinish().addBoth(release)  # its thread is done by then (or the client gone)
            if request._disconnected:
                release()
                return
            request.body_in_use = True
            WSGIResource(reactor, self.pool, application).render(request)

        slots.acquire(site).addCallback(start).addErrback(self._last_resort, request)

    def _refused(self, failure, request) -> None:
        error = failure.value if failure.check(BodyRefused) else refusal_of(failure)
        finish_with(request, refuse(request, error.status, error.message, error.headers))

    def _last_resort(self, failure, request) -> None:
        log.failure("answering DAV {method} failed", failure, method=request.method)
        if answerable(request):
            finish_with(request, refuse(request, 500, "the request failed on the server; the error was logged"))


def refusal_of(failure) -> BodyRefused:
    """The answer to a request admission refused: 429 with ``Retry-After``, 401 with the challenge
    (a wrong password and a refused address alike), the error's own status, or 500 (logged)."""
    error = failure.value
    if isinstance(error, Throttled):
        return BodyRefused(429, error.message, {"Retry-After": str(max(1, int(error.retry_after)))})
    if isinstance(error, AuthenticationFailed):
        return BodyRefused(401, LOGIN_FAILED, {"WWW-Authenticate": DAV_CHALLENGE})
    if isinstance(error, ApiError) and error.http_status < 500:
        return BodyRefused(error.http_status, error.message)
    log.failure("a DAV request failed", failure)
    return BodyRefused(500, "the request failed on the server; the error was logged")


def _with_site_home(ctx):
    """The context of an identity with a site home; the appliance administrator's is refused."""
    if ctx.identity.role is Role.ADMIN or ctx.identity.site is None:
        raise BodyRefused(403, APPLIANCE_HAS_NO_SITE)
    return ctx


#: Seconds a DAV thread waits for a client that reads nothing before it gives up the answer.
STALLED_CLIENT_TIMEOUT = 60


@implementer(IPushProducer)
class Backpressure:
    """Holds a DAV thread while the connection's send buffer is full, so a large GET never piles
    up in memory: the transport pauses and resumes it (registered on the request), the thread
    calls :meth:`wait_writable` before each chunk."""

    def __init__(self, timeout: float = STALLED_CLIENT_TIMEOUT):
        self.timeout = timeout
        self._writable = threading.Event()
        self._writable.set()
        self.stopped = False

    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self.stopped = True
        self._writable.set()

    def wait_writable(self) -> bool:
        """Blocking (DAV thread).  True when the client may take more; False when it is gone or
        read nothing for ``timeout`` seconds (the answer is then abandoned)."""
        if not self._writable.wait(self.timeout):
            self.stopped = True
        return not self.stopped


def _drop(request) -> None:
    """Close the connection of an answer that was abandoned half-way (its length was promised)."""
    if getattr(request, "channel", None) is not None:
        request.loseConnection()


def _unregister(request) -> None:
    if getattr(request, "channel", None) is not None and request.producer is not None:
        request.unregisterProducer()


def _body_length(request) -> Optional[int]:
    """The received body's size when the client sent it chunked (no Content-Length), else None."""
    if request.getHeader(b"content-length") is not None:
        return None
    content = request.content
    try:
        content.seek(0, os.SEEK_END)
        size = content.tell()
        content.seek(0)
    except (OSError, ValueError):
        return None
    return size
