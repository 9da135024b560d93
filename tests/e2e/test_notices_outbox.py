"""End to end: notices through the outbox of real servers to a real SMTP server (aiosmtpd) started
here; device notices with the place; the security trail of real calls."""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import sqlite3
import time
import urllib.request
import xmlrpc.client
from urllib.parse import urlencode

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port
from tests.e2e.clients.dav_clients import let_owner_reach
from tests.e2e.test_cpcmd_commands import Cpcmd
from tests.storage.support import scratch_database
from tests.test_geolocation import BERLIN, write_city_database
from tests.notices.test_passwords import Inbox

#: Retry and poll at once: these tests wait on a real clock.
QUICK_MAIL = {"enabled": "true", "retry_base": "1", "retry_cap": "1", "poll_interval": "1", "max_attempts": "1000"}


def api(server, key=None):
    return xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={key or server.admin_key}", allow_none=True)


def until(predicate, timeout: float = 40.0, what: str = "condition"):
    """Poll a running server until ``predicate()`` is true (the servers work on the real clock)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.1)


class Relay:
    """aiosmtpd on a chosen loopback port, started when the test says so."""

    def __init__(self, port: int):
        self.port, self.inbox, self.controller = port, Inbox(), None

    def start(self):
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def message_ids(self) -> list:
        return [email.message_from_string(text)["Message-ID"] for _to, text in self.inbox.messages]


@pytest.fixture
def relay():
    """An SMTP relay that is down until the test starts it."""
    r = Relay(free_port())
    yield r
    r.stop()


def _states(proxy) -> list:
    return [n["state"] for n in proxy.admin.get_notices()]


#: admin_add_site's options of every site here
SITE_OPTIONS = {"siteinfo.email": "owner@example.com", "auth.tpasswd": "Site-Password-1"}


def test_relay_down_restart_relay_up_every_notice_arrives_once(server_factory, relay):
    """Changes while SMTP is down queue their notices; they survive a restart and arrive once when it is up."""
    server = server_factory({"mail": dict(QUICK_MAIL, smtp_port=str(relay.port))})
    admin = api(server)
    admin.common.set_email("root@example.net")
    admin.admin.add_site("example.com", "exadmin", SITE_OPTIONS)
    admin.auth.change_password("Admin-Password-1")
    admin.auth.reset_password(None, "example.com")
    admin.auth.change_password("Site-Password-2", None, "example.com")
    until(lambda: all(n["attempts"] >= 1 for n in admin.admin.get_notices()), what="a failed attempt each")
    assert _states(admin) == ["queued"] * 3
    server.restart()
    admin = api(server)
    assert _states(admin) == ["queued"] * 3
    relay.start()
    until(lambda: _states(admin) == ["sent"] * 3, what="every notice sent")
    ids = relay.message_ids()
    assert len(ids) == 3 and len(set(ids)) == 3
    assert sorted(to[0] for to, _text in relay.inbox.messages) == ["owner@example.com", "owner@example.com",
                                                                  "root@example.net"]
    log = server.log()
    assert "Traceback" not in log and f"not sent via 127.0.0.1:{relay.port}" in log and "notices pending" in log


def test_two_nodes_on_one_postgresql_database_send_each_notice_once(server_factory, relay):
    """Two servers sharing a PostgreSQL database and the outbox deliver each notice exactly once."""
    url, drop = scratch_database("postgresql")
    shared = {"db": {"url": url}, "auth": {"secret": secrets.token_hex(32)},
              "mail": dict(QUICK_MAIL, smtp_port=str(relay.port))}
    first = second = None
    try:
        first = server_factory(shared)
        second = server_factory(shared)
        second.admin_key = first.admin_key   # one database, one administrator
        a, b = api(first), api(second)
        a.common.set_email("root@example.net")
        a.admin.add_site("example.com", "exadmin", SITE_OPTIONS)
        for n in range(4):
            a.auth.change_password(f"Admin-Password-{n}")
            b.auth.change_password(f"Site-Password-{n}", None, "example.com")
        until(lambda: len(a.admin.get_notices()) == 8, what="eight notices queued")
        relay.start()
        until(lambda: _states(b) == ["sent"] * 8, what="every notice sent")
        ids = relay.message_ids()
        assert len(ids) == 8 and len(set(ids)) == 8
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
        drop()


def _post(url: str, body: bytes, headers: dict):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _xmlrpc_from(server, key, address, agent, method, *params):
    body = xmlrpc.client.dumps(params, method, allow_none=True).encode()
    status, _headers, text = _post(f"{server.url}/xmlrpc?authkey={key}", body, {
        "Content-Type": "text/xml", "X-Forwarded-For": address, "User-Agent": agent})
    assert status == 200, text
    return xmlrpc.client.loads(text)[0][0]


def _ui_login(server, address, agent, cookie=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": address, "User-Agent": agent}
    if cookie:
        headers["Cookie"] = f"apiserver_device={cookie}"
    status, answer, _text = _post(f"{server.url}/login", urlencode(
        {"username": "exadmin", "domain": "example.com", "password": "Site-Password-1"}).encode(), headers)
    assert status == 200
    [device] = [c.split(";")[0].split("=", 1)[1] for c in answer.get_all("Set-Cookie")
                if c.startswith("apiserver_device=")]
    return device


def _bodies(relay) -> list:
    return [email.message_from_string(text, policy=email.policy.default).get_content()
            for _to, text in relay.inbox.messages]


def test_login_from_a_new_device_sends_one_notice_with_the_place(server_factory, relay):
    """A new address and User-Agent: one notice naming when, where (Berlin) and the client; the UI by cookie."""
    relay.start()
    server = server_factory({"mail": dict(QUICK_MAIL, smtp_port=str(relay.port))})
    write_city_database(f"{server.state_dir}/GeoLite2-City.mmdb", {"192.0.2.0/24": BERLIN})
    admin = api(server)
    admin.common.set_email("root@example.net")                   # the administrator's first device
    admin.admin.add_site("example.com", "exadmin", SITE_OPTIONS)
    for _ in range(2):
        _xmlrpc_from(server, server.admin_key, "192.0.2.10", "NoticeTest/1.0 (e2e)", "common.whoami")
    until(lambda: len(relay.inbox.messages) >= 1, what="the device notice")
    [(to, _text)] = relay.inbox.messages
    [body] = _bodies(relay)
    assert to == ["root@example.net"]
    assert "From:   192.0.2.10 (Berlin, Germany)" in body and "Client: NoticeTest/1.0 (e2e)" in body
    assert "Gate:   SOAP" in body and " UTC" in body
    browser = _ui_login(server, "198.51.100.5", "Firefox/120")  # exadmin's first login ever: no notice
    assert _ui_login(server, "192.0.2.20", "Firefox/120", cookie=browser) == browser
    _ui_login(server, "192.0.2.30", "Chrome/119")              # a browser without the cookie: new
    until(lambda: len(relay.inbox.messages) == 2, what="the UI device notice")
    assert relay.inbox.messages[1][0] == ["owner@example.com"]
    assert "From:   192.0.2.30 (Berlin, Germany)" in _bodies(relay)[1] and "Client: Chrome/119" in _bodies(relay)[1]
    assert [n["subject"] for n in admin.admin.get_notices()].count("Login from a new device: appliance admin") == 1
    assert len(relay.inbox.messages) == 2


def test_trail_lists_each_action_and_stores_no_secret(server_factory, relay):
    """Every security action over the API appears in admin_get_security_events; no secret is in any row."""
    server = server_factory({"mail": dict(QUICK_MAIL, smtp_port=str(relay.port), max_attempts="1"),
                             "anvil": {"limit": "3", "min_attempts": "10", "ttl": "2"}})
    admin = api(server)
    admin.common.set_email("root@example.net")
    admin.admin.add_site("example.com", "exadmin", SITE_OPTIONS)
    password = "Admin-Secret-Password-9"
    admin.auth.change_password(password)                         # its notice fails: max_attempts=1, relay down
    reset = admin.auth.reset_password(None, "example.com")
    key = admin.auth.create_api_key("ci")
    admin.auth.delete_api_key(key)
    admin.auth.restrict_ip("127.0.0.1")
    admin.auth.remove_ip_restriction("127.0.0.1")
    licence = "Secret_Licence_Key_42"
    admin.scope.set("auth.geoip-key", {"id": 1234, "key": licence})
    sid = admin.admin.hijack("example.com")
    bad_key = "ab" * 32
    for _ in range(3):
        status, _h, _t = _post(f"{server.url}/xmlrpc?authkey={bad_key}",
                               xmlrpc.client.dumps((), "common.whoami").encode(),
                               {"Content-Type": "text/xml", "X-Forwarded-For": "192.0.2.50"})
        assert status in (200, 429)
    wanted = {"login_succeeded", "login_failed", "login_blocked", "login_unblocked", "api_key_created",
              "api_key_deleted", "password_changed", "password_reset", "ip_restriction_added",
              "ip_restriction_removed", "scope_changed", "hijack_started", "notice_failed"}
    until(lambda: wanted <= {e["kind"] for e in admin.admin.get_security_events()}, what="every kind of event")
    failed = admin.admin.get_security_events({"kind": "login_failed"})
    assert failed and {(e["address"], e["gate"]) for e in failed} == {("192.0.2.50", "SOAP")}
    assert {e["kind"] for e in admin.admin.get_security_events({"site": "example.com"})} >= {
        "password_reset", "hijack_started"}
    by_cpcmd = Cpcmd(server, "socket").ok("-o", "json", "admin:get-security-events",
                                           "[kind:hijack_started,site:example.com]")
    assert [(e["kind"], e["account"]) for e in json.loads(by_cpcmd)] == [("hijack_started", "exadmin")]
    Cpcmd(server, "socket").ok("-d", "example.com", "common:whoami")   # the socket's own hijack
    hijacks = admin.admin.get_security_events({"kind": "hijack_started"})
    assert [(e["gate"], e["detail"]) for e in hijacks] == [("CLI", "by appliance admin"), (None, "by appliance admin")]
    mine = admin.auth.get_security_events(5)
    assert 0 < len(mine) <= 5 and {e["account"] for e in mine} == {"admin"}
    with sqlite3.connect(f"{server.state_dir}/apiserver.db") as db:
        rows = repr(db.execute("SELECT * FROM security_events").fetchall())
    for secret in (password, reset, key, licence, sid, bad_key, server.admin_key, "Site-Password-1"):
        assert secret not in rows


def test_dav_logins_tell_devices_apart_by_their_user_agent(server_factory, relay):
    """A DAV client with a new User-Agent from a known address is a new device: one notice naming it."""
    import requests

    relay.start()
    server = server_factory({"mail": dict(QUICK_MAIL, smtp_port=str(relay.port))})
    admin = api(server)
    admin.admin.add_site("example.com", "exadmin", SITE_OPTIONS)
    let_owner_reach(server)

    def propfind(agent):
        answer = requests.request("PROPFIND", f"{server.url}/dav/", auth=("exadmin@example.com", "Site-Password-1"),
                                  headers={"Depth": "0", "X-Forwarded-For": "192.0.2.40", "User-Agent": agent},
                                  timeout=60)
        assert answer.status_code == 207, answer.text

    propfind("davfs2/1.6.1")      # exadmin's first device: recorded, no notice
    propfind("davfs2/1.6.1")
    propfind("cadaver/0.24")      # same address, another client: a new device
    until(lambda: len(relay.inbox.messages) == 1, what="the DAV device notice")
    [body] = _bodies(relay)
    assert "Client: cadaver/0.24" in body and "Gate:   DAV" in body and "From:   192.0.2.40" in body
