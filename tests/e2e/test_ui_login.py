"""The UI gate's login through a running server: ``POST /login`` with a password, the ``esprit_id``
session bound to gate UI, the sealed password of ``[auth] retain_ui_password``, Anvil, IP
restrictions, the API toggle, https_only and ``POST /logout``.

Remote clients are simulated as the brief allows: the test process is the trusted proxy and names
the client with ``X-Forwarded-For: 192.0.2.x`` (or 198.51.100.x, also documentation space).
"""

from __future__ import annotations

import os
import sqlite3
import xmlrpc.client

import pytest
import requests

from apiserver.accounts.ui_password import SealedPassword, UIPasswordCipher
from tests.e2e.clients.dav_clients import xmlrpc_call
from tests.scopes.clients import certificate_path, soap_post

NO_DELAYS = {"anvil": {"min_attempts": "1000"}}  # the counts matter here, not Anvil's waits
DOMAIN = "login.example.com"
PASSWORD = "Site-passw0rd"
FAILED = "login failed: wrong username, domain or password, or this address may not log in"


def add_site(server, domain=DOMAIN):
    """A site whose administrator ``siteadmin`` has PASSWORD, and an API key of that administrator."""
    options = {"siteinfo.email": f"owner@{domain}", "auth.tpasswd": PASSWORD}
    xmlrpc_call(server, "admin_add_site", domain, "siteadmin", options, key=server.admin_key)
    hijacked = xmlrpc_call(server, "admin_hijack", domain, key=server.admin_key)
    return hijacked, xmlrpc_call(server, "auth_create_api_key", "ui e2e", sid=hijacked)


def login(server, username="siteadmin", domain=DOMAIN, password=PASSWORD, address="192.0.2.1", base=None, **kw):
    """POST /login with a form."""
    headers = {"X-Forwarded-For": address} if address else {}
    return requests.post(f"{base or server.url}/login", data={"username": username, "domain": domain,
                                                             "password": password},
                         headers=headers, timeout=30, **kw)


def whoami(server, sid, address="192.0.2.1"):
    """GET /login with the esprit_id cookie."""
    return requests.get(f"{server.url}/login", cookies={"esprit_id": sid}, headers={"X-Forwarded-For": address},
                        timeout=30)


def set_cookies(answer) -> dict:
    """Set-Cookie headers of an answer by cookie name, as sent."""
    headers = answer.raw.headers.getlist("Set-Cookie")
    return {h.split("=", 1)[0]: h for h in headers}


def test_site_admin_logs_in_with_password(server_factory):
    """Password login answers who logged in and sets HttpOnly, SameSite=Strict esprit_id and esprit_tag."""
    server = server_factory(NO_DELAYS)
    add_site(server)
    answer = login(server, domain="Login.Example.COM")
    assert answer.status_code == 200
    assert answer.json() == {"role": "site", "username": "siteadmin", "site": DOMAIN}
    assert answer.headers["Cache-Control"] == "no-store"
    cookies = set_cookies(answer)
    sid, tag = answer.cookies["esprit_id"], answer.cookies["esprit_tag"]
    assert cookies["esprit_id"] == f"esprit_id={sid}; Path=/; HttpOnly; SameSite=Strict"
    assert cookies["esprit_tag"] == f"esprit_tag={tag}; Path=/; HttpOnly; SameSite=Strict"
    device = answer.cookies["apiserver_device"]  # tells this browser apart for device notices
    assert cookies["apiserver_device"] == (f"apiserver_device={device}; Path=/; HttpOnly; SameSite=Strict; "
                                           "Max-Age=34560000")
    assert whoami(server, sid).json() == {"role": "site", "username": "siteadmin", "site": DOMAIN}
    history = xmlrpc_call(server, "auth_get_login_history", sid=xmlrpc_call(
        server, "admin_hijack", DOMAIN, key=server.admin_key))
    assert (history[0]["gate"], history[0]["method"], history[0]["success"]) == ("UI", "password", True)
    admin = login(server, username="admin", domain="", password="wrong", address=None)
    assert admin.status_code == 401


