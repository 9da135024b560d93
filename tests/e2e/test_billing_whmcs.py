"""WHMCS's apnscp module (LithiumHosting/apiscp-whmcs) end to end: PHP SoapClient in WSDL mode
over HTTPS with a certificate it trusts, the module's exact calls, and each change checked from
outside (every gate, the rows, the landing page, a real fail2ban)."""

from __future__ import annotations

import datetime
import os
import shutil
import sqlite3
import xmlrpc.client

import pytest
import requests

from apiserver.config import SHIPPED_PLANS
from tests.e2e.clients.billing import fail_logins_from, gates, land, module, result, site_key, site_row
from tests.e2e.clients.dav_clients import let_owner_reach
from tests.rampart.support import fail2ban  # noqa: F401 - the fixture
from tests.scopes.clients import certificate_path, cpcmd

DOMAIN, USER = "shop.example", "shopper"
VISITOR = "192.0.2.66"  # the customer whose address got banned
PARAMS = {"domain": "Shop.Example", "username": USER, "password": "Whmcs-Pass-1", "email": "client@example.org",
          "plan": "basic", "serviceid": 42, "suspendreason": "Overdue on Payment", "ip": VISITOR,
          "whmcs_session_id": "a1b2c3d4e5f6a7b8c9d0e1f2a3"}


@pytest.fixture
def whmcs_server(server_factory, fail2ban, tmp_path):
    """A server over HTTPS with the plans basic and pro, Anvil blocking at 3 failures, fail2ban's
    jail, and the proxy 127.0.0.2 trusted (not the billing server: its X-Forwarded-For names the
    visitor, who may be the one banned)."""
    plans = tmp_path / "plans"
    shutil.copytree(SHIPPED_PLANS, plans)
    (plans / "pro.ini").write_text("[diskquota]\nquota = 20\nunits = GB\n[ssh]\nenabled = 1\n[rampart]\nenabled = 1\n"
                                   "max = 10\n", encoding="utf-8")
    server = server_factory({"plans": {"dir": str(plans)}, "anvil": {"limit": "3", "min_attempts": "1000"},
                             "core": {"http_trusted_forward": "127.0.0.2"},
                             "rampart": {"fail2ban_socket": fail2ban.socket}}, https=True)
    let_owner_reach(server)
    return server


def admin(server):
    return xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)


