"""Run the PHP and Perl SOAP client scripts of this directory and return what they decoded."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def zeep_map(values: dict) -> dict:
    """``values`` as the document WSDL's tns:Map argument zeep sends (keys and string values)."""
    import zeep

    return {"item": [{"key": key, "value": zeep.xsd.AnyObject(zeep.xsd.String(), value)}
                     for key, value in values.items()]}


def site_options(email: str, password: str) -> dict:
    """The admin_add_site options of a site with an email address and a password."""
    return {"siteinfo.email": email, "auth.tpasswd": password}


def _run(command: list, job: dict) -> list:
    proc = subprocess.run(command, input=json.dumps(job), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"{command[0]} client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def php_calls(calls: list, *, location: str, wsdl: Optional[str] = None, cookie: Optional[str] = None) -> list:
    """PHP SoapClient: WSDL mode when ``wsdl`` is given, else non-WSDL mode (location + uri)."""
    job = {"mode": "wsdl" if wsdl else "nonwsdl", "wsdl": wsdl, "location": location, "cookie": cookie,
           "calls": calls}
    return _run(["php", os.path.join(HERE, "soap_call.php")], job)


def perl_calls(calls: list, *, proxy: str, cookie: Optional[str] = None) -> list:
    """Perl SOAP::Lite with ->proxy(proxy)->uri('urn:net.apnscp.soap')."""
    return _run(["perl", os.path.join(HERE, "soap_call.pl")], {"proxy": proxy, "cookie": cookie, "calls": calls})


def account_scenario(run, admin_key: str, domain: str, as_bool=lambda v: v,
                     empty_array_is_none: bool = False) -> None:
    """The account scenario every SOAP client goes through, asserting each answer.

    ``run(calls, key=None, cookie=None)`` sends ``[[operation, [args]], ...]`` with one client
    and returns its decoded ``{"ok": ...}``/``{"fault": ...}`` list; ``as_bool`` maps the
    client's native booleans (SOAP::Lite: 0/1) to Python's, and leaves a string as it is;
    ``empty_array_is_none`` for clients that show an empty array as None (zeep, for a wrapped one).
    """
    def ok(results):
        for r in results:
            assert "ok" in r, f"unexpected fault: {r}"
        return [r["ok"] for r in results]

    new_site, sid = ok(run([
        ["admin_add_site", [domain, "siteadmin", site_options(f"admin@{domain}", "Site-passw0rd")]],
        ["admin_hijack", [domain]],
    ], key=admin_key))
    assert as_bool(new_site) is True
    assert isinstance(sid, str) and len(sid) >= 22

    debug, api, set_on, debug_on, set_off = ok(run([
        ["scope_get", ["cp.debug"]],
        ["scope_get", ["cp.api"]],
        ["scope_set", ["cp.debug", True]],
        ["scope_get", ["cp.debug"]],
        ["scope_set", ["cp.debug", False]],
    ], key=admin_key))
    assert as_bool(debug) is False and as_bool(api) is True  # a false is a real false, not 'false'
    assert as_bool(set_on) is True and as_bool(debug_on) is True and as_bool(set_off) is True

    history, bad_limit = run([["auth_get_login_history", [5]], ["auth_get_login_history", [0]]], key=admin_key)
    assert "ok" in history, history
    assert bad_limit.get("fault") == "SOAP-ENV:Client.InvalidArgument" and "at least 1" in bad_limit["message"]

    (whoami, added, users, site_key, restricted, listed, restricted_ui, removed_ui, removed, empty) = ok(run([
        ["common_whoami", []],
        ["user_add", ["bob", "Bob-passw0rd", None]],
        ["user_get_users", []],
        ["auth_create_api_key", ["e2e key"]],
        ["auth_restrict_ip", ["127.0.0.1"]],
        ["auth_get_ip_restrictions", []],
        ["auth_restrict_ip", ["10.0.0.0/8", "UI"]],
        ["auth_remove_ip_restriction", ["10.0.0.0/8", "UI"]],
        ["auth_remove_ip_restriction", ["127.0.0.1"]],
        ["auth_get_ip_restrictions", []],
    ], cookie=sid))
    assert whoami == {"role": "site", "username": "siteadmin", "site": domain}
    assert as_bool(added) is True
    assert sorted(u["username"] for u in users) == ["bob", "siteadmin"]
    assert isinstance(site_key, str) and len(site_key) == 64
    assert listed == [{"ip": "127.0.0.1", "gate": None}]  # a one-element array stays an array
    assert all(as_bool(v) is True for v in (restricted, restricted_ui, removed_ui, removed))
    assert empty == (None if empty_array_is_none else [])

    whoami, keys, changed = ok(run([
        ["common_whoami", []],
        ["auth_get_api_keys", []],
        ["auth_change_password", ["New-passw0rd!"]],
    ], key=site_key))
    assert whoami["username"] == "siteadmin" and whoami["site"] == domain
    assert [k["comment"] for k in keys] == ["e2e key"]
    assert as_bool(changed) is True
    assert as_bool(ok(run([["auth_delete_api_key", [site_key]]], key=site_key))[0]) is True

    for key in (site_key, "0" * 64):
        denied = run([["common_whoami", []]], key=key)
        assert denied[0].get("fault") == "SOAP-ENV:Client.Denied", denied