def test_ui_session_is_bound_to_the_ui_gate(server_factory):
    """The UI session works at gate UI only: SOAP and XML-RPC refuse its cookie like a forged one."""
    server = server_factory(NO_DELAYS)
    add_site(server)
    sid = login(server).cookies["esprit_id"]
    soap = soap_post(f"{server.url}/soap", "common_whoami", headers={"Cookie": f"esprit_id={sid}"})
    assert soap.status_code == 500 and "Client.Denied" in soap.text
    with pytest.raises(xmlrpc.client.Fault) as refused:
        xmlrpc_call(server, "common_whoami", sid=sid)
    assert refused.value.faultCode == 403
    assert whoami(server, sid).status_code == 200


def test_sealed_password_needs_the_tag_cookie(server_factory):
    """With sessions in the database, the row holds nonce and ciphertext only; the secret plus the tag open it."""
    server = server_factory({**NO_DELAYS, "session": {"backend": "db"}})
    add_site(server)
    answer = login(server)
    with sqlite3.connect(os.path.join(server.state_dir, "apiserver.db")) as db:
        rows = db.execute("SELECT data, user_id FROM sessions WHERE gate = 'UI'").fetchall()
    assert len(rows) == 1 and PASSWORD not in rows[0][0]
    with open(os.path.join(server.state_dir, "secret"), "rb") as fh:
        cipher = UIPasswordCipher(fh.read().strip())
    sealed, site_admin_id = SealedPassword.decode(rows[0][0]), rows[0][1]
    assert cipher.open(sealed, answer.cookies["esprit_tag"], site_admin_id) == PASSWORD
    assert cipher.open(sealed, login(server).cookies["esprit_tag"], site_admin_id) is None


def test_retain_ui_password_false_keeps_nothing(server_factory):
    """retain_ui_password=false: no esprit_tag cookie and no data in the session row."""
    server = server_factory({**NO_DELAYS, "session": {"backend": "db"}, "auth": {"retain_ui_password": "false"}})
    add_site(server)
    answer = login(server)
    assert answer.status_code == 200 and set(set_cookies(answer)) == {"esprit_id", "apiserver_device"}
    with sqlite3.connect(os.path.join(server.state_dir, "apiserver.db")) as db:
        assert db.execute("SELECT data FROM sessions WHERE gate = 'UI'").fetchall() == [(None,)]


def test_bad_passwords_count_until_429(server_factory):
    """Bad passwords answer 401 and count in Anvil; at the limit 429 with Retry-After, even for the right one."""
    server = server_factory({"anvil": {"limit": "3", "min_attempts": "1000"}})
    add_site(server)
    answers = [login(server, password="wrong", address="192.0.2.30"),
               login(server, domain="nope.example.com", address="192.0.2.30")]
    assert [(a.status_code, a.json()) for a in answers] == [(401, {"error": FAILED})] * 2
    blocking = login(server, password="wrong", address="192.0.2.30")
    assert blocking.status_code == 429 and int(blocking.headers["Retry-After"]) > 0
    blocked = login(server, address="192.0.2.30")
    assert blocked.status_code == 429 and 0 < int(blocked.headers["Retry-After"]) <= 900
    assert "esprit_id" not in blocked.cookies
    assert login(server, address="192.0.2.31").status_code == 200


def test_ui_restriction_refuses_login_and_all_other_gates(server_factory):
    """A UI entry: the UI refuses other addresses like a bad password, SOAP refuses everyone; a UI
    entry for 192.0.2.0/24 then lets that client log in."""
    server = server_factory(NO_DELAYS)
    hijacked, key = add_site(server)
    assert xmlrpc_call(server, "auth_restrict_ip", "198.51.100.0/24", "UI", sid=hijacked) is True
    refused = login(server, address="192.0.2.5")
    assert (refused.status_code, refused.json()) == (401, {"error": FAILED})
    assert login(server, address="198.51.100.7").status_code == 200
    for address in ("192.0.2.5", "198.51.100.7"):  # all-or-nothing: SOAP has no entry
        with pytest.raises(xmlrpc.client.Fault) as denied:
            xmlrpc_call(server, "common_whoami", key=key, address=address)
        assert denied.value.faultCode == 403
    assert xmlrpc_call(server, "auth_restrict_ip", "192.0.2.0/24", "UI", sid=hijacked) is True
    allowed = login(server, address="192.0.2.5")
    assert allowed.status_code == 200 and allowed.json()["site"] == DOMAIN