def test_whmcs_account_lifecycle(whmcs_server, fail2ban, php):
    """Create, change password, suspend with a reason, unsuspend, change package with reset, SSO and
    its landing, both usage syncs, the ban check with unban, terminate with force, the daily cron."""
    server = whmcs_server
    whmcs = lambda action, **extra: module(server, "whmcs", action, dict(PARAMS, **extra))  # noqa: E731

    assert result(whmcs("plans")) == {"basic": "server - basic", "pro": "server - pro"}
    assert result(whmcs("create")) == "success"
    row = site_row(server, DOMAIN)
    assert (row["id"], row["plan"], row["invoice"], row["suspended_at"]) == (1, "basic", "WHMCS-42", None)
    site = admin(server).admin_collect(["*"])["site1"]
    assert (site["siteinfo"]["admin_user"], site["siteinfo"]["email"]) == (USER, "client@example.org")
    assert site["mysql"]["dbaseprefix"] == site["pgsql"]["dbaseprefix"] == "shopper_"
    key = site_key(server, DOMAIN)
    assert gates(server, DOMAIN, USER, "Whmcs-Pass-1", key) == dict.fromkeys(("UI", "SOAP", "XML-RPC", "DAV"), "ok")

    assert result(whmcs("changepassword", password="Whmcs-Pass-2")) == "success"
    assert gates(server, DOMAIN, USER, "Whmcs-Pass-1", key)["UI"] == "refused"
    ui = requests.Session()
    assert ui.post(f"{server.url}/login", data={"username": USER, "domain": DOMAIN, "password": "Whmcs-Pass-2"},
                   timeout=60).status_code == 200

    assert result(whmcs("suspend")) == "success"
    assert gates(server, DOMAIN, USER, "Whmcs-Pass-2", key) == dict.fromkeys(("UI", "SOAP", "XML-RPC", "DAV"),
                                                                            "suspended")
    assert gates(server, DOMAIN, USER, "wrong-password", "0" * 64) == dict.fromkeys(
        ("UI", "SOAP", "XML-RPC", "DAV"), "refused")  # a wrong password learns nothing
    refused = requests.post(f"{server.url}/login", data={"username": USER, "domain": DOMAIN,
                                                         "password": "Whmcs-Pass-2"}, timeout=60).json()
    assert "suspended" in refused["error"] and "Overdue on Payment" in refused["error"]
    assert ui.get(f"{server.url}/login", timeout=60).status_code == 401  # the session ended
    row = site_row(server, DOMAIN)
    assert row["suspended_at"] and row["suspension_reason"] == "Overdue on Payment"
    assert cpcmd(server, "-d", DOMAIN, "auth:is-inactive") is True  # the appliance may still act as the site
    assert admin(server).admin_collect([], {"active": False}) != {}

    assert result(whmcs("unsuspend")) == "success"
    assert gates(server, DOMAIN, USER, "Whmcs-Pass-2", key) == dict.fromkeys(("UI", "SOAP", "XML-RPC", "DAV"), "ok")
    assert site_row(server, DOMAIN)["suspended_at"] is None

    assert result(whmcs("changepackage", plan="pro")) == "success"
    site = admin(server).admin_collect(["diskquota", "ssh", "siteinfo.plan"], None, [DOMAIN])["site1"]
    assert (site["diskquota"]["quota"], site["diskquota"]["units"], site["ssh"]["enabled"]) == (20, "GB", 1)
    assert site_row(server, DOMAIN)["plan"] == "pro"

    link = result(whmcs("sso"))["redirectTo"]
    assert link.startswith(f"{server.https_url}/apps/dashboard?esprit_id=")
    browser = requests.Session()
    landing, page = land(link, certificate_path(server), browser)
    assert landing.status_code == 303 and landing.headers["Location"] == "/apps/dashboard"
    fresh = browser.cookies.get("esprit_id")
    assert fresh and fresh not in link and "SameSite=Lax" in landing.headers["Set-Cookie"]
    assert page.status_code == 200 and "Logged in as <strong>shopper</strong>" in page.text
    assert f"site <strong>{DOMAIN}</strong>" in page.text
    again, _ = land(link, certificate_path(server))
    assert again.status_code == 403 and "not valid" in again.text  # a link serves once
    landing, page = land(result(whmcs("sso", app="subdomains"))["redirectTo"], certificate_path(server))
    assert landing.headers["Location"] == "/apps/subdomains?mode=add" and page.status_code == 200

    rows = result(whmcs("usage"))
    carried = admin(server).admin_get_usage("bandwidth")["site1"]["sum"]  # the gates checked above
    stored = admin(server).admin_get_usage("storage")["site1"]["qused"]  # measured when the site was made
    assert carried > 0 and stored > 0
    assert rows == {DOMAIN: {"SiteID": "site1", "diskusage": stored / 1024, "disklimit": 20 * 1024,
                             "bwusage": carried / 1024 / 1024, "bwlimit": 50 * 1024}}
    # limits are pro's
    hijacked = result(whmcs("usage_hijacked"))
    assert hijacked["retries"] == 0
    assert hijacked["rows"][DOMAIN]["whoami"] == {"role": "site", "username": USER, "site": DOMAIN}
    assert hijacked["rows"][DOMAIN]["disklimit"] == 20 * 1024

    assert result(whmcs("checkip")) is False
    fail_logins_from(server, VISITOR, 3)
    fail2ban.ban(VISITOR)
    banned = result(whmcs("checkip"))
    assert banned["jails"] == ["anvil", fail2ban.jail]
    # admin_collect is keyed by site id (api.md): the hook's $rampartCheck[$domain] finds nothing
    assert banned["collected"] == {"site1": {"rampart": {"enabled": 1}, "active": True, "domain": DOMAIN}}
    assert admin(server).rampart_banned_services(VISITOR) == []
    assert fail2ban.jail not in fail2ban.client("banned", VISITOR)

    assert result(whmcs("terminate")) == "success"
    assert site_row(server, DOMAIN) is None and admin(server).admin_collect() == {}
    assert gates(server, DOMAIN, USER, "Whmcs-Pass-2", key)["UI"] == "refused"
    assert not os.path.exists(os.path.join(server.state_dir, "sites", DOMAIN))
    assert "no site 'shop.example'" in result(whmcs("terminate"))  # the module shows the fault's message


def test_whmcs_daily_cron_deletes_deferred_cancellations_after_30_days(whmcs_server, php):
    """The DailyCronJob hook: admin_delete_site(null, [since: 30 days ago, match: Deferred Account
    Cancellation]) deletes only sites suspended with that reason at least 30 days ago, and is true
    when there is nothing to delete (the hook has no try/catch)."""
    server = whmcs_server
    api = admin(server)
    for name in ("deferred", "recent", "overdue"):
        api.admin_add_site(f"{name}.example", name, {})
    api.admin_deactivate_site("deferred.example", {"reason": "Deferred Account Cancellation"})
    api.admin_deactivate_site("recent.example", {"reason": "Deferred Account Cancellation"})
    api.admin_deactivate_site("overdue.example", {"reason": "Overdue on Payment"})
    long_ago = (datetime.datetime.utcnow() - datetime.timedelta(days=31)).isoformat(" ")
    with sqlite3.connect(os.path.join(server.state_dir, "apiserver.db")) as db:  # as if suspended a month ago
        db.execute("UPDATE sites SET suspended_at = ? WHERE domain IN ('deferred.example', 'overdue.example')",
                   (long_ago,))
    assert result(module(server, "whmcs", "cron")) is True
    assert sorted(v["domain"] for v in api.admin_collect().values()) == ["overdue.example", "recent.example"]
    assert result(module(server, "whmcs", "cron")) is True  # nothing more to delete
