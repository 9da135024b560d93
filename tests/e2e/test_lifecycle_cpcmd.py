"""The billing calls as an administrator types them: cpcmd as root on the server's socket, with
ApisCP's argument syntax (maps '[key:value]', the comma form quoted, null)."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.clients.billing import site_row
from tests.scopes.clients import CpcmdFailed, cpcmd

DOMAIN = "cli.example"


def test_cpcmd_lifecycle(running_server):
    """add-site, collect, edit-site with reset, deactivate/activate with the site refused meanwhile,
    get-usage, plans, rampart, delete-site's dry run and force."""
    server = running_server
    assert cpcmd(server, "admin:add-site", DOMAIN, "cliadmin",
                 '[siteinfo.email:cli@example.org,auth.tpasswd:Cli-pass-123,"billing,invoice":CLI-1,'
                 'diskquota:[quota:3,units:GB]]') is True
    number = cpcmd(server, "admin:get-site-id", DOMAIN)
    collected = cpcmd(server, "admin:collect", "[diskquota.quota,billing]", "[active:true]", f"[{DOMAIN}]")
    assert collected == {number: {"diskquota": {"quota": 3}, "billing": {"invoice": "CLI-1", "parent_invoice": None,
                                                                        "ctime": collected[number]["billing"]["ctime"]},
                                  "active": True, "domain": DOMAIN}}
    assert cpcmd(server, "admin:edit-site", "CLI-1", "[siteinfo.plan:basic]", "[reset:true]") is True
    assert cpcmd(server, "admin:collect", "[diskquota.quota]", "null", "[CLI-1]")[number]["diskquota"] == {
        "quota": 5000}
    login = {"username": "cliadmin", "domain": DOMAIN, "password": "Cli-pass-123"}
    assert cpcmd(server, "admin:deactivate-site", DOMAIN, "[reason:'Overdue on Payment']") is True
    refused = requests.post(f"{server.url}/login", data=login, timeout=60)
    assert refused.status_code == 403 and "suspended" in refused.json()["error"]
    assert cpcmd(server, "-d", DOMAIN, "auth:is-inactive") is True
    assert site_row(server, DOMAIN)["suspension_reason"] == "Overdue on Payment"
    assert cpcmd(server, "admin:activate-site", number) is True
    assert requests.post(f"{server.url}/login", data=login, timeout=60).status_code == 200
    usage = cpcmd(server, "admin:get-usage", "storage", f"[{DOMAIN}]")
    measured = {key: usage[number][key] for key in ("qused", "fused")}  # measured when the site was made
    assert measured["qused"] > 0 and measured["fused"] > 0
    assert usage == {number: {**measured, "qsoft": 5_120_000, "qhard": 5_120_000, "fsoft": None, "fhard": None}}
    assert "basic" in cpcmd(server, "admin:list-plans")
    assert cpcmd(server, "admin:get-plan", "basic")["diskquota"]["quota"] == 5000
    assert cpcmd(server, "rampart:get-jails")[0] == "anvil"
    assert cpcmd(server, "rampart:is-banned", "192.0.2.9") is False
    with pytest.raises(CpcmdFailed) as refused:
        cpcmd(server, "admin:edit-site", DOMAIN, "[diskquota.colour:red]")
    assert "Client.InvalidArgument" in refused.value.stderr and "diskquota.colour" in refused.value.stderr
    cpcmd(server, "admin:deactivate-site", DOMAIN)
    assert cpcmd(server, "admin:delete-site", "null", "[since:now,dry-run:true]") is True
    assert site_row(server, DOMAIN) is not None
    assert cpcmd(server, "admin:delete-site", DOMAIN, "[force:true]") is True
    assert site_row(server, DOMAIN) is None
    with pytest.raises(CpcmdFailed) as gone:
        cpcmd(server, "admin:get-site-id", DOMAIN)
    assert "Client.NotFound" in gone.value.stderr
