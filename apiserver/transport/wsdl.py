"""The two WSDLs, generated from the registry's FunctionSpecs.

* ``rpc`` (served at ``/apnscp.wsdl`` and ``/soap?wsdl``): style rpc, use encoded, one message
  part per argument with its XSD type; arrays are SOAP-ENC arrays, records SOAP structs, free
  hashes Apache ``Map``\\ s.  This is what ApisCP's clients (PHP ``SoapClient`` with positional
  calls) are written against.
* ``document`` (``/apnscp.wsdl?style=document``): document/literal wrapped for SDK
  generators, built by Spyne's ``Wsdl11`` from Spyne models derived from the same
  declarations.  Spyne only describes the interface; requests never run through it.

:func:`generate_wsdl` is what ``apiserver wsdl`` prints and what ``wsdl/`` holds (with
:data:`PLACEHOLDER_LOCATION`); :class:`WsdlCache` generates each style once and serves it with
``soap:address location`` naming the URL the client used.
"""

from __future__ import annotations

import re
from typing import Iterable

from lxml import etree

from apiserver.middleware.address import trusted_forwarded_value
from apiserver.module import FunctionSpec
from apiserver.transport.soap_codec import APACHE_SOAP, SOAP_ENC, TNS, doc_type_name
from apiserver.types import ANY, ARRAY, BOOLEAN, DATETIME, FLOAT, INT, MAP, STRING, STRUCT, TypeSpec

RPC_STYLE = "rpc"
DOCUMENT_STYLE = "document"
STYLES = (RPC_STYLE, DOCUMENT_STYLE)
PLACEHOLDER_LOCATION = "http://localhost:2082/soap"
SERVICE_NAME = "apnscp"

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"


def generate_wsdl(registry, style: str = RPC_STYLE, location: str = PLACEHOLDER_LOCATION) -> bytes:
    """The WSDL of every function in ``registry`` in ``style`` (``rpc`` or ``document``)."""
    functions = registry.functions()
    if style == RPC_STYLE:
        return rpc_wsdl(functions, location)
    if style == DOCUMENT_STYLE:
        return document_wsdl(functions, location)
    raise ValueError(f"unknown WSDL style {style!r}: expected rpc or document")


# --- RPC/encoded ----------------------------------------------------------------------------

_RPC_SCALARS = {STRING: "xsd:string", INT: "xsd:long", BOOLEAN: "xsd:boolean", FLOAT: "xsd:double",
                DATETIME: "xsd:dateTime", ANY: "xsd:anyType", MAP: "apache:Map"}


def _W(tag: str) -> str:
    return "{%s}%s" % (WSDL_NS, tag)


def _S(tag: str) -> str:
    return "{%s}%s" % (XSD_NS, tag)


def _B(tag: str) -> str:
    return "{%s}%s" % (SOAP_BINDING_NS, tag)


class _RpcTypes:
    """Collects the complex types (structs and arrays) an RPC WSDL needs, each once."""

    def __init__(self, schema: etree._Element):
        self.schema = schema
        self.done: set = set()

    def ref(self, spec: TypeSpec) -> str:
        if spec.kind == STRUCT:
            name = spec.record.__name__
            if name not in self.done:
                self.done.add(name)
                ctype = etree.SubElement(self.schema, _S("complexType"), name=name)
                seq = etree.SubElement(ctype, _S("all"))
                for fname, fspec in spec.fields:
                    attrs = {"name": fname, "type": self.ref(fspec)}
                    if fspec.nullable:
                        attrs.update(minOccurs="0", nillable="true")
                    etree.SubElement(seq, _S("element"), **attrs)
            return "tns:" + name
        if spec.kind == ARRAY:
            item = self.ref(spec.item)
            name = "ArrayOf" + item.split(":", 1)[1][0].upper() + item.split(":", 1)[1][1:]
            if name not in self.done:
                self.done.add(name)
                ctype = etree.SubElement(self.schema, _S("complexType"), name=name)
                content = etree.SubElement(ctype, _S("complexContent"))
                restriction = etree.SubElement(content, _S("restriction"), base="soapenc:Array")
                etree.SubElement(restriction, _S("attribute"), {
                    "ref": "soapenc:arrayType", "{%s}arrayType" % WSDL_NS: item + "[]"})
            return "tns:" + name
        return _RPC_SCALARS[spec.kind]


