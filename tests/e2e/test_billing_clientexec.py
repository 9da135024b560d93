"""ClientExec's ApisCP plugin (clientexec/apiscp-server) end to end: PHP SoapClient in WSDL mode
over HTTPS only, its WSDL URL with the double slash (https://host:2083//apnscp.wsdl), a
certificate PHP verifies, the plugin's exact calls and each change checked from outside."""

from __future__ import annotations

import xmlrpc.client

from tests.e2e.clients.billing import gates, https_server, land, module, result, site_key, site_row  # noqa: F401
from tests.scopes.clients import certificate_path

DOMAIN, USER = "clients.example", "ceuser"
PARAMS = {"domain": "Clients.Example", "username": "CEUser", "password": "Client-Pass-1",
          "email": "customer@example.org", "plan": "basic"}


def test_clientexec_plugin_lifecycle(https_server, php):
    """Test connection, create (the positional names not lower-cased), available actions, password,
    package with reset 'true', suspend and unsuspend without a reason, the direct link, delete."""
    server = https_server
    ce = lambda action, **extra: module(server, "clientexec", action, dict(PARAMS, **extra))  # noqa: E731
    assert result(ce("wsdl_url")).endswith("//apnscp.wsdl")
    assert result(ce("test")) is True
    untrusted = module(server, "clientexec", "test", trust=False)  # PHP verifies the certificate
    assert "Parsing WSDL" in untrusted["exception"]
    assert result(ce("actions")) == ["Create"]  # nothing collected: an empty array PHP can count
    assert result(ce("create")) is True
    assert site_row(server, DOMAIN)["plan"] == "basic"
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    assert api.admin_collect(["siteinfo.admin_user"])["site1"]["siteinfo"]["admin_user"] == USER
    actions = result(ce("actions"))
    # keyed by site id (api.md), so the plugin's $response[$domain] finds nothing and it offers UnSuspend
    assert actions["actions"] == ["UnSuspend", "Delete"] and list(actions["response"]) == ["site1"]
    assert actions["response"]["site1"]["active"] is True and actions["response"]["site1"]["domain"] == DOMAIN
    key = site_key(server, DOMAIN)
    assert gates(server, DOMAIN, USER, "Client-Pass-1", key)["UI"] == "ok"

    assert result(ce("update_password", password="Client-Pass-2")) is True
    assert gates(server, DOMAIN, USER, "Client-Pass-1", key)["UI"] == "refused"
    assert result(ce("update_package")) is True  # reset given as the string 'true'
    assert result(ce("suspend")) is True
    assert gates(server, DOMAIN, USER, "Client-Pass-2", key) == dict.fromkeys(("UI", "SOAP", "XML-RPC", "DAV"),
                                                                             "suspended")
    assert site_row(server, DOMAIN)["suspension_reason"] is None
    assert result(ce("actions"))["response"]["site1"]["active"] is False
    assert result(ce("unsuspend")) is True
    assert gates(server, DOMAIN, USER, "Client-Pass-2", key) == dict.fromkeys(("UI", "SOAP", "XML-RPC", "DAV"), "ok")

    link = result(ce("direct_link"))
    landing, page = land(link, certificate_path(server))
    assert landing.status_code == 303 and page.status_code == 200
    assert "Logged in as <strong>ceuser</strong>" in page.text

    assert result(ce("delete")) is True  # one argument: PHP sends flags as xsi:nil
    assert site_row(server, DOMAIN) is None and result(ce("actions")) == ["Create"]
    gone = ce("delete")
    assert gone["faultcode"] == "SOAP-ENV:Client.NotFound" and "no site 'clients.example'" in gone["exception"]
