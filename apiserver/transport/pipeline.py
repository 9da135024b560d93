"""The request pipeline both API dialects share: admit, decode, call, encode; errors become faults.

:class:`CallResource` is the template of ``/soap`` and ``/xmlrpc``.  For every ``POST``::

    HTTP checks        gatekeeper.check_http: https_only, the API toggle   -> plain-text 403
    refuse_early       the dialect's own refusal (SOAP: Content-Type)      -> plain-text 4xx
    decode             the body to a call (notes the function for /metrics) -> fault
    answer_at_once     what needs no caller (XML-RPC's introspection)      -> its answer
    admit              gatekeeper.admit: toggle, Anvil, credentials, IP    -> fault
    invoke             registry.call as the admitted identity              -> fault
    encode             the result in the dialect                           -> fault

A dialect supplies the steps and how a fault looks (:meth:`CallResource.encode_fault`, with
the HTTP status of a fault); anything that is not an :class:`~apiserver.errors.ApiError` is
logged and answered as ``Server.Internal``, and a failure while encoding a fault is answered
once more as one, so a bug never leaves a client without an answer.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from apiserver.errors import ApiError, ServerError
from apiserver.transport.http import (
    ApiResource, auth_request, credentials_of, finish_with, gate_refusal, note_fault, note_site,
)

log = Logger(namespace="apiserver.transport")


class CallResource(ApiResource):
    """``POST`` a call in one dialect; see the module docstring.

    ``gatekeeper``: the HTTP checks and admission; ``registry``: the module functions.
    """

    #: the dialect's name in log lines
    dialect = "API"
    #: Content-Type of every answer in the dialect (results and faults)
    content_type = b"text/xml; charset=utf-8"
    #: HTTP status of a fault
    fault_status = 200
    #: the message of a ``Server.Internal`` fault for a request that failed before its call
    request_failed = ServerError().message
    #: the message of a ``Server.Internal`` fault for a call that failed with something not an ApiError
    call_failed = ServerError().message

    def __init__(self, gatekeeper, registry):
        super().__init__()
        self.gatekeeper = gatekeeper
        self.registry = registry

    # --- the steps a dialect supplies -----------------------------------------------------------
    def refuse_early(self, request) -> Optional[bytes]:
        """A plain-HTTP refusal before the body is decoded (``refuse(...)``), or None."""
        return None

    def decode(self, request) -> Any:
        """The call the body holds; raises ApiError.  Notes the function on ``request`` (``note_call``)."""
        raise NotImplementedError

    def answer_at_once(self, request, call) -> Optional[bytes]:
        """The answer to a call that needs no admission (introspection), or None."""
        return None

    def invoke(self, ctx, call) -> defer.Deferred:
        """Run ``call`` as the admitted ``ctx``."""
        raise NotImplementedError

    def encode(self, call, result) -> bytes:
        """The answer carrying ``result``; raises (an ApiError names why) when it cannot be sent."""
        raise NotImplementedError

    def encode_fault(self, error: ApiError) -> bytes:
        """The answer carrying ``error``."""
        raise NotImplementedError

    # --- the template ---------------------------------------------------------------------------
    def render_POST(self, request):
        try:
            return self._start(request)
        except Exception:
            log.failure("handling a {dialect} request failed", dialect=self.dialect)
            return self.fault_now(request, ServerError(self.request_failed))

    def _start(self, request):
        refused = gate_refusal(self.gatekeeper, request)
        if refused is None:
            refused = self.refuse_early(request)
        if refused is not None:
            return refused
        try:
            call = self.decode(request)
            answer = self.answer_at_once(request, call)
            if answer is not None:
                request.setHeader(b"content-type", self.content_type)
                return answer
            auth = auth_request(self.gatekeeper, request, credentials_of(request))
        except ApiError as error:
            return self.fault_now(request, error)
        d = self.gatekeeper.admit(auth)
        d.addCallback(note_site, request)
        d.addCallback(self.invoke, call)
        d.addCallback(lambda result: self.encode(call, result))
        d.addErrback(self._fault_for, request)
        d.addErrback(self._fault_for, request)  # encoding the fault failed: answer that as a server error
        d.addCallback(self._send, request)
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET

    def _fault_for(self, failure: Failure, request) -> bytes:
        error = failure.value
        if not isinstance(error, ApiError):
            log.failure("{dialect} call failed", failure, dialect=self.dialect)
            error = ServerError(self.call_failed)
        return self.fault_now(request, error)

    def fault_now(self, request, error: ApiError) -> bytes:
        """The fault answer to ``request`` for ``error`` (status, headers, body), noted for /metrics."""
        note_fault(request, error.code)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            request.setHeader(b"retry-after", str(int(retry_after)).encode("ascii"))
        request.setResponseCode(self.fault_status)
        request.setHeader(b"content-type", self.content_type)
        return self.encode_fault(error)

    def _send(self, body: bytes, request) -> None:
        request.responseHeaders.setRawHeaders(b"content-type", [self.content_type])
        finish_with(request, body)

    def server_failure(self, request) -> bytes:
        return self.fault_now(request, ServerError())