def rpc_wsdl(functions: Iterable[FunctionSpec], location: str) -> bytes:
    """RPC/encoded WSDL 1.1: each argument a part; optional arguments may be left out."""
    nsmap = {None: WSDL_NS, "tns": TNS, "soap": SOAP_BINDING_NS, "xsd": XSD_NS,
             "soapenc": SOAP_ENC, "wsdl": WSDL_NS, "apache": APACHE_SOAP}
    root = etree.Element(_W("definitions"), nsmap=nsmap, name=SERVICE_NAME, targetNamespace=TNS)
    types = etree.SubElement(root, _W("types"))
    schema = etree.SubElement(types, _S("schema"), targetNamespace=TNS)
    etree.SubElement(schema, _S("import"), namespace=SOAP_ENC)
    etree.SubElement(schema, _S("import"), namespace=APACHE_SOAP)
    registry_types = _RpcTypes(schema)
    functions = sorted(functions, key=lambda f: f.operation)
    for fn in functions:
        request = etree.SubElement(root, _W("message"), name=fn.operation + "Request")
        for param in fn.params:
            etree.SubElement(request, _W("part"), name=param.name, type=registry_types.ref(param.spec))
        response = etree.SubElement(root, _W("message"), name=fn.operation + "Response")
        etree.SubElement(response, _W("part"), name="return", type=registry_types.ref(fn.returns))
    port_type = etree.SubElement(root, _W("portType"), name=SERVICE_NAME + "PortType")
    for fn in functions:
        attrs = {"name": fn.operation}
        if fn.params:
            attrs["parameterOrder"] = " ".join(p.name for p in fn.params)
        op = etree.SubElement(port_type, _W("operation"), **attrs)
        etree.SubElement(op, _W("documentation")).text = _documentation(fn)
        etree.SubElement(op, _W("input"), message="tns:%sRequest" % fn.operation)
        etree.SubElement(op, _W("output"), message="tns:%sResponse" % fn.operation)
    binding = etree.SubElement(root, _W("binding"), name=SERVICE_NAME + "Binding", type="tns:%sPortType" % SERVICE_NAME)
    etree.SubElement(binding, _B("binding"), style="rpc", transport=HTTP_TRANSPORT)
    for fn in functions:
        op = etree.SubElement(binding, _W("operation"), name=fn.operation)
        etree.SubElement(op, _B("operation"), soapAction=f"{TNS}#{fn.operation}", style="rpc")
        for direction in ("input", "output"):
            io = etree.SubElement(op, _W(direction))
            etree.SubElement(io, _B("body"), use="encoded", namespace=TNS, encodingStyle=SOAP_ENC)
    service = etree.SubElement(root, _W("service"), name=SERVICE_NAME)
    port = etree.SubElement(service, _W("port"), name=SERVICE_NAME + "Port", binding="tns:%sBinding" % SERVICE_NAME)
    etree.SubElement(port, _B("address"), location=location)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _documentation(fn: FunctionSpec) -> str:
    summary = fn.summary
    return fn.signature() + (f": {summary}" if summary else "")


# --- document/literal wrapped (Spyne) ------------------------------------------------------

