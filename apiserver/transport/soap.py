"""``/soap``: SOAP 1.1 over HTTP, both dialects, on the reactor thread without Spyne.

Per request: the gate check (``app.gatekeeper.check_http``), Content-Type, decoding
(:mod:`apiserver.transport.soap_codec`), ``app.admit`` with the ``authkey`` query argument or
the ``esprit_id`` cookie, ``app.call``, and the response or fault in the request's dialect.
Faults are HTTP 500 with a SOAP body, as SOAP 1.1 requires; nothing answers an empty 500.
``GET /soap?wsdl`` serves the RPC-style WSDL; other GETs get 405.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from apiserver.errors import ApiError, ServerError
from apiserver.transport.http import (
    ApiResource, auth_request, content_type_is, credentials_of, finish_with, gate_refusal, note_call, note_fault, refuse,
)
from apiserver.transport.soap_codec import decode_request, encode_fault, encode_response
from apiserver.transport.wsdl import DOCUMENT_STYLE, RPC_STYLE, WsdlCache, request_location

log = Logger(namespace="apiserver.soap")

_XML_CONTENT_TYPES = (b"text/xml", b"application/soap+xml", b"application/xml")
_RESPONSE_TYPE = [b"text/xml; charset=utf-8"]


def content_type_ok(request) -> bool:
    """text/xml, application/soap+xml or application/xml, charset UTF-8 or none."""
    return content_type_is(request, _XML_CONTENT_TYPES)


def wants_wsdl(request) -> bool:
    """``?wsdl`` (any case, with or without a value) in the query string."""
    _, _, query = request.uri.partition(b"?")
    return any(part.split(b"=", 1)[0].lower() == b"wsdl" for part in query.split(b"&"))


def serve_wsdl(app, cache: WsdlCache, request, style: str) -> bytes:
    """The WSDL of ``style`` whose ``soap:address`` names the URL the client used."""
    request.setHeader(b"content-type", b"text/xml; charset=utf-8")
    return cache.get(style, request_location(request, app.config.get("core", "http_trusted_forward")))


class SoapResource(ApiResource):
    """``POST /soap`` in both dialects, ``GET /soap?wsdl``."""

    def __init__(self, app, wsdl_cache: WsdlCache):
        super().__init__()
        self.app = app
        self.wsdl_cache = wsdl_cache
        self._lookup = app.registry.lookup

    def render_GET(self, request):
        refused = gate_refusal(self.app, request)
        if refused is not None:
            return refused
        if wants_wsdl(request):
            return serve_wsdl(self.app, self.wsdl_cache, request, RPC_STYLE)
        request.setHeader(b"allow", b"POST")
        return refuse(request, 405, "use POST for SOAP calls, or GET /soap?wsdl for the WSDL")

    def render_POST(self, request):
        try:
            return self._start_call(request)
        except Exception:
            log.failure("handling a SOAP request failed")
            return self._fault_body(request, ServerError("the request failed on the server; the error was logged"))

    def _start_call(self, request):
        app = self.app
        refused = gate_refusal(app, request)
        if refused is not None:
            return refused
        if not content_type_ok(request):
            return refuse(request, 415, "SOAP requests need Content-Type text/xml (charset UTF-8)")
        try:
            call = decode_request(request.content.read(), self._lookup)
            note_call(request, f"soap-{call.dialect}".lower(), call.spec.operation)
            auth = auth_request(app, request, credentials_of(request))
        except ApiError as error:
            return self._fault_body(request, error)
        d = app.admit(auth)
        d.addCallback(lambda ctx: app.call(ctx, call.operation, call.positional, call.named))
        d.addCallbacks(self._respond, self._fail, callbackArgs=(request, call), errbackArgs=(request,))
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET

    def _respond(self, result, request, call) -> None:
        try:
            body = encode_response(call, result)
        except Exception:
            log.failure("encoding the result of {operation} failed", operation=call.operation)
            self._fail(Failure(ServerError(f"{call.operation} returned a value that cannot be sent")), request)
            return
        self._finish(request, 200, body)

    def _fail(self, failure: Failure, request) -> None:
        error = failure.value
        if not isinstance(error, ApiError):
            log.failure("SOAP call failed", failure)
            error = ServerError("the call failed on the server; the error was logged")
        note_fault(request, error.code)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            request.setHeader(b"retry-after", str(int(retry_after)).encode())
        self._finish(request, 500, encode_fault(error))

    def _fault_body(self, request, error: ApiError) -> bytes:
        note_fault(request, error.code)
        request.setResponseCode(500)
        request.setHeader(b"content-type", _RESPONSE_TYPE[0])
        return encode_fault(error)

    def _finish(self, request, status: int, body: bytes) -> None:
        request.setResponseCode(status)
        request.responseHeaders.setRawHeaders(b"content-type", _RESPONSE_TYPE)
        finish_with(request, body)

    def server_failure(self, request) -> bytes:
        return self._fault_body(request, ServerError())


class WsdlResource(ApiResource):
    """``GET /apnscp.wsdl`` (RPC style) and ``?style=document``."""

    def __init__(self, app, wsdl_cache: WsdlCache):
        super().__init__()
        self.app = app
        self.wsdl_cache = wsdl_cache

    def render_GET(self, request):
        refused = gate_refusal(self.app, request)
        if refused is not None:
            return refused
        styles = request.args.get(b"style") if request.args else None
        style = styles[0].decode("ascii", "replace").lower() if styles else RPC_STYLE
        if style not in (RPC_STYLE, DOCUMENT_STYLE):
            return refuse(request, 400, "style must be rpc or document")
        return serve_wsdl(self.app, self.wsdl_cache, request, style)
