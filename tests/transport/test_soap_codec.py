"""The SOAP codec on its own: each request form real clients send, and the responses they need."""

from __future__ import annotations

import pytest
from lxml import etree

from apiserver.dispatch import Registry, bind_arguments
from apiserver.errors import InvalidArgument, Malformed, NotFound, Throttled, UnknownMethod
from apiserver.transport.soap_codec import DOCUMENT, RPC, decode_request, encode_fault, encode_response

from tests.transport.soap_testing import Restriction, sample_registry

ENV = "http://schemas.xmlsoap.org/soap/envelope/"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return sample_registry()[0]


def envelope(body: str, attrs: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/" xmlns:ns2="http://xml.apache.org/xml-soap" '
        f'{attrs}><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>'
    ).encode()


RPC_ATTRS = 'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"'


def bound(registry, body: bytes) -> tuple:
    call = decode_request(body, registry.lookup)
    return call, bind_arguments(call.spec, call.positional, call.named)


def test_php_wsdl_mode_positional_parts(registry):
    """PHP SoapClient in WSDL mode: unqualified parts named after the WSDL, typed."""
    call, args = bound(registry, envelope(
        '<ns1:sample_echo xmlns:ns1="urn:net.apnscp.soap"><text xsi:type="xsd:string">hi</text>'
        '<times xsi:type="xsd:long">3</times></ns1:sample_echo>', RPC_ATTRS))
    assert call.dialect == RPC and args == {"text": "hi", "times": 3}


def test_php_non_wsdl_mode_param_names_are_positional(registry):
    """PHP without a WSDL names arguments param0, param1: they are taken by position."""
    call, args = bound(registry, envelope(
        '<ns1:sample_add xmlns:ns1="urn:net.apnscp.soap"><param0 xsi:type="xsd:int">2</param0>'
        '<param1 xsi:type="xsd:int">5</param1></ns1:sample_add>', RPC_ATTRS))
    assert call.dialect == RPC and args == {"a": 2, "b": 5}


def test_soap_lite_gensym_untyped_and_other_namespace(registry):
    """SOAP::Lite: c-gensymN names, its own namespace prefix, untyped values coerced by the spec."""
    _, args = bound(registry, envelope(
        '<namesp1:sample_negate xmlns:namesp1="http://example.com/other">'
        '<c-gensym3>false</c-gensym3></namesp1:sample_negate>', RPC_ATTRS))
    assert args == {"flag": False}


def test_qualified_rpc_arguments_by_name(registry):
    """Arguments qualified in any namespace and given out of order are matched by name."""
    _, args = bound(registry, envelope(
        '<m:sample_echo xmlns:m="urn:x"><m:times>2</m:times><m:text>ab</m:text></m:sample_echo>', RPC_ATTRS))
    assert args == {"text": "ab", "times": 2}


def test_soap_enc_array_of_strings(registry):
    """A SOAP-ENC array becomes a list; a one-element array stays a list."""
    _, args = bound(registry, envelope(
        '<ns1:sample_join xmlns:ns1="urn:net.apnscp.soap">'
        '<items SOAP-ENC:arrayType="xsd:string[1]" xsi:type="SOAP-ENC:Array">'
        '<item xsi:type="xsd:string">a</item></items>'
        '</ns1:sample_join>', RPC_ATTRS))
    assert args == {"items": ["a"], "sep": ","}


def test_apache_map_hash(registry):
    """PHP's ns2:Map encoding of an associative array becomes a dict with typed values."""
    _, args = bound(registry, envelope(
        '<ns1:sample_describe xmlns:ns1="urn:net.apnscp.soap"><options xsi:type="ns2:Map">'
        '<item><key xsi:type="xsd:string">on</key><value xsi:type="xsd:boolean">false</value></item>'
        '<item><key xsi:type="xsd:string">n</key><value xsi:type="xsd:int">7</value></item>'
        '<item><key xsi:type="xsd:string">z</key><value xsi:nil="true"/></item>'
        '</options></ns1:sample_describe>', RPC_ATTRS))
    assert args == {"options": {"on": False, "n": 7, "z": None}}


def test_soap_lite_struct_hash(registry):
    """SOAP::Lite's SOAPStruct hash becomes a record argument."""
    _, args = bound(registry, envelope(
        '<namesp1:sample_store xmlns:namesp1="urn:net.apnscp.soap">'
        '<c-gensym4 xsi:type="namesp1:SOAPStruct"><ip xsi:type="xsd:string">10.1.0.0/16</ip>'
        '<gate xsi:type="xsd:string">UI</gate></c-gensym4></namesp1:sample_store>', RPC_ATTRS))
    assert args == {"restriction": Restriction("10.1.0.0/16", "UI")}


def test_xsi_nil_and_omitted_optional_arguments(registry):
    """xsi:nil for an optional argument and leaving it out both give its default."""
    for body in ('<text>x</text><times xsi:nil="true"/>', "<text>x</text>"):
        _, args = bound(registry, envelope(f'<ns1:sample_echo xmlns:ns1="urn:y">{body}</ns1:sample_echo>', RPC_ATTRS))
        assert args == {"text": "x", "times": None}


