"""The XML-RPC codec: strict, hardened decoding and the encoder, checked against xmlrpc.client."""

import dataclasses
import datetime
import enum
import xmlrpc.client

import pytest

from apiserver.errors import ALL_ERRORS, ApiError, Malformed, NotFound, ServerError
from apiserver.transport.xmlrpc_codec import MAX_DEPTH, encode_fault, encode_response, fault_for, parse_call


def call(params_xml: str, name: str = "sample.echo") -> bytes:
    return (f'<?xml version="1.0"?><methodCall><methodName>{name}</methodName>'
            f"<params>{params_xml}</params></methodCall>").encode()


def param(value_xml: str) -> str:
    return f"<param><value>{value_xml}</value></param>"


def decode(value):
    """Round trip through the stdlib client: what a Python caller receives."""
    (result,), _ = xmlrpc.client.loads(encode_response(value), use_builtin_types=True)
    return result


# --- decoding ---------------------------------------------------------------------------

def test_stdlib_request_decodes_to_the_same_values():
    """Every type xmlrpc.client sends comes out as the Python value it started as."""
    values = (1, -5, "a<b&c", "é ü", True, False, 2.5, None, [1, [2, "x"]], {"k": {"z": [True]}},
              datetime.datetime(2026, 1, 2, 3, 4, 5), b"\xff\x00binary", "")
    body = xmlrpc.client.dumps(values, "auth.restrict_ip", allow_none=True).encode()
    name, params = parse_call(body)
    assert name == "auth.restrict_ip"
    assert params == list(values)


@pytest.mark.parametrize("value_xml, expected", [
    ("<int>7</int>", 7), ("<i4>-3</i4>", -3), ("<i8>9223372036854775807</i8>", 2 ** 63 - 1),
    ("<i1>1</i1>", 1), ("<i2> 12 </i2>", 12),
    ("<int>+4294967296</int>", 2 ** 32), ("<i8>-9223372036854775808</i8>", -2 ** 63), ("<double>.5</double>", 0.5),
    ("<boolean>1</boolean>", True), ("<boolean>0</boolean>", False), ("<boolean>true</boolean>", True),
    ("<double>1.5</double>", 1.5), ("<double>-2e3</double>", -2000.0),
    ("<string>  spaced  </string>", "  spaced  "), ("<string/>", ""), ("untyped text", "untyped text"),
    ("", ""), ("<nil/>", None), ("<ex:nil/>", None),
    ("<dateTime.iso8601>20261128T18:19:14</dateTime.iso8601>", datetime.datetime(2026, 11, 28, 18, 19, 14)),
    ("<dateTime.iso8601>2026-11-28T18:19:14</dateTime.iso8601>", datetime.datetime(2026, 11, 28, 18, 19, 14)),
    ("<base64>aGVsbG8=</base64>", "hello"), ("<base64>/wA=</base64>", b"\xff\x00"),
    ("<array><data/></array>", []),
    ("<array><data><value><int>1</int></value><value>a</value></data></array>", [1, "a"]),
    ("<struct/>", {}),
    ("<struct><member><name>a</name><value><nil/></value></member>"
     "<member><value><int>2</int></value><name>b</name></member></struct>", {"a": None, "b": 2}),
    ("<string>&lt;&amp;&#233;&#x41;</string>", "<&éA"),
])
def test_each_type_decodes(value_xml, expected):
    """Each XML-RPC type (and the nil extension, both spellings) decodes to its Python value."""
    _, params = parse_call(call(param(value_xml)))
    assert params == [expected] and type(params[0]) is type(expected)


def test_no_params_and_whitespace_between_elements():
    """A call without <params> and a pretty-printed call both decode."""
    bare = b"<methodCall><methodName>system.listMethods</methodName></methodCall>"
    assert parse_call(bare) == ("system.listMethods", [])
    pretty = b"""<?xml version="1.0"?>
<methodCall>
  <methodName> sample.add </methodName>
  <params>
    <param>
      <value><int>1</int></value>
    </param>
  </params>
</methodCall>"""
    assert parse_call(pretty) == ("sample.add", [1])


@pytest.mark.parametrize("body, fragment", [
    (b"", "empty request body"),
    (b"not xml", "not well-formed XML"),
    (b"<methodCall>", "not well-formed XML"),
    (b"<methodResponse><params/></methodResponse>", "unknown element <methodResponse>"),
    (b"<value>1</value>", "not an XML-RPC <methodCall>"),
    (b"<methodCall><params/></methodCall>", "no <methodName>"),
    (call(param("<int>x</int>")), "<int> needs a whole number"),
    (call(param("<boolean>2</boolean>")), "<boolean> needs 0 or 1"),
    (call(param("<double>abc</double>")), "<double> needs a finite number"),
    (call(param("<double>NaN</double>")), "<double> needs a finite number"),
    (call(param("<double>-Infinity</double>")), "<double> needs a finite number"),
    (call(param("<double>1e999</double>")), "<double> needs a finite number"),
    (call(param("<int>1_000</int>")), "<int> needs a whole number"),
    (call(param("<int>9223372036854775808</int>")), "within 64 bits"),
    (call(param("<i8>-9223372036854775809</i8>")), "within 64 bits"),
    (call(param("<int>" + "9" * 5000 + "</int>")), "within 64 bits"),
    (call(param("<dateTime.iso8601>yesterday</dateTime.iso8601>")), "<dateTime.iso8601> needs a date"),
    (call(param("<base64>!!!</base64>")), "invalid base64"),
    (call(param("<int>1</int><int>2</int>")), "more than one value"),
    (call(param("<script/>")), "unknown element <script>"),
    (call(param("<array><value>1</value></array>")), "<array> may contain only <data>"),
    (call(param("<array><data>stray<value>1</value></data></array>")), "may not contain text"),
    (call(param("<struct><member><name>a</name></member></struct>")), "one <name> and one <value>"),
    (call(param("<struct><value>1</value></struct>")), "<struct> may contain only <member>"),
    (call(param("<int><int>1</int></int>")), "may contain only text"),
    (call(param("<nil>x</nil>")), "<nil/> must be empty"),
    (call("<param></param>"), "<param> needs exactly one <value>"),
    (b"<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>", "one <methodName>"),
])
def test_malformed_requests_are_refused_with_a_reason(body, fragment):
    """Bad XML and bad XML-RPC raise Malformed saying what is wrong."""
    with pytest.raises(Malformed) as info:
        parse_call(body)
    assert fragment in info.value.message


