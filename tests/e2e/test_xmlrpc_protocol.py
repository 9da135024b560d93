"""XML-RPC protocol behaviour of a running server, with xmlrpc.client and raw HTTP: nil,
introspection, multicall, sessions, IP restrictions at gate SOAP, the toggle and hostile bodies."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
import xmlrpc.client

import pytest


def proxy(server, key=None, cookie=None, forwarded_for=None) -> xmlrpc.client.ServerProxy:
    headers = []
    if cookie:
        headers.append(("Cookie", f"esprit_id={cookie}"))
    if forwarded_for:
        headers.append(("X-Forwarded-For", forwarded_for))
    url = f"{server.url}/xmlrpc" + (f"?authkey={key}" if key else "")
    return xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True, headers=headers)


def raw_post(server, body: bytes, key=None, content_type="text/xml"):
    """POST ``body`` to /xmlrpc; (status, headers, body)."""
    url = f"{server.url}/xmlrpc" + (f"?authkey={key}" if key else "")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def site(running_server):
    """A site with its administrator's API key: (domain, key)."""
    admin = proxy(running_server, running_server.admin_key)
    domain = f"proto-{uuid.uuid4().hex[:8]}.example.com"
    admin.admin_add_site(domain, "siteadmin", {"siteinfo.email": f"admin@{domain}", "auth.tpasswd": "Site-pass-123"})
    sid = admin.admin_hijack(domain)
    key = proxy(running_server, cookie=sid).auth_create_api_key("protocol tests")
    return domain, key


def test_nil_goes_both_ways(running_server, site):
    """None is sent and received as <nil/>: an optional argument and a null result field."""
    client = proxy(running_server, site[1])
    assert client.auth_get_ip_restrictions(None) == []
    (key,) = [k for k in client.auth_get_api_keys(None) if k["comment"] == "protocol tests"]
    assert "last_used" in key  # a datetime or None, both decoded


def test_introspection_lists_and_describes_every_function(running_server):
    """system.listMethods has both spellings; methodSignature/methodHelp describe auth_restrict_ip."""
    client = proxy(running_server)
    methods = client.system.listMethods()
    assert {"auth_restrict_ip", "auth.restrict_ip", "common_whoami", "system.multicall"} <= set(methods)
    assert client.system.methodSignature("auth.restrict_ip") == [["boolean", "string"], ["boolean", "string", "string"]]
    help_text = client.system.methodHelp("auth_restrict_ip")
    assert help_text.startswith("auth:restrict-ip(string ip, string|null gate = null)")


def test_multicall(running_server, site):
    """system.multicall runs several calls as one identity, faults in place."""
    client = proxy(running_server, site[1])
    multi = xmlrpc.client.MultiCall(client)
    multi.common.whoami()
    multi.admin.list_sites()
    results = multi()
    assert results[0]["site"] == site[0]
    with pytest.raises(xmlrpc.client.Fault) as info:
        results[1]
    assert info.value.faultCode == 403


def test_hijack_session_cookie(running_server, site):
    """admin_hijack's session id works as the esprit_id cookie; a made-up one is refused."""
    sid = proxy(running_server, running_server.admin_key).admin_hijack(site[0], None, "SOAP")
    assert proxy(running_server, cookie=sid).common_whoami()["site"] == site[0]
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy(running_server, cookie="f" * 32).common_whoami()
    assert info.value.faultCode == 403


def test_ip_restriction_applies_to_xmlrpc_at_gate_soap(running_server):
    """Once a SOAP-gate restriction exists, only the listed address may use the key."""
    admin = proxy(running_server, running_server.admin_key)
    domain = f"ipr-{uuid.uuid4().hex[:8]}.example.com"
    admin.admin_add_site(domain, "siteadmin", {"siteinfo.email": f"admin@{domain}", "auth.tpasswd": "Site-pass-123"})
    key = proxy(running_server, cookie=admin.admin_hijack(domain)).auth_create_api_key("ip test")
    allowed = proxy(running_server, key, forwarded_for="192.0.2.10")
    assert allowed.auth_restrict_ip("192.0.2.10", "SOAP") is True
    assert allowed.common_whoami()["site"] == domain
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy(running_server, key, forwarded_for="192.0.2.11").common_whoami()
    assert info.value.faultCode == 403
    assert info.value.faultString == "Client.Denied: authentication failed: invalid or missing credentials"


@pytest.mark.parametrize("body, fragment", [
    (b"<methodCall><methodName>common_whoami", "not well-formed XML"),
    (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
     b"<methodCall><methodName>&b;</methodName></methodCall>", "DOCTYPE is not allowed"),
    (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
     b"<methodCall><methodName>&e;</methodName></methodCall>", "DOCTYPE is not allowed"),
    (b"<methodCall><methodName>common_whoami</methodName><params><param><value><script/></value></param>"
     b"</params></methodCall>", "unknown element <script>"),
    (b"", "empty request body"),
])
def test_hostile_or_broken_bodies_get_a_parse_fault(running_server, body, fragment):
    """Malformed XML, entity tricks and unknown elements get faultCode -32700 with the reason."""
    status, _headers, answer = raw_post(running_server, body, running_server.admin_key)
    assert status == 200
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(answer)
    assert info.value.faultCode == -32700
    assert fragment in info.value.faultString
    assert b"root:" not in answer


def test_oversized_body_is_413(running_server):
    """A body declared past [soap] max_body_size is refused before any of it is sent."""
    import http.client

    host, port = running_server.url.rsplit("/", 1)[-1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", f"/xmlrpc?authkey={running_server.admin_key}")
    conn.putheader("Content-Type", "text/xml")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def test_get_is_405(running_server):
    """GET /xmlrpc says to POST."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{running_server.url}/xmlrpc", timeout=30)
    assert info.value.code == 405


def test_disabled_api_answers_403(server_factory):
    """[soap] enabled=false: /xmlrpc answers HTTP 403 with the reason, before authentication."""
    server = server_factory({"soap": {"enabled": "false"}})
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        proxy(server, server.admin_key).common_whoami()
    assert info.value.errcode == 403


def test_https_endpoint(running_server):
    """The same endpoint answers over HTTPS (self-signed certificate, so not verified here)."""
    import ssl

    client = xmlrpc.client.ServerProxy(f"{running_server.https_url}/xmlrpc?authkey={running_server.admin_key}",
                                       allow_none=True, context=ssl._create_unverified_context())
    assert client.common_whoami()["role"] == "appliance"


def test_anvil_throttles_xmlrpc_even_with_the_right_key(server_factory):
    """After [anvil] limit bad keys from one address, its good key gets faultCode 429 too."""
    server = server_factory({"anvil": {"limit": "3", "min_attempts": "3"}})
    for _ in range(3):
        with pytest.raises(xmlrpc.client.Fault):
            proxy(server, "0" * 64, forwarded_for="192.0.2.50").common_whoami()
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy(server, server.admin_key, forwarded_for="192.0.2.50").common_whoami()
    assert info.value.faultCode == 429
    assert info.value.faultString.startswith("Client.Throttled: ")
    assert proxy(server, server.admin_key, forwarded_for="192.0.2.51").common_whoami()["role"] == "appliance"