def test_api_toggle_leaves_the_login_open(server_factory):
    """[soap] enabled=false closes /soap and /xmlrpc with 403, but the UI login and its session work."""
    server = server_factory({**NO_DELAYS, "soap": {"enabled": "false"}})
    answer = login(server, username="admin", domain="", password="wrong")
    assert answer.status_code == 401  # reached the password check: the toggle did not refuse it
    assert soap_post(f"{server.url}/soap?authkey={server.admin_key}", "common_whoami").status_code == 403
    assert requests.get(f"{server.url}/login", timeout=30).status_code == 401


def test_api_toggle_off_site_admin_still_logs_in(server_factory):
    """A site made while the API was on can log in at the UI after cp.api is switched off."""
    server = server_factory(NO_DELAYS)
    add_site(server)
    assert xmlrpc_call(server, "scope_set", "cp.api", False, key=server.admin_key) is True
    answer = login(server)
    assert answer.status_code == 200
    assert whoami(server, answer.cookies["esprit_id"]).json()["username"] == "siteadmin"


def test_logout_ends_the_session_and_its_cookie_counts_as_fixation(server_factory):
    """After /logout the cookie is refused at gate UI, and each use of it counts until 429."""
    server = server_factory({"anvil": {"limit": "3", "min_attempts": "1000"}})
    add_site(server)
    sid = login(server, address="192.0.2.40").cookies["esprit_id"]
    out = requests.post(f"{server.url}/logout", cookies={"esprit_id": sid}, headers={"X-Forwarded-For": "192.0.2.40"},
                        timeout=30)
    assert out.status_code == 200 and out.json() == {"logged_out": True}
    expired = set_cookies(out)
    assert all("Max-Age=0" in expired[name] for name in ("esprit_id", "esprit_tag"))
    codes = [whoami(server, sid, address="192.0.2.40").status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert login(server, address="192.0.2.40").status_code == 429
    again = requests.post(f"{server.url}/logout", headers={"X-Forwarded-For": "192.0.2.41"}, timeout=30)
    assert again.status_code == 200


def test_malformed_requests_are_refused_clearly(server_factory):
    """Wrong Content-Type 415, broken or ambiguous forms 400, no cookie 401 without counting."""
    server = server_factory({"anvil": {"limit": "2", "min_attempts": "1000"}})
    remote = {"X-Forwarded-For": "192.0.2.50"}
    url = f"{server.url}/login"
    as_json = requests.post(url, json={"username": "admin", "password": "x"}, headers=remote, timeout=30)
    assert as_json.status_code == 415
    form = {**remote, "Content-Type": "application/x-www-form-urlencoded"}
    for body, reason in [(b"username=admin", "required"), (b"username=a&username=b&password=x", "more than once"),
                         (b"username=%ff&password=x", "UTF-8"), (b"\xff", "UTF-8"),
                         (b"&".join(b"f%d=1" % n for n in range(40)), "fields"),
                         (b"username=admin&password=" + b"x" * 1025, "too long")]:
        answer = requests.post(url, data=body, headers=form, timeout=30)
        assert answer.status_code == 400 and reason in answer.json()["error"], body[:40]
    assert [requests.get(url, headers=remote, timeout=30).status_code for _ in range(3)] == [401] * 3
    assert login(server, username="admin", domain="", password="wrong", address="192.0.2.50").status_code == 401
    assert requests.get(f"{server.url}/logout", timeout=30).status_code == 405


def test_https_only_refuses_remote_plain_http_and_marks_cookies_secure(server_factory):
    """https_only: remote plain-HTTP login 403; over HTTPS the cookies carry Secure."""
    server = server_factory({**NO_DELAYS, "frontend": {"https_only": "true"}}, https=True)
    add_site(server)
    plain = login(server, address="192.0.2.60")
    assert plain.status_code == 403 and "https_only" in plain.json()["error"]
    secure = login(server, address="192.0.2.60", base=server.https_url, verify=certificate_path(server))
    assert secure.status_code == 200
    assert all(value.endswith("; Secure") for value in set_cookies(secure).values())
