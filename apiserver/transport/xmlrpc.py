"""The XML-RPC gate: ``POST /xmlrpc?authkey=KEY`` (or the ``esprit_id`` cookie).

Every exported function is served as ``<module>_<function>`` and ``<module>.<function>``,
with the introspection methods ``system.listMethods``, ``system.methodSignature``,
``system.methodHelp`` and ``system.multicall``.  Requests go through the pipeline SOAP shares
(:class:`apiserver.transport.pipeline.CallResource`, gate ``SOAP``): the HTTP checks,
admission (toggle, Anvil, authentication, IP restrictions), then the call.  Introspection
needs no credentials; an unknown method is refused before authenticating.  The codec is
:mod:`apiserver.transport.xmlrpc_codec`: faults carry ``"<api.md code>: <message>"`` and the
error's ``xmlrpc_code``, and are answered with HTTP 200 as XML-RPC has it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from twisted.internet import defer

from apiserver.errors import ApiError, InvalidArgument
from apiserver.transport.http import note_call, refuse
from apiserver.transport.pipeline import CallResource
from apiserver.transport.xmlrpc_codec import encode_response, fault_for, method_help, method_signatures, parse_call

MULTICALL = "system.multicall"


@dataclasses.dataclass(frozen=True)
class _Call:
    name: str
    params: list


class XmlRpcResource(CallResource):
    """``/xmlrpc``: POST an XML-RPC ``methodCall``; credentials in ``?authkey=`` or ``esprit_id``.

    ``gatekeeper``, ``registry``: as :class:`~apiserver.transport.pipeline.CallResource` takes them.
    """

    dialect = "XML-RPC"

    def __init__(self, gatekeeper, registry):
        super().__init__(gatekeeper, registry)
        self._introspection = {
            "system.listMethods": self._list_methods,
            "system.methodSignature": self._method_signature,
            "system.methodHelp": self._method_help,
        }

    def method_not_allowed(self, request, allowed: list[str]) -> bytes:
        """405 saying how to call (HEAD too: there is nothing to GET)."""
        return refuse(request, 405, "XML-RPC takes POST requests: POST /xmlrpc?authkey=KEY with a <methodCall> body",
                      {"allow": "POST"})

    # --- the pipeline's steps -------------------------------------------------------------------
    def decode(self, request) -> _Call:
        name, params = parse_call(request.content.read())
        if name in self._introspection or name == MULTICALL:
            note_call(request, "xmlrpc", name)
        else:  # an unknown name is refused here, before authenticating
            note_call(request, "xmlrpc", self.registry.lookup(name).spec.operation)
        return _Call(name, params)

    def answer_at_once(self, request, call: _Call) -> Optional[bytes]:
        introspect = self._introspection.get(call.name)
        return None if introspect is None else encode_response(introspect(call.params))

    def invoke(self, ctx, call: _Call) -> defer.Deferred:
        if call.name == MULTICALL:
            return self._multicall(ctx, call.params)
        return self.registry.call(ctx, call.name, call.params)

    def encode(self, call, result) -> bytes:
        return encode_response(result)

    def encode_fault(self, error: ApiError) -> bytes:
        return fault_for(error)

    # --- system.* ---------------------------------------------------------------------------
    def _list_methods(self, params) -> list:
        if params:
            raise InvalidArgument("system.listMethods takes no arguments")
        names = []
        for spec in self.registry.functions():
            names += [spec.operation, f"{spec.module}.{spec.name}"]
        return sorted(names + list(self._introspection) + [MULTICALL])

    def _named_spec(self, method: str, params):
        if len(params) != 1 or not isinstance(params[0], str):
            raise InvalidArgument(f"{method} takes one argument: the method name")
        return self.registry.lookup(params[0]).spec

    def _method_signature(self, params) -> list:
        return method_signatures(self._named_spec("system.methodSignature", params))

    def _method_help(self, params) -> str:
        return method_help(self._named_spec("system.methodHelp", params))

    async def _run_one(self, ctx, call) -> list:
        if not isinstance(call, dict) or not isinstance(call.get("methodName"), str):
            raise InvalidArgument("each system.multicall entry is a struct {methodName, params}")
        name, params = call["methodName"], call.get("params", [])
        if not isinstance(params, list):
            raise InvalidArgument(f"system.multicall: params of {name[:60]!r} must be an array")
        if name == MULTICALL:
            raise InvalidArgument("system.multicall cannot be nested")
        introspect = self._introspection.get(name)
        if introspect is not None:
            return [introspect(params)]
        return [await self.registry.call(ctx, name, params)]

    def _multicall(self, ctx, params) -> defer.Deferred:
        """Run each call in turn as the admitted identity; a failed call becomes its fault struct."""
        if len(params) != 1 or not isinstance(params[0], list):
            raise InvalidArgument("system.multicall takes one argument: an array of {methodName, params}")

        async def run_all():
            results = []
            for call in params[0]:
                try:
                    results.append(await self._run_one(ctx, call))
                except ApiError as error:
                    results.append({"faultCode": error.xmlrpc_code, "faultString": f"{error.code}: {error.message}"})
            return results

        return defer.ensureDeferred(run_all())
