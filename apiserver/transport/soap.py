"""``/soap``: SOAP 1.1 over HTTP, both dialects, on the reactor thread without Spyne.

Per request, the shared pipeline (:class:`apiserver.transport.pipeline.CallResource`): the
gate check, Content-Type, decoding (:mod:`apiserver.transport.soap_codec`), admission with the
``authkey`` query argument or the ``esprit_id`` cookie, the call, and the response or fault in
the request's dialect.  Faults are HTTP 500 with a SOAP body, as SOAP 1.1 requires; nothing
answers an empty 500.  ``GET /soap?wsdl`` serves the RPC-style WSDL; other GETs get 405.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from apiserver.errors import ApiError, ServerError
from apiserver.transport.http import ApiResource, content_type_is, gate_refusal, note_call, refuse
from apiserver.transport.pipeline import CallResource
from apiserver.transport.soap_codec import decode_request, encode_fault, encode_response
from apiserver.transport.wsdl import DOCUMENT_STYLE, RPC_STYLE, WsdlCache, request_location

log = Logger(namespace="apiserver.soap")

_XML_CONTENT_TYPES = (b"text/xml", b"application/soap+xml", b"application/xml")


def content_type_ok(request) -> bool:
    """text/xml, application/soap+xml or application/xml, charset UTF-8 or none."""
    return content_type_is(request, _XML_CONTENT_TYPES)


def wants_wsdl(request) -> bool:
    """``?wsdl`` (any case, with or without a value) in the query string."""
    _, _, query = request.uri.partition(b"?")
    return any(part.split(b"=", 1)[0].lower() == b"wsdl" for part in query.split(b"&"))


def serve_wsdl(settings, cache: WsdlCache, request, style: str) -> bytes:
    """The WSDL of ``style`` whose ``soap:address`` names the URL the client used."""
    request.setHeader(b"content-type", b"text/xml; charset=utf-8")
    return cache.get(style, request_location(request, settings.get("core", "http_trusted_forward")))


class SoapResource(CallResource):
    """``POST /soap`` in both dialects (the shared pipeline), ``GET /soap?wsdl``.

    ``gatekeeper``, ``registry``: as :class:`~apiserver.transport.pipeline.CallResource` takes
    them; ``settings``: the config (trusted proxies, for the WSDL's address); ``wsdl_cache``.
    """

    dialect = "SOAP"
    fault_status = 500  # SOAP 1.1: a fault is a 500 with a SOAP body, never an empty one
    request_failed = "the request failed on the server; the error was logged"
    call_failed = "the call failed on the server; the error was logged"

    def __init__(self, gatekeeper, registry, settings, wsdl_cache: WsdlCache):
        super().__init__(gatekeeper, registry)
        self.settings = settings
        self.wsdl_cache = wsdl_cache
        self._lookup = registry.lookup

    def render_GET(self, request):
        refused = gate_refusal(self.gatekeeper, request)
        if refused is not None:
            return refused
        if wants_wsdl(request):
            return serve_wsdl(self.settings, self.wsdl_cache, request, RPC_STYLE)
        request.setHeader(b"allow", b"POST")
        return refuse(request, 405, "use POST for SOAP calls, or GET /soap?wsdl for the WSDL")

    # --- the pipeline's steps -------------------------------------------------------------------
    def refuse_early(self, request) -> Optional[bytes]:
        if not content_type_ok(request):
            return refuse(request, 415, "SOAP requests need Content-Type text/xml (charset UTF-8)")
        return None

    def decode(self, request):
        call = decode_request(request.content.read(), self._lookup)
        note_call(request, f"soap-{call.dialect}".lower(), call.spec.operation)
        return call

    def invoke(self, ctx, call) -> defer.Deferred:
        return self.registry.call(ctx, call.operation, call.positional, call.named)

    def encode(self, call, result) -> bytes:
        try:
            return encode_response(call, result)
        except Exception:
            log.failure("encoding the result of {operation} failed", operation=call.operation)
            raise ServerError(f"{call.operation} returned a value that cannot be sent") from None

    def encode_fault(self, error: ApiError) -> bytes:
        return encode_fault(error)


class WsdlResource(ApiResource):
    """``GET /apnscp.wsdl`` (RPC style) and ``?style=document``."""

    def __init__(self, gatekeeper, settings, wsdl_cache: WsdlCache):
        super().__init__()
        self.gatekeeper = gatekeeper
        self.settings = settings
        self.wsdl_cache = wsdl_cache

    def render_GET(self, request):
        refused = gate_refusal(self.gatekeeper, request)
        if refused is not None:
            return refused
        styles = request.args.get(b"style") if request.args else None
        style = styles[0].decode("ascii", "replace").lower() if styles else RPC_STYLE
        if style not in (RPC_STYLE, DOCUMENT_STYLE):
            return refuse(request, 400, "style must be rpc or document")
        return serve_wsdl(self.settings, self.wsdl_cache, request, style)
