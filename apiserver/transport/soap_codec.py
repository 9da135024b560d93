"""SOAP 1.1 requests and responses in both dialects, with lxml, straight from the TypeSpecs.

Requests: :func:`decode_request` parses a body with a hardened parser (no DTD, no entities, no
network, UTF-8 only) and tells the two dialects apart:

* **document/literal wrapped** (zeep, SDK generators): the body's child is
  ``{urn:net.apnscp.soap}<operation>`` with one qualified child element per argument and no
  SOAP encoding;
* **RPC/encoded** (PHP ``SoapClient`` in WSDL and non-WSDL mode, Perl ``SOAP::Lite``): the
  operation element in any namespace, its children the arguments, by name when every child
  names a parameter, else by position (``param0``, ``c-gensym5``), qualified or not, with or
  without ``xsi:type``; SOAP-ENC arrays, Apache ``Map`` hashes, structs, ``xsi:nil`` and
  multi-reference ``href``\\ s.

Values are decoded guided by the parameter's :class:`TypeSpec`, with an ``xsi:type`` taking
precedence; :func:`apiserver.dispatch.bind_arguments` then checks and coerces them.

Responses: :func:`encode_response` writes the result in the request's dialect: RPC style with
``xsi:type`` on every value (so untyped clients get real booleans, numbers and arrays),
document style as the document/literal WSDL declares.  :func:`encode_fault` writes a SOAP 1.1
fault whose faultcode is ``SOAP-ENV:`` + :attr:`ApiError.code`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import math
import re
from typing import Any, Callable, Optional

from lxml import etree

from apiserver.booleans import XSD_BOOLEAN, parse_boolean
from apiserver.errors import ApiError, InvalidArgument, Malformed
from apiserver.module import FunctionSpec
from apiserver.transport.xmltext import escape_text
from apiserver.types import ANY, ARRAY, BOOLEAN, DATETIME, FLOAT, INT, MAP, STRING, STRUCT, TypeSpec

TNS = "urn:net.apnscp.soap"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
APACHE_SOAP = "http://xml.apache.org/xml-soap"
_XSD_NAMESPACES = frozenset({XSD, "http://www.w3.org/1999/XMLSchema", "http://www.w3.org/2000/10/XMLSchema", SOAP_ENC})
_XSI_NAMESPACES = (XSI, "http://www.w3.org/1999/XMLSchema-instance", "http://www.w3.org/2000/10/XMLSchema-instance")

RPC = "rpc"
DOCUMENT = "document"

_ENVELOPE = "{%s}Envelope" % SOAP_ENV
_BODY = "{%s}Body" % SOAP_ENV
_ENCODING_STYLE = "{%s}encodingStyle" % SOAP_ENV

_INT_TYPES = frozenset({
    "int", "integer", "long", "short", "byte", "unsignedInt", "unsignedLong", "unsignedShort",
    "unsignedByte", "nonNegativeInteger", "positiveInteger", "negativeInteger", "nonPositiveInteger",
})
_FLOAT_TYPES = frozenset({"double", "float", "decimal"})


# No DTDs, entities or network; UTF-8 whatever the declaration says; lxml's default size limits.
# Used on the reactor thread only (lxml parsers are not shared between threads).
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
    huge_tree=False, remove_comments=True, remove_pis=True, encoding="utf-8", collect_ids=False,
)
_ANY = TypeSpec(ANY, nullable=True)


@dataclasses.dataclass
class SoapCall:
    """A decoded request: which function, its arguments, and how to answer."""

    operation: str
    positional: list
    named: dict
    dialect: str            # RPC or DOCUMENT
    namespace: str          # namespace of the operation element, echoed in RPC responses
    spec: FunctionSpec


# --- requests -------------------------------------------------------------------------------

def parse_envelope(body: bytes) -> etree._Element:
    """Parse and return the operation element of a SOAP 1.1 envelope, or raise Malformed."""
    if not body or not body.strip():
        raise Malformed("empty request body: expected a SOAP 1.1 envelope")
    # The parser reads UTF-8 only, so a DTD cannot hide behind another encoding.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise Malformed("document type declarations are not allowed in SOAP messages")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        # exc.msg without lxml's advice to the programmer ("use XML_PARSE_HUGE option")
        reason = (exc.msg or str(exc)).replace(", use XML_PARSE_HUGE option", "")
        raise Malformed(f"request is not well-formed UTF-8 XML: {_short(reason)}") from None
    except ValueError as exc:
        raise Malformed(f"request is not well-formed XML: {_short(str(exc))}") from None
    if root.tag != _ENVELOPE:
        if root.tag == "{%s}Envelope" % SOAP12_ENV:
            raise Malformed("SOAP 1.2 envelopes are not supported: send SOAP 1.1")
        raise Malformed("the root element must be a SOAP 1.1 Envelope")
    body_elem = None
    for child in root:
        if child.tag == _BODY:
            body_elem = child
            break
    if body_elem is None:
        raise Malformed("the SOAP envelope has no Body")
    for child in body_elem:
        if isinstance(child.tag, str):
            return child
    raise Malformed("the SOAP Body names no operation")


def decode_request(body: bytes, lookup: Callable[[str], Any]) -> SoapCall:
    """Decode a request body; ``lookup(name)`` returns the registry entry or raises UnknownMethod."""
    op = parse_envelope(body)
    qname = etree.QName(op)
    spec: FunctionSpec = lookup(qname.localname).spec
    dialect = _dialect_of(op, qname.namespace)
    by_name = {p.name: p for p in spec.params}
    children = [c for c in op if isinstance(c.tag, str)]
    positional: list = []
    named: dict = {}
    decoder = _ValueDecoder(op)
    if not children and _is_nil(op):
        pass  # <m xsi:nil="true"/>: a call without arguments
    elif dialect == DOCUMENT or (children and all(etree.QName(c).localname in by_name for c in children)):
        for child in children:
            name = etree.QName(child).localname
            if name in named:
                raise InvalidArgument(f"{spec.operation}: argument {name[:60]!r} given twice")
            param = by_name.get(name)  # an unknown name is refused by bind_arguments, naming it
            named[name] = decoder.value(child, param.spec if param else _ANY)
    else:
        params = spec.params
        for i, child in enumerate(children):
            pspec = params[i].spec if i < len(params) else _ANY  # too many: bind_arguments says so
            positional.append(decoder.value(child, pspec))
    return SoapCall(spec.operation, positional, named, dialect, qname.namespace or TNS, spec)


def _dialect_of(op: etree._Element, namespace: Optional[str]) -> str:
    if namespace != TNS:
        return RPC
    node = op
    while node is not None:
        if node.get(_ENCODING_STYLE) is not None:
            return RPC
        node = node.getparent()
    for child in op:  # document/literal arguments are qualified (elementFormDefault="qualified")
        if isinstance(child.tag, str) and etree.QName(child).namespace != TNS:
            return RPC
    return DOCUMENT


def _xsi(elem: etree._Element, name: str) -> Optional[str]:
    attrib = elem.attrib
    if not attrib:
        return None
    for ns in _XSI_NAMESPACES:
        value = attrib.get("{%s}%s" % (ns, name))
        if value is not None:
            return value
    return None


def _is_nil(elem: etree._Element) -> bool:
    value = _xsi(elem, "nil") or _xsi(elem, "null")
    return value is not None and parse_boolean(value, XSD_BOOLEAN) is True


def _resolve_type(elem: etree._Element, value: str) -> tuple:
    prefix, _, local = value.strip().rpartition(":")
    return elem.nsmap.get(prefix or None, ""), local


#: Most argument values one request may decode: multi-reference hrefs can point many times at
#: the same large element, so the work is bounded by values decoded, not by the body's size.
MAX_DECODED_VALUES = 100_000


class _ValueDecoder:
    """Decodes the argument elements of one request (hrefs resolved once, work bounded)."""

    def __init__(self, op: etree._Element):
        self._body = op.getparent() if op.getparent() is not None else op
        self._ids: Optional[dict] = None
        self._budget = MAX_DECODED_VALUES

    def value(self, elem: etree._Element, spec: TypeSpec, depth: int = 0) -> Any:
        """One value: ``xsi:type`` first, then the shape the TypeSpec expects."""
        if depth > 32:
            raise Malformed("argument values are nested too deeply")
        self._budget -= 1
        if self._budget < 0:
            raise Malformed(f"the request holds more than {MAX_DECODED_VALUES} values")
        if elem.get("href") is not None:
            elem = self._deref(elem)
        if _is_nil(elem):
            return None
        xtype = _xsi(elem, "type")
        children = [c for c in elem if isinstance(c.tag, str)]
        if xtype:
            ns, local = _resolve_type(elem, xtype)
            if ns in _XSD_NAMESPACES and local not in ("Array", "Struct", "anyType", "ur-type"):
                return _scalar(local, elem.text or "")
            if local == "Array" or elem.get("{%s}arrayType" % SOAP_ENC) is not None:
                item = spec.item if spec.kind == ARRAY else _ANY
                return [self.value(c, item, depth + 1) for c in children]
            if local == "Map" and ns in (APACHE_SOAP, TNS):
                return self._map(children, depth)
        kind = spec.kind
        if not children:
            text = elem.text or ""
            if kind in (ARRAY, MAP, STRUCT) and not text.strip():
                return [] if kind == ARRAY else {}
            return text
        if kind == ARRAY:
            return [self.value(c, spec.item, depth + 1) for c in children]
        if kind == STRUCT:
            fields = dict(spec.fields)
            return {etree.QName(c).localname: self.value(c, fields.get(etree.QName(c).localname, _ANY), depth + 1)
                    for c in children}
        if _looks_like_map(children):
            return self._map(children, depth)
        if kind == ANY and len(children) > 1 and len({c.tag for c in children}) == 1:
            return [self.value(c, _ANY, depth + 1) for c in children]
        return {etree.QName(c).localname: self.value(c, _ANY, depth + 1) for c in children}

    def _deref(self, elem: etree._Element) -> etree._Element:
        """The element a SOAP-ENC multi-reference ``href="#id"`` points at, within the Body."""
        href = elem.get("href")
        if not href.startswith("#"):
            raise Malformed("only local multi-reference hrefs (#id) are supported")
        if self._ids is None:
            self._ids = {}
            for candidate in self._body.iter():
                ident = candidate.get("id")
                if ident is not None:
                    self._ids.setdefault(ident, candidate)
        target = self._ids.get(href[1:])
        if target is None or target is elem:
            raise Malformed(f"multi-reference href {href[:60]!r} names no element")
        if target.get("href") is not None:
            # SOAP-ENC: the referenced element carries the value; chains (and cycles) are not values.
            raise Malformed(f"multi-reference href {href[:60]!r} points at another href")
        return target

    def _map(self, items: list, depth: int) -> dict:
        """An Apache Map: <item><key/><value/></item> per entry."""
        out = {}
        for item in items:
            key = value = None
            for part in item:
                if not isinstance(part.tag, str):
                    continue
                local = etree.QName(part).localname
                if local == "key":
                    key = self.value(part, _ANY, depth + 1)
                elif local == "value":
                    value = self.value(part, _ANY, depth + 1)
            if key is None:
                raise Malformed("a Map item has no key")
            out[str(key)] = value
        return out


def _looks_like_map(children: list) -> bool:
    for c in children:
        if etree.QName(c).localname != "item":
            return False
        names = {etree.QName(g).localname for g in c if isinstance(g.tag, str)}
        if "key" not in names:
            return False
    return True


def _scalar(local: str, text: str) -> Any:
    """An xsd-typed scalar as Python; text that does not parse is kept for coerce to name."""
    if local in _INT_TYPES:
        try:
            return int(text.strip())
        except ValueError:
            return text
    if local == "boolean":
        flag = parse_boolean(text, XSD_BOOLEAN)
        return text if flag is None else flag
    if local in _FLOAT_TYPES:
        try:
            return float(text.strip())
        except ValueError:
            return text
    if local == "base64Binary":
        try:
            return base64.b64decode(text, validate=False).decode("utf-8", "replace")
        except ValueError:
            return text
    return text


# --- responses ------------------------------------------------------------------------------

def _format_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return repr(value)


def _xsd_scalar(value: Any) -> Optional[tuple]:
    """(xsd type, text) for a scalar, None for containers."""
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int):
        return ("int" if -2**31 <= value < 2**31 else "long"), str(value)
    if isinstance(value, float):
        return "double", _format_float(value)
    if isinstance(value, str):
        return "string", escape_text(value)
    if isinstance(value, datetime.datetime):
        return "dateTime", value.isoformat()
    if isinstance(value, datetime.date):
        return "date", value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return "base64Binary", base64.b64encode(bytes(value)).decode("ascii")
    return None


_RPC_ITEM_TYPES = {STRING: "xsd:string", INT: "xsd:long", BOOLEAN: "xsd:boolean", FLOAT: "xsd:double",
                   DATETIME: "xsd:dateTime", MAP: "ns2:Map"}


def _rpc_array_type(spec: TypeSpec) -> str:
    if spec.kind == STRUCT:
        return "tns:" + spec.record.__name__
    if spec.kind == ARRAY:
        return "SOAP-ENC:Array"
    return _RPC_ITEM_TYPES.get(spec.kind, "xsd:anyType")


#: Deepest nesting of a result: deeper is a module bug (or a cycle), answered Server.Internal.
MAX_RESULT_DEPTH = 64


def _wrote_nil(out: list, name: str, value: Any, depth: int) -> bool:
    """Append ``<name xsi:nil="true"/>`` for None and say so; refuse results nested too deeply."""
    if depth > MAX_RESULT_DEPTH:
        raise ValueError("return value nested too deeply")
    if value is None:
        out.append(f'<{name} xsi:nil="true"/>')
        return True
    return False


def _fields_of(value: Any) -> Optional[dict]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def rpc_value(out: list, name: str, value: Any, spec: TypeSpec, depth: int = 0) -> None:
    """Append ``<name xsi:type=...>value</name>`` in SOAP encoding to ``out``."""
    if _wrote_nil(out, name, value, depth):
        return
    scalar = _xsd_scalar(value)
    if scalar is not None:
        xtype, text = scalar
        if spec.kind == INT and xtype == "int":
            xtype = "long"
        out.append(f'<{name} xsi:type="xsd:{xtype}">{text}</{name}>')
        return
    fields = _fields_of(value)
    if fields is not None or (isinstance(value, dict) and spec.kind == STRUCT):
        fields = fields if fields is not None else value
        record = spec.record.__name__ if spec.kind == STRUCT else "Struct"
        specs = dict(spec.fields) if spec.kind == STRUCT else {}
        out.append(f'<{name} xsi:type="{"tns:" + record if spec.kind == STRUCT else "SOAP-ENC:Struct"}">')
        for key, item in fields.items():
            rpc_value(out, _element_name(key), item, specs.get(key, _ANY), depth + 1)
        out.append(f"</{name}>")
        return
    if isinstance(value, dict):
        # An apache Map, as PHP's SoapServer writes an associative array (keys typed by kind):
        # PHP's SoapClient decodes it to an associative array, SOAP::Lite to a hash.  An empty
        # one is an empty SOAP-ENC array, as PHP writes it: PHP decodes an empty Map to null,
        # and count(null) is a TypeError in PHP 8 (ClientExec counts admin_collect's answer).
        if not value:
            out.append(f'<{name} SOAP-ENC:arrayType="xsd:ur-type[0]" xsi:type="SOAP-ENC:Array"/>')
            return
        out.append(f'<{name} xsi:type="ns2:Map">')
        for key, item in value.items():
            key_type = "int" if isinstance(key, int) and not isinstance(key, bool) else "string"
            out.append(f'<item><key xsi:type="xsd:{key_type}">%s</key>' % escape_text(str(key)))
            rpc_value(out, "value", item, _ANY, depth + 1)
            out.append("</item>")
        out.append(f"</{name}>")
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        item_spec = spec.item if spec.kind == ARRAY else _ANY
        array_type = _rpc_array_type(item_spec) if spec.kind == ARRAY else "xsd:anyType"
        out.append(f'<{name} SOAP-ENC:arrayType="{array_type}[{len(items)}]" xsi:type="SOAP-ENC:Array">')
        for item in items:
            rpc_value(out, "item", item, item_spec, depth + 1)
        out.append(f"</{name}>")
        return
    raise TypeError(f"cannot encode a {type(value).__name__} in a SOAP response")


_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _element_name(key: Any) -> str:
    key = str(key)
    return key if _NAME_OK.match(key) else "item"


_RPC_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:ns1="{ns}" xmlns:tns="urn:net.apnscp.soap" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/" '
    'xmlns:ns2="http://xml.apache.org/xml-soap" '
    'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><SOAP-ENV:Body>'
)
_DOC_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:tns="urn:net.apnscp.soap">'
    "<SOAP-ENV:Body>"
)
_TAIL = "</SOAP-ENV:Body></SOAP-ENV:Envelope>"


def encode_response(call: SoapCall, result: Any) -> bytes:
    """The response envelope for ``result`` in the dialect of ``call``."""
    spec = call.spec
    if call.dialect == DOCUMENT:
        out = [_DOC_HEAD, f'<{spec.operation}Response xmlns="{TNS}">']
        doc_value(out, f"{spec.operation}Result", result, spec.returns)
        out.append(f"</{spec.operation}Response>{_TAIL}")
    else:
        out = [_RPC_HEAD.replace("{ns}", escape_text(call.namespace)), f"<ns1:{spec.operation}Response>"]
        rpc_value(out, "return", result, spec.returns)
        out.append(f"</ns1:{spec.operation}Response>{_TAIL}")
    return "".join(out).encode("utf-8")


# Document/literal element names follow the schema Spyne generates (see wsdl.py): arrays wrap
# items named after the item type, maps are <item><key/><value xsi:type/></item> sequences.
_DOC_TYPE_NAMES = {STRING: "string", INT: "long", BOOLEAN: "boolean", FLOAT: "double", DATETIME: "dateTime",
                   ANY: "anyType", MAP: "Map"}


def doc_type_name(spec: TypeSpec) -> str:
    """The schema type name of ``spec`` in the document/literal WSDL (Spyne's naming)."""
    if spec.kind == STRUCT:
        return spec.record.__name__
    if spec.kind == ARRAY:
        return doc_type_name(spec.item) + "Array"
    return _DOC_TYPE_NAMES[spec.kind]


def doc_value(out: list, name: str, value: Any, spec: TypeSpec, depth: int = 0) -> None:
    """Append ``<name>`` as the document/literal schema declares ``spec`` (default namespace TNS)."""
    if _wrote_nil(out, name, value, depth):
        return
    kind = spec.kind
    if kind == ANY:
        _doc_any(out, name, value, depth)
        return
    if kind == ARRAY:
        item_name = doc_type_name(spec.item)
        out.append(f"<{name}>")
        for item in value:
            doc_value(out, item_name, item, spec.item, depth + 1)
        out.append(f"</{name}>")
        return
    if kind == STRUCT:
        fields = _fields_of(value)
        if fields is None:
            fields = value
        out.append(f"<{name}>")
        for fname, fspec in spec.fields:
            doc_value(out, fname, fields.get(fname), fspec, depth + 1)
        out.append(f"</{name}>")
        return
    if kind == MAP:
        _doc_map(out, f"<{name}>", name, value, depth)
        return
    scalar = _xsd_scalar(value)
    if scalar is None:
        raise TypeError(f"cannot encode a {type(value).__name__} as {spec.describe()}")
    out.append(f"<{name}>{scalar[1]}</{name}>")


def _doc_map(out: list, start_tag: str, name: str, mapping: dict, depth: int) -> None:
    """A tns:Map: <item><key/><value xsi:type/></item> per entry."""
    out.append(start_tag)
    for key, item in mapping.items():
        out.append("<item><key>%s</key>" % escape_text(str(key)))
        _doc_any(out, "value", item, depth + 1)
        out.append("</item>")
    out.append(f"</{name}>")


def _doc_any(out: list, name: str, value: Any, depth: int) -> None:
    """An xsd:anyType element: the value's type named by xsi:type."""
    if _wrote_nil(out, name, value, depth):
        return
    scalar = _xsd_scalar(value)
    if scalar is not None:
        out.append(f'<{name} xsi:type="xsd:{scalar[0]}">{scalar[1]}</{name}>')
        return
    fields = _fields_of(value)
    if fields is not None:
        value = fields
    if isinstance(value, dict):
        _doc_map(out, f'<{name} xsi:type="tns:Map">', name, value, depth)
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        out.append(f'<{name} xsi:type="tns:anyTypeArray">')
        for item in value:
            _doc_any(out, "anyType", item, depth + 1)
        out.append(f"</{name}>")
        return
    raise TypeError(f"cannot encode a {type(value).__name__} in a SOAP response")


def encode_fault(error: ApiError) -> bytes:
    """A SOAP 1.1 fault: ``SOAP-ENV:<code>`` and the error's message (same in both dialects)."""
    detail = ""
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        detail = f'<detail><retryAfter xmlns="{TNS}">{int(retry_after)}</retryAfter></detail>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
        "<SOAP-ENV:Body><SOAP-ENV:Fault>"
        f"<faultcode>SOAP-ENV:{escape_text(error.code)}</faultcode>"
        f"<faultstring>{escape_text(error.message)}</faultstring>{detail}"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode("utf-8")


def _short(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."
