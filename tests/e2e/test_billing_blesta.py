"""Blesta's apnscp module (blesta/module-apnscp) end to end: a new PHP SoapClient per call in WSDL
mode (certificate not verified, as the module does), its success rule (a falsy answer is an
error), statistics through a hijacked session, the plan change with its flags nested in the
options, and each change checked from outside."""

from __future__ import annotations

import xmlrpc.client

from tests.e2e.clients.billing import gates, https_server, land, module, result, site_key, site_row  # noqa: F401
from tests.scopes.clients import certificate_path

DOMAIN, USER = "blesta.example", "blestau"
PARAMS = {"domain": DOMAIN, "username": USER, "password": "Blesta-Pass-1", "email": "buyer@example.org",
          "plan": "basic"}


def test_blesta_module_lifecycle(https_server, php):
    """Connection test, packages, the username probe, add, statistics, password, plan, suspend,
    unsuspend, SSO and cancel, every answer truthy (Blesta's rule)."""
    server = https_server
    blesta = lambda action, **extra: module(server, "blesta", action, dict(PARAMS, **extra), trust=False)  # noqa: E731
    assert result(blesta("validate")) is True
    assert result(blesta("packages")) == {"basic": "basic"}
    assert result(blesta("username_free")) is True  # admin_hijack(username) faults: nobody has it
    made = result(blesta("create"))
    assert made == {"add": {"ok": True}, "accounts": 1}
    assert site_row(server, DOMAIN)["plan"] == "basic"
    stats = result(blesta("stats"))
    assert stats["whoami"] == {"role": "site", "username": USER, "site": DOMAIN}  # the session decided
    stored = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}").admin_get_usage(
        "storage")["site1"]["qused"]  # measured when the site was made
    assert stored > 0 and stats["disk"] == {"used": stored / 1024, "total": 5000}
    # the calls in the site's own session count for its bandwidth (bytes / 1024 / 1024)
    assert 0 < stats["bandwidth"]["used"] < 0.1 and stats["bandwidth"]["total"] == 102400
    key = site_key(server, DOMAIN)

    assert result(blesta("password", password="Blesta-Pass-2")) == {"ok": True}
    assert gates(server, DOMAIN, USER, "Blesta-Pass-1", key)["UI"] == "refused"
    assert result(blesta("plan")) == {"ok": True}  # {siteinfo.plan: basic, 0: {reset: true}}
    assert result(blesta("plan", plan="gold"))["error"].startswith("siteinfo.plan: no plan 'gold'")
    assert result(blesta("suspend")) == {"ok": True}
    assert gates(server, DOMAIN, USER, "Blesta-Pass-2", key) == dict.fromkeys(("UI", "SOAP", "XML-RPC", "DAV"),
                                                                             "suspended")
    assert result(blesta("unsuspend")) == {"ok": True}
    assert gates(server, DOMAIN, USER, "Blesta-Pass-2", key)["DAV"] == "ok"

    link = result(blesta("sso"))
    assert link.startswith(f"{server.https_url}/apps/dashboard?esprit_id=")
    landing, page = land(link, certificate_path(server))
    assert landing.status_code == 303 and "Logged in as <strong>blestau</strong>" in page.text

    assert result(blesta("cancel")) == {"delete": {"ok": True}, "accounts": 0}
    assert site_row(server, DOMAIN) is None
    assert result(blesta("suspend"))["error"].startswith("no site 'blesta.example'")