def document_wsdl(functions: Iterable[FunctionSpec], location: str) -> bytes:
    """Document/literal wrapped WSDL 1.1 built by Spyne from models derived from the specs."""
    from spyne import Application as SpyneApplication
    from spyne import ServiceBase, rpc
    from spyne.interface.wsdl import Wsdl11
    from spyne.protocol.soap import Soap11

    models = _SpyneModels()
    methods = {}
    for fn in sorted(functions, key=lambda f: f.operation):
        args = [models.param(p.spec, p.required) for p in fn.params]
        decorator = rpc(*args, _returns=models.of(fn.returns), _operation_name=fn.operation,
                        _in_arg_names={f"a{i}": p.name for i, p in enumerate(fn.params)},
                        _body_style="wrapped")
        methods[fn.operation] = decorator(_stub(fn.operation, len(fn.params), _documentation(fn)))
    service = type(SERVICE_NAME, (ServiceBase,), methods)
    spyne_app = SpyneApplication([service], tns=TNS, name=SERVICE_NAME, in_protocol=Soap11(), out_protocol=Soap11())
    spyne_app.transport = HTTP_TRANSPORT
    for extra in models.anytype_helpers():  # what xsi:type may name inside anyType values
        spyne_app.interface.add_class(extra)
    wsdl = Wsdl11(spyne_app.interface)
    wsdl.build_interface_document(location)
    tree = etree.fromstring(wsdl.get_interface_document())
    _canonical_order(tree)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


_XSD_ORDER = {"import": 0, "simpleType": 1, "complexType": 2, "element": 3}
_WSDL_ORDER = {"documentation": 0, "types": 1, "message": 2, "portType": 3, "binding": 4, "service": 5}


def _canonical_order(definitions: etree._Element) -> None:
    """Sort what Spyne emits in hash order (schema components, messages) so output is stable."""
    def rank(order: dict):
        return lambda e: (order.get(etree.QName(e).localname, 9), e.get("name") or e.get("namespace") or "")

    for schema in definitions.iter(_S("schema")):
        schema[:] = sorted(schema, key=rank(_XSD_ORDER))
    definitions[:] = sorted(definitions, key=rank(_WSDL_ORDER))
    for container in definitions.findall(_W("portType")) + definitions.findall(_W("binding")):
        container[:] = sorted(container, key=lambda e: (etree.QName(e).localname == "operation", e.get("name") or ""))


def _stub(name: str, count: int, doc: str):
    """A Spyne method with ``count`` named arguments a0.. (never called; Spyne reads the signature)."""
    args = ", ".join(["ctx"] + [f"a{i}" for i in range(count)])
    namespace: dict = {}
    exec(f"def {name}({args}):\n    raise NotImplementedError('served by apiserver.transport.soap')", namespace)
    namespace[name].__doc__ = doc
    return namespace[name]


class _SpyneModels:
    """Spyne model classes for TypeSpecs, one class per record and array so names stay unique."""

    def __init__(self):
        from spyne import AnyXml, Array, Boolean, ComplexModel, DateTime, Double, Integer64, Unicode

        self._Array, self._ComplexModel = Array, ComplexModel
        self._scalars = {STRING: Unicode, INT: Integer64, BOOLEAN: Boolean, FLOAT: Double,
                         DATETIME: DateTime, ANY: AnyXml}
        self._records: dict = {}
        self._arrays: dict = {}
        map_item = type("MapItem", (ComplexModel,), {
            "__namespace__": TNS, "_type_info": [("key", Unicode), ("value", AnyXml)]})
        self._map = type("Map", (ComplexModel,), {
            "__namespace__": TNS, "_type_info": [("item", map_item.customize(max_occurs="unbounded"))]})
        self._any_array = Array(AnyXml)
        self._any_array.resolve_namespace(self._any_array, TNS)

    def anytype_helpers(self) -> list:
        return [self._map, self._any_array]

    def of(self, spec: TypeSpec):
        kind = spec.kind
        if kind == MAP:
            return self._map
        if kind == STRUCT:
            model = self._records.get(spec.record)
            if model is None:
                fields = [(name, self.param(fspec, not fspec.nullable)) for name, fspec in spec.fields]
                model = type(spec.record.__name__, (self._ComplexModel,), {"__namespace__": TNS, "_type_info": fields})
                self._records[spec.record] = model
            return model
        if kind == ARRAY:
            key = doc_type_name(spec)
            model = self._arrays.get(key)
            if model is None:
                model = self._Array(self.of(spec.item))
                model.resolve_namespace(model, TNS)
                self._arrays[key] = model
            return model
        return self._scalars[kind]

    def param(self, spec: TypeSpec, required: bool):
        model = self.of(spec)
        if required and not spec.nullable:
            return model.customize(min_occurs=1, nillable=False)
        return model.customize(min_occurs=0, nillable=True)