def test_zero_argument_call_with_nil_operation(registry):
    """SOAP::Lite sends a call without arguments as <m xsi:nil="true"/>."""
    call, args = bound(registry, envelope('<namesp1:sample_whoami xsi:nil="true" xmlns:namesp1="urn:z"/>', RPC_ATTRS))
    assert call.operation == "sample_whoami" and args == {}


def test_multiref_href(registry):
    """A multi-reference argument (href to an element elsewhere in the Body) is followed."""
    _, args = bound(registry, envelope(
        '<ns1:sample_echo xmlns:ns1="urn:y"><text href="#id1"/></ns1:sample_echo>'
        '<multiRef id="id1" xsi:type="xsd:string">shared</multiRef>', RPC_ATTRS))
    assert args["text"] == "shared"


def test_document_literal_wrapped(registry):
    """zeep's document/literal request: qualified children, arrays wrapped per Spyne's schema."""
    call, args = bound(registry, envelope(
        '<tns:sample_join xmlns:tns="urn:net.apnscp.soap"><tns:items><tns:string>a</tns:string>'
        '<tns:string>b</tns:string></tns:items><tns:sep>+</tns:sep></tns:sample_join>'))
    assert call.dialect == DOCUMENT and args == {"items": ["a", "b"], "sep": "+"}


def test_wrong_type_names_the_argument(registry):
    """A typed value that does not fit is refused naming the argument, never passed as null."""
    with pytest.raises(InvalidArgument, match="argument 'a'"):
        bound(registry, envelope('<m:sample_add xmlns:m="urn:x"><a xsi:type="xsd:int">x</a><b>1</b></m:sample_add>',
                                 RPC_ATTRS))


def test_missing_required_argument_names_it(registry):
    """A missing required argument is a Client fault naming it."""
    with pytest.raises(InvalidArgument, match="missing argument 'b'"):
        bound(registry, envelope('<m:sample_add xmlns:m="urn:x"><a>1</a></m:sample_add>', RPC_ATTRS))


def test_unknown_operation(registry):
    """An operation no module exports is UnknownMethod."""
    with pytest.raises(UnknownMethod):
        decode_request(envelope('<m:sample_nope xmlns:m="urn:x"/>'), registry.lookup)


