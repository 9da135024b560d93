"""The WSDLs the running server serves: the committed wsdl/ files with the caller's location."""

from __future__ import annotations

import os
import ssl
import urllib.request

import pytest
from lxml import etree

from apiserver.dispatch import Registry
from apiserver.module import make_module
from apiserver.plugins import make_plugin_manager
from apiserver.transport.wsdl import COMMITTED_FILES, PLACEHOLDER_LOCATION, generate_wsdl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


def fetch(url: str) -> bytes:
    context = ssl._create_unverified_context()  # the test server's self-signed certificate
    with urllib.request.urlopen(url, timeout=30, context=context) as response:
        assert response.headers["Content-Type"].startswith("text/xml")
        return response.read()


def operations(wsdl: bytes) -> set:
    return {op.get("name") for op in etree.fromstring(wsdl).iterfind(f"{{{WSDL_NS}}}portType/{{{WSDL_NS}}}operation")}


def installed_registry() -> Registry:
    """The modules the server loads: built-ins plus installed plugins (entry points)."""
    pm = make_plugin_manager(load_entrypoints=True)
    return Registry(make_module(cls, None) for group in pm.hook.apiserver_add_modules(api=None) for cls in group)


@pytest.mark.parametrize("path,style", [
    ("/apnscp.wsdl", "rpc"), ("/soap?wsdl", "rpc"), ("/apnscp.wsdl?style=document", "document"),
])
def test_served_wsdl_is_generated_with_the_callers_location(running_server, path, style):
    """Each URL serves its style, naming the http or https URL the client used."""
    for base in (running_server.url, running_server.https_url):
        served = fetch(base + path)
        assert f'location="{base}/soap"'.encode() in served
        assert served.replace(f"{base}/soap".encode(), PLACEHOLDER_LOCATION.encode()) == \
            generate_wsdl(installed_registry(), style)


@pytest.mark.parametrize("path,style", [("/apnscp.wsdl", "rpc"), ("/apnscp.wsdl?style=document", "document")])
def test_committed_operations_are_served(running_server, path, style):
    """Every operation of the committed wsdl/ file is served; extra ones come only from installed plugins."""
    with open(os.path.join(ROOT, COMMITTED_FILES[style]), "rb") as fh:
        committed = operations(fh.read())
    served = operations(fetch(running_server.url + path))
    assert committed <= served
    builtin_modules = {name.split("_", 1)[0] for name in committed}
    assert all(name.split("_", 1)[0] not in builtin_modules for name in served - committed)


def fetch_with(url: str, headers: dict) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        return response.read()


def test_trusted_proxy_names_the_public_https_url(running_server):
    """Behind a trusted proxy (the test config trusts 127.0.0.1) X-Forwarded-Proto/Host make soap:address."""
    served = fetch_with(running_server.url + "/apnscp.wsdl",
                        {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"})
    assert b'location="https://api.example.com/soap"' in served


def test_untrusted_peer_cannot_move_soap_address(server_factory):
    """From a peer not in http_trusted_forward the forwarding headers are ignored."""
    server = server_factory({"core": {"http_trusted_forward": "192.0.2.1"}})
    served = fetch_with(server.url + "/apnscp.wsdl", {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert f'location="{server.url}/soap"'.encode() in served and b"evil" not in served
