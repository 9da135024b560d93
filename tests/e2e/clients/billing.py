"""The billing modules' calls (tests/e2e/billing/modules.php) and what every gate answers a site's
accounts, for the billing end-to-end tests."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import subprocess
import urllib.parse
import xmlrpc.client
from typing import Optional

import pytest
import requests

from tests.e2e.clients.dav_clients import Dav, let_owner_reach
from tests.scopes.clients import certificate_path, soap_post

MODULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "billing", "modules.php")


@pytest.fixture
def https_server(server_factory):
    """A server with its HTTPS listener (billing modules speak HTTPS), its sites reachable for DAV."""
    running = server_factory(https=True)
    let_owner_reach(running)
    return running


def module(server, name: str, action: str, params: Optional[dict] = None, trust: bool = True, **settings) -> dict:
    """Run ``action`` of billing module ``name`` with PHP; ``{"result": ...}`` or ``{"exception": ...}``.

    ``trust``: PHP trusts the server's certificate (openssl.cafile), as a hosting company installs
    a real one.  The WSDL cache is off (the module's own default caches on disk by URL).
    """
    https = server.https_url.rsplit(":", 1)[1]
    defaults = {"whmcs": {"endpoint": server.https_url, "key": server.admin_key},
                "clientexec": {"host": "127.0.0.1", "port": int(https), "key": server.admin_key},
                "blesta": {"host": "127.0.0.1", "port": int(https), "key": server.admin_key, "use_ssl": True,
                           "requestor_ip": "192.0.2.200"}}[name]
    job = {"module": name, "action": action, "server": dict(defaults, **settings), "params": params or {}}
    command = ["php", "-d", "soap.wsdl_cache_enabled=0"]
    if trust:
        command += ["-d", f"openssl.cafile={certificate_path(server)}"]
    proc = subprocess.run(command + [MODULES], input=json.dumps(job), capture_output=True, text=True, timeout=180)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"{name} {action} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1])


def result(answer: dict):
    """The result of a module call that must not have raised."""
    assert "result" in answer, f"the module raised: {answer}"
    return answer["result"]


def site_key(server, domain: str) -> str:
    """A new API key of ``domain``'s administrator (made through a hijacked session)."""
    admin = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    sid = admin.admin_hijack(domain)
    answer = requests.post(f"{server.url}/xmlrpc", data=xmlrpc.client.dumps(("billing e2e",), "auth_create_api_key"),
                           headers={"Content-Type": "text/xml", "Cookie": f"esprit_id={sid}"}, timeout=30)
    return xmlrpc.client.loads(answer.content)[0][0]


def gates(server, domain: str, user: str, password: str, key: str) -> dict:
    """What each gate answers ``user@domain``: ``ok``, ``suspended`` (refused, saying so) or
    ``refused`` (as for wrong credentials).  UI: POST /login; SOAP and XML-RPC: the API key; DAV:
    PROPFIND with the password.  (CLI: cpcmd as a site's own user comes with issue 19.)"""
    out = {}
    ui = requests.post(f"{server.url}/login", data={"username": user, "domain": domain, "password": password},
                       timeout=60)
    out["UI"] = _judge(ui.status_code == 200, ui.text)
    soap = soap_post(f"{server.url}/soap?authkey={key}", "common_whoami")
    out["SOAP"] = _judge(soap.status_code == 200, soap.text)
    answer = requests.post(f"{server.url}/xmlrpc?authkey={key}", data=xmlrpc.client.dumps((), "common_whoami"),
                           headers={"Content-Type": "text/xml"}, timeout=60)
    out["XML-RPC"] = _judge(b"<fault>" not in answer.content, answer.text)
    dav = Dav(server.url, f"{user}@{domain}", password).propfind(depth="0")
    out["DAV"] = _judge(dav.status_code == 207, dav.text)
    return out


def _judge(ok: bool, text: str) -> str:
    if ok:
        return "ok"
    return "suspended" if " is suspended" in text else "refused"


def site_row(server, domain: str) -> Optional[dict]:
    """The ``sites`` row of ``domain`` (None when there is none), read from the server's database."""
    with sqlite3.connect(os.path.join(server.state_dir, "apiserver.db")) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM sites WHERE domain = ?", (domain,)).fetchone()
    return dict(row) if row else None


def land(url: str, verify, session: Optional[requests.Session] = None) -> tuple:
    """Follow a single-sign-on link as a browser does: ``(landing answer, page answer or None)``."""
    session = session or requests.Session()
    landing = session.get(url, allow_redirects=False, verify=verify, timeout=60)
    if landing.status_code not in (302, 303):
        return landing, None
    target = urllib.parse.urljoin(url, landing.headers["Location"])
    return landing, session.get(target, allow_redirects=False, verify=verify, timeout=60)


def post_from(source: str, url: str, body: bytes, headers: dict) -> int:
    """POST from the loopback address ``source`` (a proxy the server trusts); the status code."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60, source_address=(source, 0))
    try:
        connection.request("POST", parsed.path + (f"?{parsed.query}" if parsed.query else ""), body=body,
                           headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def fail_logins_from(server, address: str, times: int, proxy: str = "127.0.0.2") -> None:
    """``times`` bad API keys from ``address`` through the trusted proxy ``proxy`` (counted by Anvil)."""
    body = xmlrpc.client.dumps((), "common_whoami").encode()
    for _ in range(times):
        post_from(proxy, f"{server.url}/xmlrpc?authkey={'0' * 64}", body,
                  {"Content-Type": "text/xml", "X-Forwarded-For": address})