@pytest.mark.parametrize("body,reason", [
    (b"", "empty"),
    (b"<a><b></a>", "well-formed"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', "document type"),
    (b"<Envelope/>", "SOAP 1.1 Envelope"),
    (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"/>', "SOAP 1.2"),
    (b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"/>', "no Body"),
    (b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>', "no operation"),
    (b"<a>\xff\xfe</a>", "UTF-8"),
])
def test_malformed_requests(registry, body, reason):
    """Broken, DTD-carrying, non-SOAP and non-UTF-8 bodies are Client.Malformed with a reason."""
    with pytest.raises(Malformed, match=reason):
        decode_request(body, registry.lookup)


def rpc_response(registry, operation: str, result) -> etree._Element:
    call = decode_request(envelope(f'<m:{operation} xmlns:m="urn:net.apnscp.soap"/>', RPC_ATTRS), registry.lookup)
    root = etree.fromstring(encode_response(call, result))
    return root.find(f"{{{ENV}}}Body")[0][0]


XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def test_rpc_response_types_every_value(registry):
    """RPC responses carry xsi:type: booleans as xsd:boolean, arrays with arrayType, structs typed."""
    value = rpc_response(registry, "sample_negate", False)
    assert value.get(XSI_TYPE) == "xsd:boolean" and value.text == "false"
    array = rpc_response(registry, "sample_split", ["only"])
    assert array.get(XSI_TYPE) == "SOAP-ENC:Array"
    assert array.get("{http://schemas.xmlsoap.org/soap/encoding/}arrayType") == "xsd:string[1]"
    structs = rpc_response(registry, "sample_restrictions", [Restriction("10.0.0.0/8", None)])
    assert structs.get("{http://schemas.xmlsoap.org/soap/encoding/}arrayType") == "tns:Restriction[1]"
    gate = structs[0].find("gate")
    assert gate.get("{http://www.w3.org/2001/XMLSchema-instance}nil") == "true"
    assert rpc_response(registry, "sample_add", 3).get(XSI_TYPE) == "xsd:long"


def test_rpc_response_escapes_and_replaces_invalid_characters(registry):
    """Markup and control characters in strings cannot break the response document."""
    value = rpc_response(registry, "sample_echo", "<a&b>\x00\"")
    assert value.text == "<a&b>\ufffd\""


def test_fault_carries_code_and_message():
    """A fault names SOAP-ENV:<code> and the message; Throttled adds retryAfter."""
    root = etree.fromstring(encode_fault(NotFound("no site 'x'")))
    fault = root.find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault.findtext("faultcode") == "SOAP-ENV:Client.NotFound"
    assert fault.findtext("faultstring") == "no site 'x'"
    throttled = etree.fromstring(encode_fault(Throttled(retry_after=30)))
    assert throttled.findtext(".//{urn:net.apnscp.soap}retryAfter") == "30"


def test_document_request_with_typed_any_value_stays_document(registry):
    """zeep types anyType arguments with xsi:type; the request is still document/literal."""
    call, args = bound(registry, envelope(
        '<tns:sample_anything xmlns:tns="urn:net.apnscp.soap">'
        '<tns:value xsi:type="xsd:boolean">false</tns:value></tns:sample_anything>'))
    assert call.dialect == DOCUMENT and args == {"value": False}


def test_mutated_requests_never_escape_as_non_api_errors(registry):
    """Thousands of byte-level mutations of valid requests decode or fail with an ApiError only."""
    import random

    from apiserver.errors import ApiError

    seeds = [
        envelope('<ns1:sample_describe xmlns:ns1="urn:net.apnscp.soap"><options xsi:type="ns2:Map">'
                 '<item><key xsi:type="xsd:string">k</key><value xsi:type="xsd:int">1</value></item>'
                 '</options></ns1:sample_describe>', RPC_ATTRS),
        envelope('<ns1:sample_join xmlns:ns1="urn:net.apnscp.soap"><items SOAP-ENC:arrayType="xsd:string[2]" '
                 'xsi:type="SOAP-ENC:Array"><item>a</item><item href="#r"/></items></ns1:sample_join>'
                 '<multiRef id="r">b</multiRef>', RPC_ATTRS),
        envelope('<tns:sample_store xmlns:tns="urn:net.apnscp.soap"><tns:restriction><tns:ip>1.2.3.4</tns:ip>'
                 '</tns:restriction></tns:sample_store>'),
    ]
    rng = random.Random(1234)
    alphabet = b'<>/="\':xsi ns1 item key value href #r \x00\xff&;'
    for _ in range(3000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(body))
            action = rng.random()
            if action < 0.4:
                del body[pos:pos + rng.randint(1, 8)]
            elif action < 0.8:
                body[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            else:
                body[pos] = rng.randrange(256)
        try:
            call = decode_request(bytes(body), registry.lookup)
            bind_arguments(call.spec, call.positional, call.named)
        except ApiError:
            pass


def test_multiref_expansion_bomb_is_refused(registry):
    """hrefs pointing many times at elements full of hrefs cannot blow up into billions of values."""
    refs = '<item href="#l1"/>' * 60  # 60 ** 6 values if every level were expanded
    levels = "".join(
        f'<multiRef id="l{n}" xsi:type="SOAP-ENC:Array">' + "".join(f'<item href="#l{n + 1}"/>' for _ in range(60))
        + "</multiRef>" for n in range(1, 6))
    body = envelope(f'<m:sample_anything xmlns:m="urn:x"><value xsi:type="SOAP-ENC:Array">{refs}</value>'
                    f'</m:sample_anything>{levels}<multiRef id="l6">x</multiRef>', RPC_ATTRS)
    with pytest.raises(Malformed, match="more than"):
        decode_request(body, registry.lookup)


@pytest.mark.parametrize("refs", [
    '<multiRef id="a" href="#b"/><multiRef id="b" href="#a"/>',          # a cycle
    '<multiRef id="a" href="#b"/><multiRef id="b">value</multiRef>',     # a chain
])
def test_href_to_another_href_is_refused(registry, refs):
    """An href must name the element holding the value; chains and cycles are Malformed, not an empty string."""
    body = envelope(f'<m:sample_echo xmlns:m="urn:x"><text href="#a"/></m:sample_echo>{refs}', RPC_ATTRS)
    with pytest.raises(Malformed, match="points at another href"):
        decode_request(body, registry.lookup)


def test_too_deep_xml_is_refused_without_parser_advice(registry):
    """Nesting past libxml2's limit is Malformed naming the depth, without lxml's XML_PARSE_HUGE hint."""
    body = envelope('<m:sample_echo xmlns:m="urn:x"><text>' + "<a>" * 300 + "</a>" * 300 + "</text></m:sample_echo>")
    with pytest.raises(Malformed, match="depth") as info:
        decode_request(body, registry.lookup)
    assert "XML_PARSE_HUGE" not in info.value.message


@pytest.mark.parametrize("request_body", [
    envelope('<m:sample_anything xmlns:m="urn:x"/>', RPC_ATTRS),
    envelope('<tns:sample_anything xmlns:tns="urn:net.apnscp.soap"/>'),
], ids=["rpc", "document"])
def test_self_containing_result_is_refused_in_both_dialects(registry, request_body):
    """A result that contains itself stops at the depth limit (ValueError -> Server.Internal), no RecursionError."""
    loop: list = []
    loop.append(loop)
    call = decode_request(request_body, registry.lookup)
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_response(call, {"value": loop})
