"""Real SOAP clients against the real Site: PHP SoapClient (WSDL and non-WSDL), SOAP::Lite, zeep.

Every argument and return type (string, int, bool, float, optional, array, struct, hash, null)
and a fault, through the sample module; the account scenarios run in tests/e2e.
"""

from __future__ import annotations

import pytest
import zeep

from tests.e2e.clients.soap_clients import perl_calls, php_calls
from tests.transport.soap_testing import BAD_KEY, KEY, SESSION, SoapTestServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = SoapTestServer(str(tmp_path_factory.mktemp("clients") / "server.log"))
    yield srv
    srv.stop()


CALLS = [
    ["sample_echo", ["ab", 2]],
    ["sample_echo", ["z"]],
    ["sample_add", [2, 40]],
    ["sample_negate", [True]],
    ["sample_half", [5]],
    ["sample_split", ["only"]],
    ["sample_join", [["a", "b"], "-"]],
    ["sample_restrictions", [2]],
    ["sample_store", [{"ip": "10.1.0.0/16", "gate": "UI"}]],
    ["sample_flags", []],
    ["sample_nothing", []],
    ["sample_whoami", []],
    ["sample_missing", ["thing"]],
]
EXPECTED = [
    {"ok": "abab"},
    {"ok": "z"},
    {"ok": 42},
    {"ok": False},
    {"ok": 2.5},
    {"ok": ["only"]},
    {"ok": "a-b"},
    {"ok": [{"ip": "10.0.0.0", "gate": "SOAP"}, {"ip": "10.0.0.1", "gate": None}]},
    {"ok": {"ip": "10.1.0.0/16", "gate": "UI"}},
    {"ok": [False, True]},
    {"ok": None},
    {"ok": "admin"},
    {"fault": "SOAP-ENV:Client.NotFound", "message": "no such thing 'thing'"},
]


def test_php_wsdl_mode_positional_calls(server, php):
    """PHP SoapClient against /apnscp.wsdl with positional arguments gets native typed values."""
    out = php_calls(CALLS, wsdl=f"{server.url}/apnscp.wsdl", location=f"{server.url}/soap?authkey={KEY}")
    assert out == EXPECTED


def test_php_non_wsdl_mode(server, php):
    """PHP SoapClient without a WSDL (location + uri) decodes the xsi:types: false stays false."""
    out = php_calls(CALLS, location=f"{server.url}/soap?authkey={KEY}")
    assert out == EXPECTED


def test_php_assoc_array_arrives_as_a_hash(server, php):
    """A PHP associative array (ns2:Map) arrives as a dict with its values' types."""
    calls = [["sample_describe", [{"on": False, "n": 7, "s": "x", "l": [1]}]]]
    for out in (php_calls(calls, location=f"{server.url}/soap?authkey={KEY}"),
                php_calls(calls, wsdl=f"{server.url}/apnscp.wsdl", location=f"{server.url}/soap?authkey={KEY}")):
        assert out[0]["ok"]["types"] == {"on": "bool", "n": "int", "s": "str", "l": "list"}
        assert out[0]["ok"]["values"] == {"on": False, "n": 7, "s": "x", "l": [1]}


def test_php_bad_key_and_cookie(server, php):
    """A bad key is a SoapFault Client.Denied; the esprit_id cookie authenticates."""
    denied = php_calls([["sample_whoami", []]], location=f"{server.url}/soap?authkey={BAD_KEY}")
    assert denied == [{"fault": "SOAP-ENV:Client.Denied",
                       "message": "authentication failed: invalid or missing credentials"}]
    assert php_calls([["sample_whoami", []]], location=f"{server.url}/soap", cookie=SESSION) == [{"ok": "admin"}]


def test_perl_soap_lite(server, perl_soap_lite):
    """SOAP::Lite ->proxy->uri with positional arguments: values, structs, arrays and ->fault."""
    out = perl_calls(CALLS, proxy=f"{server.url}/soap?authkey={KEY}")
    # Perl has no booleans: SOAP::Lite turns xsd:boolean into 0/1 (a false is not the string 'false'),
    # and keeps numbers as their text.
    expected = [dict(e) for e in EXPECTED]
    expected[2], expected[3], expected[4] = {"ok": "42"}, {"ok": 0}, {"ok": "2.5"}
    expected[9] = {"ok": [0, 1]}
    assert out == expected


def test_perl_hash_and_denied(server, perl_soap_lite):
    """A Perl hash arrives as a dict; a bad key is ->fault Client.Denied; the cookie works."""
    out = perl_calls([["sample_describe", [{"n": 7, "s": "x"}]]], proxy=f"{server.url}/soap?authkey={KEY}")
    assert out[0]["ok"]["types"] == {"n": "int", "s": "str"}
    denied = perl_calls([["sample_whoami", []]], proxy=f"{server.url}/soap?authkey={BAD_KEY}")
    assert denied[0]["fault"] == "SOAP-ENV:Client.Denied"
    assert perl_calls([["sample_whoami", []]], proxy=f"{server.url}/soap", cookie=SESSION) == [{"ok": "admin"}]


def zeep_service(server, key=KEY):
    client = zeep.Client(f"{server.url}/apnscp.wsdl?style=document")
    return client.create_service("{urn:net.apnscp.soap}apnscp", f"{server.url}/soap?authkey={key}")


def test_zeep_document_style(server):
    """zeep against ?style=document: typed values, a one-element list stays a list, records."""
    svc = zeep_service(server)
    assert svc.sample_echo("ab", 2) == "abab" and svc.sample_echo(text="z") == "z"
    assert svc.sample_negate(True) is False and svc.sample_add(2, 40) == 42
    assert svc.sample_split("only") == ["only"]
    assert svc.sample_join({"string": ["a", "b"]}, "-") == "a-b"  # zeep names the wrapped array's items
    rows = svc.sample_restrictions(2)
    assert [(r.ip, r.gate) for r in rows] == [("10.0.0.0", "SOAP"), ("10.0.0.1", None)]
    assert svc.sample_store({"ip": "10.1.0.0/16", "gate": None}).ip == "10.1.0.0/16"
    assert svc.sample_flags() == [False, True] and svc.sample_nothing() is None


def test_zeep_faults(server):
    """Faults arrive as zeep Fault with the api.md code."""
    with pytest.raises(zeep.exceptions.Fault) as info:
        zeep_service(server).sample_missing("thing")
    assert info.value.code == "SOAP-ENV:Client.NotFound"
    with pytest.raises(zeep.exceptions.Fault) as info:
        zeep_service(server, BAD_KEY).sample_whoami()
    assert info.value.code == "SOAP-ENV:Client.Denied"