def test_doctype_and_entities_are_refused_before_expansion():
    """A DOCTYPE (billion laughs, external entities) is refused outright."""
    entities = b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10))
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">' + entities
              + b"]><methodCall><methodName>&lol9;</methodName></methodCall>")
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                b"<methodCall><methodName>&e;</methodName></methodCall>")
    for body in (laughs, external, b'<!DOCTYPE methodCall SYSTEM "http://127.0.0.1:1/x.dtd"><methodCall/>'):
        with pytest.raises(Malformed, match="DOCTYPE is not allowed"):
            parse_call(body)


def test_undeclared_entity_is_malformed():
    """An entity reference without a declaration is not well-formed, not silently kept."""
    with pytest.raises(Malformed, match="undefined entity"):
        parse_call(call(param("<string>&nope;</string>")))


def test_nesting_is_capped():
    """Deeply nested arrays are refused instead of exhausting the stack."""
    deep = "<array><data><value>" * MAX_DEPTH + "1" + "</value></data></array>" * MAX_DEPTH
    with pytest.raises(Malformed, match="nested deeper"):
        parse_call(call(param(deep)))


# --- encoding ---------------------------------------------------------------------------

@dataclasses.dataclass
class Key:
    key: str
    last_used: datetime.datetime | None
    comment: str


class Colour(str, enum.Enum):
    RED = "red"


@pytest.mark.parametrize("value", [
    "plain", "a<b>&c", "line\r\nbreaks\r", "é ü 日本", "", 0, -1,
    2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 63), 2 ** 63 - 1,
    True, False, 1.25, None, [], {}, [1, "a", None, [True]], {"a": {"b": [1.5]}, "c&d": None},
    datetime.datetime(2026, 11, 28, 18, 19, 14), b"\x00\xffbinary",
])
def test_encoded_values_round_trip_through_xmlrpc_client(value):
    """What the server encodes, Python's client decodes to the same value (i8 beyond 32 bits)."""
    assert decode(value) == value


def test_records_enums_tuples_and_aware_dates_become_plain_values():
    """Dataclass records become structs, enums their value, aware datetimes UTC."""
    when = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert decode([Key("k1", when, "c"), Colour.RED, (1, 2)]) == [
        {"key": "k1", "last_used": datetime.datetime(2026, 1, 1, 10, 0), "comment": "c"}, "red", [1, 2]]
    assert decode(datetime.date(2026, 3, 4)) == datetime.datetime(2026, 3, 4)


def test_large_int_uses_i8_and_too_large_is_a_server_error():
    """Ints past 32 bits go as <i8>; past 64 bits the encoder refuses instead of sending garbage."""
    assert b"<i8>4294967296</i8>" in encode_response(2 ** 32)
    with pytest.raises(ServerError, match="too large"):
        encode_response(2 ** 64)


def test_unknown_types_raise_server_error():
    """A value of an unknown type raises ServerError, never produces broken XML."""
    with pytest.raises(ServerError):
        encode_response(object())


def test_control_characters_arrive_replaced_like_over_soap():
    """Characters XML cannot carry become U+FFFD in values and keys, as in the SOAP dialect."""
    (value,), _ = xmlrpc.client.loads(encode_response({"k\x01": "bad\x00char"}))
    assert value == {"k\ufffd": "bad\ufffdchar"}


def test_fault_string_and_code():
    """A fault carries "<code>: <message>" and the error's stable xmlrpc_code."""
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(fault_for(NotFound("no site <x> & co")))
    assert info.value.faultCode == 404
    assert info.value.faultString == "Client.NotFound: no site <x> & co"


def test_fault_with_control_characters_stays_well_formed():
    """A message with characters XML cannot carry is still a readable fault."""
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(encode_fault(400, "bad\x00byte"))
    assert info.value.faultString == "bad\ufffdbyte"


def test_every_error_has_a_distinct_integer_fault_code():
    """The documented faultCode table: integers, one per api.md code."""
    codes = {}
    for error in ALL_ERRORS:
        assert isinstance(error.xmlrpc_code, int)
        codes.setdefault(error.code, error.xmlrpc_code)
        assert codes[error.code] == error.xmlrpc_code
    assert len(set(codes.values())) == len(codes)
    assert issubclass(Malformed, ApiError)
