"""The security middleware every gate shares, composed in one place: :class:`GateKeeper`.

Order, for every gate (SOAP, XML-RPC, UI, DAV, CLI socket)::

    client address     address.request_client_address (trusted proxies only)
    check_http         https_only, then the API toggle (SOAP)      -> HttpRefusal (403)
                       or the DAV toggle (DAV)
    admit              API toggle (SOAP gate), DAV toggle (DAV)    -> Client.Disabled
                       Anvil check: blocked?  delay?               -> Client.Throttled
                       (at gate DAV each such refusal counts again, reason "blocked")
                       accounts.authenticate                       -> AuthenticationFailed
                       (a password is hashed within its address's share, [auth]
                       hashes_per_address, and Anvil judges it again first)
                       IP restrictions of the identity             -> AuthenticationFailed("ip")
                       (neither Anvil nor restrictions for root on the CLI socket,
                       verified by SO_PEERCRED)
                       Anvil again: blocked meanwhile (a burst)?   -> Client.Throttled
                       the identity's site suspended?              -> Client.Denied, saying so
                       (not for the appliance administrator acting as the site)
                       any AuthenticationFailed is counted by Anvil before it reaches the
                       caller; the failure that starts a block answers Client.Throttled
                       -> CallContext

A refused address and a bad password raise the same error with the same message, so a
caller cannot tell them apart.  Only a caller whose credentials were right (and whose address
may log in) learns that its site is suspended.

Each part is built apart and handed in (``Anvil(clock, settings, fire, store)``,
``IPRestrictions(rows, clock, run_blocking, settings)``, ``HttpsOnly(settings)``); the
gatekeeper only composes them.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from apiserver.context import AuthRequest, CallContext, Gate, Identity
from apiserver.errors import ApiDisabled, AuthenticationFailed, Throttled
from apiserver.middleware.address import request_client_address
from apiserver.middleware.toggle import ApiToggle, DavToggle

__all__ = ["GateKeeper", "HttpRefusal"]


@dataclasses.dataclass(frozen=True)
class HttpRefusal:
    """An HTTP answer a plain-HTTP gate gives instead of handling the request."""

    status: int
    message: str
    headers: dict = dataclasses.field(default_factory=dict)


class GateKeeper:
    """Client address, HTTP checks and admission (Anvil, authentication, IP restrictions).

    ``settings``: the config (toggles, trusted proxies; read per request); ``accounts``: what
    authenticates credentials (:meth:`apiserver.accounts.Accounts.authenticate`); ``anvil``,
    ``ip_restrictions`` and ``https_only``: the checks; ``devices``: told of every admitted call
    (unrecognized-device notices); ``api``: the plugin API each :class:`CallContext` carries;
    ``suspensions``: refuses accounts of suspended sites
    (:class:`apiserver.lifecycle.suspension.SuspendedSites`; None: no such check).
    """

    def __init__(self, settings, accounts, anvil, ip_restrictions, https_only, devices, api, suspensions=None):
        self._settings = settings
        self._accounts = accounts
        self.anvil = anvil
        self.ip_restrictions = ip_restrictions
        self.https_only = https_only
        self._devices = devices
        self._api = api
        self._suspensions = suspensions
        self.toggle = ApiToggle(settings)
        self.dav_toggle = DavToggle(settings)

    def client_address(self, request) -> str:
        """The client address of a ``twisted.web`` request (``[core] http_trusted_forward`` applied)."""
        return request_client_address(request, self._settings.get("core", "http_trusted_forward"))

    def check_http(self, request, gate: Gate = Gate.SOAP) -> Optional[HttpRefusal]:
        """Why a request must be refused before its body is read, or None: plain HTTP under
        ``https_only``, then (for the API, gate SOAP: ``/soap``, ``/xmlrpc``, the WSDLs) the API
        toggle, both 403; for ``/dav/`` (gate DAV) the DAV toggle.  The UI login (gate UI) is not
        the API: the toggle does not close it."""
        reason = self.https_only.refusal(request)
        if reason is None and gate is Gate.SOAP:
            reason = self.toggle.refusal()
        elif reason is None and gate is Gate.DAV:
            reason = self.dav_toggle.refusal()
        return None if reason is None else HttpRefusal(403, reason)

    def api_enabled(self) -> bool:
        """``[soap] enabled`` right now."""
        return self.toggle.enabled()

    def admit(self, auth_request: AuthRequest) -> defer.Deferred:
        """Fires with the :class:`CallContext` of an authenticated, admitted request, or fails with
        ``ApiDisabled``, ``Throttled`` or ``AuthenticationFailed`` (see the module docstring)."""
        # Runs on every request of every gate: the common case (no Anvil delay, restrictions
        # cached) uses the Deferred of authentication alone, without nesting others in it.
        if auth_request.gate is Gate.SOAP and not self.toggle.enabled():
            return defer.fail(ApiDisabled(self.toggle.refusal()))
        if auth_request.gate is Gate.DAV and not self.dav_toggle.enabled():
            return defer.fail(ApiDisabled(self.dav_toggle.refusal()))
        if _is_kernel_verified_root(auth_request):
            # Nothing to guess: the kernel vouches for the caller.  Local failures counted
            # against the socket's address (an emptied whitelist) must not lock root out.
            return self._authenticate(None, auth_request)
        counted = auth_request.gate is Gate.DAV
        try:
            waiting = self.anvil.check_now(auth_request.address)
        except Throttled:
            return self._count_refused(Failure(), auth_request) if counted else defer.fail()
        if waiting is not None:
            if counted:
                waiting.addErrback(self._count_refused, auth_request)
            return waiting.addCallback(self._authenticate, auth_request)
        return self._authenticate(None, auth_request)

    def _authenticate(self, _, request: AuthRequest) -> defer.Deferred:
        d = self._accounts.authenticate(request.credentials, request.gate, request.address)
        d.addCallback(self._restrict, request)
        d.addErrback(self._count_failure, request)
        return d

    def _restrict(self, identity: Identity, request: AuthRequest):
        if _is_kernel_verified_root(request):
            # Kernel-verified root on the local socket has no network address to restrict, and
            # must be able to undo restrictions that lock every address out.
            return self._context(identity, request)
        waiting = self.ip_restrictions.check_now(identity, request.gate, request.address)
        if waiting is None:
            return self._unless_blocked_meanwhile(identity, request)
        return waiting.addCallback(lambda _: self._unless_blocked_meanwhile(identity, request))

    def _unless_blocked_meanwhile(self, identity: Identity, request: AuthRequest):
        # Attempts sent at once all pass the Anvil check before any of them fails.  Were the
        # ones that finish after their address got blocked answered by their credentials, a
        # burst would test any number of passwords; refused like the failures, they tell nothing.
        waiting = self.anvil.refuse_if_blocked_now(request.address)
        if waiting is None:
            return self._unless_suspended(identity, request)
        return waiting.addCallback(lambda _: self._unless_suspended(identity, request))

    def _unless_suspended(self, identity: Identity, request: AuthRequest):
        waiting = self._suspensions.check(identity) if self._suspensions is not None else None
        if waiting is None:
            return self._context(identity, request)
        return waiting.addCallback(lambda _: self._context(identity, request))

    def _count_failure(self, failure: Failure, request: AuthRequest) -> defer.Deferred:
        failure.trap(AuthenticationFailed)  # anything else (a database error) is no failed login
        d = self.anvil.fail(request.address, request.gate, failure.value.reason)
        return d.addCallback(lambda throttled: Failure(throttled) if throttled is not None else failure)

    def _count_refused(self, failure: Failure, request: AuthRequest) -> defer.Deferred:
        """A DAV attempt Anvil refused before its credentials (and body) were read counts once more
        (reason ``blocked``): a blocked client that keeps sending is seen, not only refused.  The
        block still ends ``ttl`` after it began; Throttled carries the time left."""
        failure.trap(Throttled)
        d = defer.maybeDeferred(self.anvil.fail, request.address, request.gate, "blocked")
        return d.addCallback(lambda throttled: Failure(throttled) if throttled is not None else failure)

    def _context(self, identity: Identity, request: AuthRequest) -> CallContext:
        credentials = request.credentials
        # Accounts.authenticate leaves only the credential that decided (a live session wins).
        session_id = credentials.session_id if credentials.api_key is None else None
        self._devices.admitted(identity, request)  # a dictionary look-up; a new device is checked on the pool
        return CallContext(self._api, identity, request.gate, request.address, session_id=session_id)


def _is_kernel_verified_root(request: AuthRequest) -> bool:
    """Root on the local cpcmd socket, its uid read from the kernel (SO_PEERCRED)."""
    return request.gate is Gate.CLI and request.credentials.peer_uid == 0