# --- serving --------------------------------------------------------------------------------

_HOST_OK = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def request_location(request, trusted_networks=()) -> str:
    """The SOAP endpoint URL as the client reached it (scheme, Host header, port).

    Behind a proxy in ``trusted_networks`` (``[core] http_trusted_forward``) its
    ``X-Forwarded-Proto`` and a well-formed ``X-Forwarded-Host`` name the client's side of it;
    from anyone else those headers are ignored.
    """
    scheme = "https" if request.isSecure() else "http"
    host_header = (request.getHeader(b"host") or b"").decode("ascii", "replace").strip()
    proto = trusted_forwarded_value(request, b"x-forwarded-proto", trusted_networks).lower()
    if proto in ("http", "https"):
        scheme = proto
    forwarded_host = trusted_forwarded_value(request, b"x-forwarded-host", trusted_networks)
    if _HOST_OK.match(forwarded_host):
        host_header = forwarded_host
    if not _HOST_OK.match(host_header):
        host = request.getHost()
        addr = f"[{host.host}]" if ":" in host.host else host.host
        host_header = f"{addr}:{host.port}"
    return f"{scheme}://{host_header}/soap"


class WsdlCache:
    """Each style generated once; the served copy differs only in ``soap:address location``."""

    def __init__(self, registry, max_locations: int = 64):
        self._templates = {style: generate_wsdl(registry, style, PLACEHOLDER_LOCATION) for style in STYLES}
        self._served: dict = {}
        self._max_locations = max_locations

    def template(self, style: str) -> bytes:
        """The WSDL of ``style`` as committed in ``wsdl/`` (placeholder location)."""
        return self._templates[style]

    def get(self, style: str, location: str) -> bytes:
        """The WSDL of ``style`` naming ``location`` (a validated URL from request_location)."""
        key = (style, location)
        served = self._served.get(key)
        if served is None:
            marker = f'location="{PLACEHOLDER_LOCATION}"'.encode()
            served = self.template(style).replace(marker, f'location="{location}"'.encode(), 1)
            if len(self._served) >= self._max_locations:
                self._served.clear()
            self._served[key] = served
        return served


# --- the committed copies -------------------------------------------------------------------

#: Where ``wsdl/`` keeps each style, relative to the project root.
COMMITTED_FILES = {RPC_STYLE: "wsdl/apnscp.wsdl", DOCUMENT_STYLE: "wsdl/apnscp-document.wsdl"}
REGENERATE_COMMAND = "python -m apiserver.transport.wsdl"


def builtin_registry():
    """A registry of the built-in modules only (no installed plugins, no storage needed)."""
    from apiserver.dispatch import Registry
    from apiserver.module import make_module
    from apiserver.plugins import make_plugin_manager

    pm = make_plugin_manager(load_entrypoints=False)
    return Registry(make_module(cls, None) for group in pm.hook.apiserver_add_modules(api=None) for cls in group)


def write_committed(root: str) -> list:
    """Regenerate ``wsdl/`` under ``root`` from the built-in modules; returns the paths written."""
    import os

    registry = builtin_registry()
    written = []
    for style, relative in COMMITTED_FILES.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(generate_wsdl(registry, style))
        written.append(path)
    return written


if __name__ == "__main__":
    import os

    for written_path in write_committed(os.getcwd()):
        print(written_path)
