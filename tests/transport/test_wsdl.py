"""Both WSDLs: their shape, determinism, served location, and the committed copies in wsdl/."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest
from lxml import etree

from apiserver.transport.wsdl import (
    COMMITTED_FILES, DOCUMENT_STYLE, PLACEHOLDER_LOCATION, REGENERATE_COMMAND, RPC_STYLE, WsdlCache,
    builtin_registry, generate_wsdl, request_location,
)
from tests.transport.soap_testing import sample_registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NS = {"w": "http://schemas.xmlsoap.org/wsdl/", "s": "http://schemas.xmlsoap.org/wsdl/soap/",
      "xsd": "http://www.w3.org/2001/XMLSchema"}


@pytest.fixture(scope="module")
def registry():
    return sample_registry()[0]


def test_rpc_wsdl_has_one_typed_part_per_argument(registry):
    """RPC style, SOAP encoding, each argument a part with its XSD type, in declaration order."""
    root = etree.fromstring(generate_wsdl(registry, RPC_STYLE))
    assert root.get("targetNamespace") == "urn:net.apnscp.soap"
    assert root.find("w:binding/s:binding", NS).get("style") == "rpc"
    bodies = root.findall("w:binding/w:operation/*/s:body", NS)
    assert bodies and all(b.get("use") == "encoded" and b.get("namespace") == "urn:net.apnscp.soap" for b in bodies)
    parts = root.findall("w:message[@name='sample_echoRequest']/w:part", NS)
    assert [(p.get("name"), p.get("type")) for p in parts] == [("text", "xsd:string"), ("times", "xsd:long")]
    op = root.find("w:portType/w:operation[@name='sample_echo']", NS)
    assert op.get("parameterOrder") == "text times"


def test_rpc_wsdl_arrays_and_structs_are_soap_encoded(registry):
    """Arrays restrict soapenc:Array with their item type; records are complex types with fields."""
    root = etree.fromstring(generate_wsdl(registry, RPC_STYLE))
    ret = root.find("w:message[@name='sample_restrictionsResponse']/w:part", NS)
    assert ret.get("type") == "tns:ArrayOfRestriction"
    attr = root.find("w:types/xsd:schema/xsd:complexType[@name='ArrayOfRestriction']//xsd:attribute", NS)
    assert attr.get("{http://schemas.xmlsoap.org/wsdl/}arrayType") == "tns:Restriction[]"
    fields = root.findall("w:types/xsd:schema/xsd:complexType[@name='Restriction']//xsd:element", NS)
    assert [(f.get("name"), f.get("nillable")) for f in fields] == [("ip", None), ("gate", "true")]


def test_document_wsdl_is_wrapped_literal_and_loads_in_zeep(registry, tmp_path):
    """The document WSDL is document/literal with a wrapper element per operation; zeep reads it."""
    import zeep

    data = generate_wsdl(registry, DOCUMENT_STYLE)
    root = etree.fromstring(data)
    assert {b.get("use") for b in root.findall("w:binding/w:operation/*/s:body", NS)} == {"literal"}
    assert root.find("w:binding/s:binding", NS).get("transport") == "http://schemas.xmlsoap.org/soap/http"
    path = tmp_path / "doc.wsdl"
    path.write_bytes(data)
    client = zeep.Client(str(path))
    operations = client.wsdl.services["apnscp"].ports["apnscp"].binding._operations
    assert "sample_join" in operations and "sample_restrictions" in operations


def test_unknown_style_is_refused(registry):
    """Only rpc and document exist."""
    with pytest.raises(ValueError, match="rpc or document"):
        generate_wsdl(registry, "soap12")


def test_served_copy_differs_only_in_location(registry):
    """The cache serves the generated WSDL with soap:address naming the client's URL."""
    cache = WsdlCache(registry)
    for style in (RPC_STYLE, DOCUMENT_STYLE):
        served = cache.get(style, "https://api.example.com:2083/soap")
        assert served.replace(b"https://api.example.com:2083/soap", PLACEHOLDER_LOCATION.encode()) == \
            generate_wsdl(registry, style)


GENERATE = (
    "import sys; sys.path.insert(0, {root!r}); from tests.transport.soap_testing import sample_registry; "
    "from apiserver.transport.wsdl import generate_wsdl; "
    "sys.stdout.buffer.write(generate_wsdl(sample_registry()[0], {style!r}))"
)


@pytest.mark.parametrize("style", [RPC_STYLE, DOCUMENT_STYLE])
def test_generation_is_deterministic_across_processes(style):
    """Two processes with different hash seeds generate identical bytes (the drift test relies on it)."""
    outputs = set()
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", GENERATE.format(root=ROOT, style=style)], capture_output=True,
                             env=dict(os.environ, PYTHONHASHSEED=seed), timeout=120, check=True)
        outputs.add(out.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize("style", [RPC_STYLE, DOCUMENT_STYLE])
def test_committed_wsdl_matches_the_built_in_modules(style):
    """wsdl/ holds exactly what the built-in modules generate."""
    path = os.path.join(ROOT, COMMITTED_FILES[style])
    if not os.path.exists(path):
        pytest.fail(f"{COMMITTED_FILES[style]} is missing; generate it with: {REGENERATE_COMMAND}")
    with open(path, "rb") as fh:
        committed = fh.read()
    assert committed == generate_wsdl(builtin_registry(), style), \
        f"{COMMITTED_FILES[style]} is out of date; regenerate with: {REGENERATE_COMMAND}"


def _proxied_request(peer: str, headers: dict, secure: bool = False):
    from twisted.internet.address import IPv4Address
    from twisted.web.test.requesthelper import DummyRequest

    request = DummyRequest([b"apnscp.wsdl"])
    request.client = IPv4Address("TCP", peer, 40000)
    request.isSecure = lambda: secure
    request.requestHeaders.setRawHeaders(b"host", [b"10.0.0.5:2082"])
    for name, values in headers.items():
        request.requestHeaders.setRawHeaders(name.encode(), [v.encode() for v in values])
    return request


TRUSTED = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.mark.parametrize("peer, headers, location", [
    ("127.0.0.1", {"x-forwarded-proto": ["https"], "x-forwarded-host": ["api.example.com"]},
     "https://api.example.com/soap"),
    # the proxy appends: the right-most value is its own, what the client sent is left of it
    ("127.0.0.1", {"x-forwarded-proto": ["http, https"], "x-forwarded-host": ["evil.example", "api.example.com:8443"]},
     "https://api.example.com:8443/soap"),
    ("127.0.0.1", {"x-forwarded-proto": ["gopher"], "x-forwarded-host": ['x"/><y a="']}, "http://10.0.0.5:2082/soap"),
    ("192.0.2.7", {"x-forwarded-proto": ["https"], "x-forwarded-host": ["evil.example"]}, "http://10.0.0.5:2082/soap"),
])
def test_forwarded_proto_and_host_only_from_trusted_proxies(peer, headers, location):
    """X-Forwarded-Proto/Host change soap:address only from a trusted proxy and only when well-formed."""
    assert request_location(_proxied_request(peer, headers), TRUSTED) == location


def test_forwarded_headers_ignored_without_trusted_proxies():
    """With http_trusted_forward empty nobody's forwarding headers count."""
    request = _proxied_request("127.0.0.1", {"x-forwarded-proto": ["https"], "x-forwarded-host": ["a.example"]})
    assert request_location(request, []) == "http://10.0.0.5:2082/soap"
