"""The XML-RPC codec: a ``methodCall`` to ``(name, params)``, a result or an error to a
``methodResponse``, and the introspection answers; the resource is :mod:`apiserver.transport.xmlrpc`.

The parser is expat driven by a strict state machine: a DOCTYPE (and with it every entity
declaration and DTD) is refused before anything is expanded, unknown elements and stray text
are refused, nesting is capped.  Errors are faults whose ``faultString`` is
``"<api.md code>: <message>"`` and whose ``faultCode`` is the error's ``xmlrpc_code``.

Types both ways: string, int (``int``/``i4``/``i8``, also ``i1``/``i2``), boolean, double,
nil (``<nil/>`` and ``<ex:nil/>``), array, struct, ``dateTime.iso8601`` and base64.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import enum
import math
import re
from typing import Any, Callable
from xml.parsers import expat

from apiserver.booleans import XSD_BOOLEAN, parse_boolean
from apiserver.errors import ApiError, Malformed, ServerError
from apiserver.transport.xmltext import escape_text
from apiserver.types import ANY, ARRAY, BOOLEAN, DATETIME, FLOAT, INT, MAP, STRING, STRUCT

#: Deepest element nesting accepted in a request (a methodCall with a few nested structs is ~12).
MAX_DEPTH = 64

_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)


# --- decoding -------------------------------------------------------------------------------

class _Element:
    """An element being read: its tag, decoded children ``(tag, value)`` and text pieces."""

    __slots__ = ("tag", "children", "text")

    def __init__(self, tag: str):
        self.tag = tag
        self.children: list = []
        self.text: list = []


def _text(el: _Element) -> str:
    return "".join(el.text)


def _only_text(el: _Element) -> str:
    if el.children:
        raise Malformed(f"<{el.tag}> may contain only text, found <{el.children[0][0]}>")
    return _text(el)


def _no_text(el: _Element) -> None:
    for piece in el.text:
        if not piece.isspace():
            raise Malformed(f"<{el.tag}> may not contain text ({piece.strip()[:40]!r})")


def _children_named(el: _Element, allowed: str) -> list:
    _no_text(el)
    for tag, _ in el.children:
        if tag != allowed:
            raise Malformed(f"<{el.tag}> may contain only <{allowed}>, found <{tag}>")
    return [value for _, value in el.children]


# What the XML-RPC spec allows; Python's int() and float() also take "1_000", "nan" and "inf".
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_DOUBLE_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _decode_int(el: _Element) -> int:
    text = _only_text(el).strip()
    # The 64-bit range of <i8>, also for <int>: PHP sends 64-bit integers as <int>.
    if not _INT_TEXT.fullmatch(text) or len(text) > 20 or not _INT64[0] <= int(text) <= _INT64[1]:
        raise Malformed(f"<{el.tag}> needs a whole number within 64 bits, got {text[:40]!r}")
    return int(text)


def _decode_boolean(el: _Element) -> bool:
    text = _only_text(el)
    flag = parse_boolean(text, XSD_BOOLEAN)
    if flag is None:
        raise Malformed(f"<boolean> needs 0 or 1, got {text.strip().lower()[:40]!r}")
    return flag


def _decode_double(el: _Element) -> float:
    text = _only_text(el).strip()
    value = float(text) if _DOUBLE_TEXT.fullmatch(text) else math.nan
    if not math.isfinite(value):  # not a number, or too large for a double
        raise Malformed(f"<{el.tag}> needs a finite number, got {text[:40]!r}")
    return value


def _decode_datetime(el: _Element) -> datetime.datetime:
    text = _only_text(el).strip()
    try:
        # fromisoformat takes the XML-RPC form 20261128T18:19:14 as well as extended ISO 8601
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise Malformed(f"<dateTime.iso8601> needs a date like 20261128T18:19:14, got {text[:40]!r}") from None


def _decode_base64(el: _Element) -> Any:
    try:
        raw = base64.b64decode("".join(_only_text(el).split()), validate=True)  # line breaks are allowed
    except (binascii.Error, ValueError):
        raise Malformed("<base64> holds invalid base64") from None
    # Perl's XMLRPC::Lite sends every non-ASCII string as base64; no module type takes bytes,
    # so text comes back as text and only real binary stays bytes.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _decode_nil(el: _Element) -> None:
    if el.children or _text(el).strip():
        raise Malformed("<nil/> must be empty")
    return None


def _decode_value(el: _Element) -> Any:
    if not el.children:
        return _text(el)  # an untyped <value> is a string, whitespace kept
    _no_text(el)
    if len(el.children) != 1:
        raise Malformed("<value> holds more than one value")
    tag, value = el.children[0]
    if tag not in _TYPED:
        raise Malformed(f"<value> may not contain <{tag}>")
    return value


def _only_child(el: _Element, allowed: str) -> Any:
    """The value of the one ``<allowed>`` child of ``el`` (``<array>``'s data, ``<param>``'s value)."""
    values = _children_named(el, allowed)
    if len(values) != 1:
        raise Malformed(f"<{el.tag}> needs exactly one <{allowed}>")
    return values[0]


def _decode_member(el: _Element) -> tuple:
    _no_text(el)
    tags = [tag for tag, _ in el.children]
    if sorted(tags) != ["name", "value"]:
        raise Malformed("<member> needs one <name> and one <value>")
    found = dict(el.children)
    return found["name"], found["value"]


def _decode_struct(el: _Element) -> dict:
    return dict(_children_named(el, "member"))


def _decode_call(el: _Element) -> tuple:
    _no_text(el)
    name, params = None, []
    for tag, value in el.children:
        if tag == "methodName" and name is None:
            name = value
        elif tag == "params":
            params = value
        else:
            raise Malformed(f"<methodCall> may contain one <methodName> and one <params>, found <{tag}>")
    if not name:
        raise Malformed("<methodCall> has no <methodName>")
    return name.strip(), params


_SCALARS: dict[str, Callable[[_Element], Any]] = {
    "string": _only_text, "int": _decode_int, "i4": _decode_int, "i8": _decode_int,
    "i1": _decode_int, "i2": _decode_int, "boolean": _decode_boolean, "double": _decode_double,
    "dateTime.iso8601": _decode_datetime, "base64": _decode_base64, "nil": _decode_nil,
}
_TYPED = frozenset(_SCALARS) | {"array", "struct"}
_DECODERS: dict[str, Callable[[_Element], Any]] = dict(
    _SCALARS, value=_decode_value, array=lambda el: _only_child(el, "data"),
    data=lambda el: _children_named(el, "value"), struct=_decode_struct, member=_decode_member, name=_only_text,
    param=lambda el: _only_child(el, "value"), params=lambda el: _children_named(el, "param"),
    methodName=_only_text, methodCall=_decode_call,
)


def _refuse_doctype(*_):
    # Entity declarations and DTDs only exist inside a DOCTYPE: refusing it refuses them all.
    raise Malformed("a DOCTYPE is not allowed in XML-RPC requests (no DTDs, no entity declarations)")


def parse_call(body: bytes) -> tuple[str, list]:
    """Decode an XML-RPC ``methodCall``: ``(method name, [params])``; Malformed if it is not one.

    One expat pass; each element is decoded as it closes.  The handlers are closures over a
    plain stack (no parser <-> reader reference cycle for the collector to chase).
    """
    if not body:
        raise Malformed("empty request body: expected an XML-RPC <methodCall>")
    root = _Element("")
    stack = [root]
    push, pop = stack.append, stack.pop

    def start(tag, _attrs):
        if ":" in tag:  # <ex:nil/> and other prefixed spellings of known elements
            tag = tag.rpartition(":")[2]
        if tag not in _DECODERS:
            raise Malformed(f"unknown element <{tag[:60]}>")
        if len(stack) > MAX_DEPTH:
            raise Malformed(f"elements nested deeper than {MAX_DEPTH}")
        push(_Element(tag))

    def end(_tag):
        el = pop()
        stack[-1].children.append((el.tag, _DECODERS[el.tag](el)))

    def text(data):
        stack[-1].text.append(data)

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        raise Malformed(f"not well-formed XML: {reason} at line {exc.lineno}, column {exc.offset}") from None
    if len(root.children) != 1 or root.children[0][0] != "methodCall":
        raise Malformed("the document is not an XML-RPC <methodCall>")
    return root.children[0][1]


# --- encoding -------------------------------------------------------------------------------

def _enc_str(value, out):
    out.append("<value><string>")
    out.append(escape_text(value))
    out.append("</string></value>")


def _enc_int(value, out):
    if _INT32[0] <= value <= _INT32[1]:
        out.append(f"<value><int>{value}</int></value>")
    elif _INT64[0] <= value <= _INT64[1]:
        out.append(f"<value><i8>{value}</i8></value>")
    else:
        raise ServerError(f"the result holds an integer too large for XML-RPC ({str(value)[:30]}...)")


def _enc_bool(value, out):
    out.append("<value><boolean>1</boolean></value>" if value else "<value><boolean>0</boolean></value>")


def _enc_float(value, out):
    out.append(f"<value><double>{value!r}</double></value>")


def _enc_none(_value, out):
    out.append("<value><nil/></value>")


def _enc_datetime(value, out):
    if value.tzinfo is not None:  # XML-RPC dates carry no zone: send UTC
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    out.append(f"<value><dateTime.iso8601>{value.strftime('%Y%m%dT%H:%M:%S')}</dateTime.iso8601></value>")


def _enc_date(value, out):
    out.append(f"<value><dateTime.iso8601>{value.strftime('%Y%m%dT00:00:00')}</dateTime.iso8601></value>")


def _enc_bytes(value, out):
    out.append("<value><base64>")
    out.append(base64.b64encode(bytes(value)).decode("ascii"))
    out.append("</base64></value>")


def _enc_list(value, out):
    out.append("<value><array><data>")
    for item in value:
        _encode(item, out)
    out.append("</data></array></value>")


def _enc_dict(value, out):
    out.append("<value><struct>")
    for key, item in value.items():
        out.append("<member><name>")
        out.append(escape_text(str(key)))
        out.append("</name>")
        _encode(item, out)
        out.append("</member>")
    out.append("</struct></value>")


_ENCODERS: dict[type, Callable] = {
    str: _enc_str, int: _enc_int, bool: _enc_bool, float: _enc_float, type(None): _enc_none,
    datetime.datetime: _enc_datetime, datetime.date: _enc_date, bytes: _enc_bytes,
    bytearray: _enc_bytes, list: _enc_list, tuple: _enc_list, dict: _enc_dict,
}


def _record_encoder(cls: type) -> Callable:
    names = tuple(f.name for f in dataclasses.fields(cls))

    def encode_record(value, out):
        _enc_dict({name: getattr(value, name) for name in names}, out)

    return encode_record


def _enc_enum(value, out):
    _encode(value.value, out)


def _encoder_for(cls: type) -> Callable:
    """The encoder of a type not in the table yet: records, enums, subclasses of the plain types.

    Worked out once per type and added to ``_ENCODERS``, so each later value costs one look-up.
    """
    if dataclasses.is_dataclass(cls):
        encoder = _record_encoder(cls)
    elif issubclass(cls, enum.Enum):
        encoder = _enc_enum
    else:
        encoder = next((enc for base, enc in list(_ENCODERS.items()) if issubclass(cls, base)), None)
        if encoder is None:
            raise ServerError(f"the result holds a value XML-RPC cannot carry ({cls.__name__})")
    _ENCODERS[cls] = encoder
    return encoder


def _encode(value, out: list) -> None:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for(type(value))
    encoder(value, out)


_RESPONSE_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<methodResponse><params><param>'
_RESPONSE_TAIL = "</param></params></methodResponse>\n"


def encode_response(value: Any) -> bytes:
    """A ``methodResponse`` carrying ``value``; ServerError if a part of it cannot be encoded."""
    out = [_RESPONSE_HEAD]
    _encode(value, out)
    out.append(_RESPONSE_TAIL)
    return "".join(out).encode("utf-8")


def encode_fault(code: int, message: str) -> bytes:
    """A ``methodResponse`` carrying the fault ``{faultCode: code, faultString: message}``."""
    text = escape_text(message)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<methodResponse><fault><value><struct>'
        f"<member><name>faultCode</name><value><int>{int(code)}</int></value></member>"
        f"<member><name>faultString</name><value><string>{text}</string></value></member>"
        "</struct></value></fault></methodResponse>\n"
    ).encode("utf-8")


def fault_for(error: ApiError) -> bytes:
    """The fault for an ApiError: ``faultString`` ``"<code>: <message>"``, ``faultCode`` its xmlrpc_code."""
    return encode_fault(error.xmlrpc_code, f"{error.code}: {error.message}")


# --- introspection --------------------------------------------------------------------------

_XMLRPC_TYPES = {
    STRING: "string", INT: "int", BOOLEAN: "boolean", FLOAT: "double", DATETIME: "dateTime.iso8601",
    ARRAY: "array", STRUCT: "struct", MAP: "struct", ANY: "undef",
}


def method_signatures(spec) -> list[list[str]]:
    """``system.methodSignature``: one ``[return, param...]`` list per accepted argument count."""
    returns = _XMLRPC_TYPES[spec.returns.kind]
    types = [_XMLRPC_TYPES[p.spec.kind] for p in spec.params]
    required = sum(1 for p in spec.params if p.required)
    return [[returns] + types[:count] for count in range(required, len(types) + 1)]


def method_help(spec) -> str:
    """``system.methodHelp``: the signature line and the docstring."""
    return f"{spec.signature()}\n\n{spec.doc}".rstrip()
