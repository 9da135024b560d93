"""/soap over real HTTP: every bad request gets a SOAP Client fault, never an empty 500."""

from __future__ import annotations

import http.client

import pytest
from lxml import etree

from tests.transport.soap_testing import BAD_KEY, KEY, SESSION, THROTTLED_KEY, SoapTestServer

ENV = "http://schemas.xmlsoap.org/soap/envelope/"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = SoapTestServer(str(tmp_path_factory.mktemp("soap") / "server.log"))
    yield srv
    srv.stop()


def envelope(inner: str, attrs: str = "") -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
            'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            f'{attrs}><SOAP-ENV:Body>{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()


def post(server, body: bytes, key: str | None = KEY, cookie: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if cookie:
        headers["Cookie"] = f"esprit_id={cookie}"
    conn.request("POST", "/soap" + (f"?authkey={key}" if key else ""), body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def fault_of(status: int, body: bytes) -> tuple:
    """(faultcode, faultstring) of a SOAP 1.1 fault answer; fails on anything else."""
    assert status == 500 and body, "a fault must be HTTP 500 with a SOAP body"
    fault = etree.fromstring(body).find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault is not None
    return fault.findtext("faultcode"), fault.findtext("faultstring")


BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                  b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
                  b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
                  b'<m:sample_echo xmlns:m="urn:x"><text>&lol3;</text></m:sample_echo>'
                  b'</SOAP-ENV:Body></SOAP-ENV:Envelope>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
       b'<m:sample_echo xmlns:m="urn:x"><text>&x;</text></m:sample_echo></SOAP-ENV:Body></SOAP-ENV:Envelope>')


@pytest.mark.parametrize("body", [
    b"", b"   ", b"<not xml", b"\xff\xfe<\x00a\x00>\x00", BILLION_LAUGHS, XXE,
    b'<?xml version="1.0" encoding="ISO-8859-1"?>'
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
    b'<m:sample_echo xmlns:m="urn:x"><text>caf\xe9</text></m:sample_echo></SOAP-ENV:Body></SOAP-ENV:Envelope>',
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
    b'<m:sample_echo xmlns:m="urn:x"><text>caf\xe9</text></m:sample_echo></SOAP-ENV:Body></SOAP-ENV:Envelope>',
], ids=["empty", "blank", "broken", "utf16", "billion-laughs", "xxe", "latin1-decl", "invalid-utf8"])
def test_malformed_bodies_get_client_malformed(server, body):
    """Broken XML, DTDs (entity bombs, external entities) and invalid UTF-8 are Client.Malformed."""
    code, message = fault_of(*post(server, body))
    assert code == "SOAP-ENV:Client.Malformed", message
    assert "root:" not in message and "lol" not in message


def test_unknown_operation_is_client_unknown_method(server):
    """An operation no module exports is Client.UnknownMethod with suggestions."""
    code, message = fault_of(*post(server, envelope('<m:sample_eco xmlns:m="urn:x"/>')))
    assert code == "SOAP-ENV:Client.UnknownMethod" and "sample_echo" in message


def test_wrong_argument_type_is_client_invalid_argument(server):
    """A value of the wrong type is Client.InvalidArgument naming the argument."""
    code, message = fault_of(*post(server, envelope(
        '<m:sample_add xmlns:m="urn:x"><a xsi:type="xsd:int">ten</a><b>1</b></m:sample_add>')))
    assert code == "SOAP-ENV:Client.InvalidArgument" and "'a'" in message


def test_bad_key_is_client_denied(server):
    """A wrong or missing key is Client.Denied."""
    for key in (BAD_KEY, None):
        code, _ = fault_of(*post(server, envelope('<m:sample_whoami xmlns:m="urn:x"/>'), key=key))
        assert code == "SOAP-ENV:Client.Denied"


def test_throttled_is_a_fault_with_retry_after(server):
    """Anvil's refusal is Client.Throttled with the wait in the fault detail and Retry-After."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", f"/soap?authkey={THROTTLED_KEY}", body=envelope('<m:sample_whoami xmlns:m="urn:x"/>'),
                 headers={"Content-Type": "text/xml"})
    response = conn.getresponse()
    body = response.read()
    assert fault_of(response.status, body)[0] == "SOAP-ENV:Client.Throttled"
    assert response.getheader("Retry-After") == "42" and b">42</retryAfter>" in body


def test_session_cookie_authenticates(server):
    """The esprit_id cookie stands in for authkey."""
    status, body = post(server, envelope('<m:sample_whoami xmlns:m="urn:x"/>'), key=None, cookie=SESSION)
    assert status == 200 and b">admin</return>" in body


def test_module_bug_is_server_internal_without_details(server):
    """A non-API exception becomes Server.Internal; its text stays in the server log."""
    code, message = fault_of(*post(server, envelope('<m:sample_crash xmlns:m="urn:x"/>')))
    assert code == "SOAP-ENV:Server.Internal" and "secret-path" not in message
    assert "secret-path" in server.log()


def test_document_request_gets_document_response(server):
    """A document/literal request is answered with <opResponse><opResult> in the tns namespace."""
    status, body = post(server, envelope(
        '<tns:sample_split xmlns:tns="urn:net.apnscp.soap"><tns:text>one</tns:text></tns:sample_split>'))
    assert status == 200
    result = etree.fromstring(body).find(
        f"{{{ENV}}}Body/{{urn:net.apnscp.soap}}sample_splitResponse/{{urn:net.apnscp.soap}}sample_splitResult")
    assert [e.text for e in result] == ["one"] and result[0].tag == "{urn:net.apnscp.soap}string"


def test_rpc_request_gets_rpc_response_in_its_namespace(server):
    """An RPC request is answered in the operation element's namespace with typed values."""
    status, body = post(server, envelope(
        '<m:sample_negate xmlns:m="urn:other"><flag xsi:type="xsd:boolean">true</flag></m:sample_negate>',
        'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"'))
    assert status == 200
    value = etree.fromstring(body).find(f"{{{ENV}}}Body/{{urn:other}}sample_negateResponse/return")
    assert value.text == "false" and value.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "xsd:boolean"


def test_disabled_api_is_403_with_reason(tmp_path):
    """The gate's HTTP refusal is answered before the body is read, with its status and reason."""
    srv = SoapTestServer(str(tmp_path / "server.log"), {"soap": {"enabled": "false"}})
    try:
        status, body = post(srv, envelope('<m:sample_whoami xmlns:m="urn:x"/>'))
        assert status == 403 and b"disabled" in body
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/apnscp.wsdl")
        assert conn.getresponse().status == 403
    finally:
        srv.stop()


@pytest.mark.parametrize("query", [f"authkey={BAD_KEY}&authkey={KEY}", f"authkey={KEY}&authkey={BAD_KEY}"])
def test_repeated_authkey_is_denied_whatever_the_order(server, query):
    """Two authkey parameters are a Client.Denied fault, not the first or last one silently."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/soap?" + query, body=envelope('<m:sample_whoami xmlns:m="urn:x"/>'),
                 headers={"Content-Type": "text/xml"})
    response = conn.getresponse()
    code, message = fault_of(response.status, response.read())
    assert code == "SOAP-ENV:Client.Denied" and "more than once" in message
