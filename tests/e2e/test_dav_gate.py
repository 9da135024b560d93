"""The DAV gate of a running server: Basic challenges, Anvil (429 with Retry-After), IP
restrictions at gate DAV (all-or-nothing), https_only, the ``[dav] enabled`` toggle and the
``apache.dav`` scope, ``[dav] max_upload_size``, and the remembered password ending with a
password change.

Remote clients are simulated through the trusted proxy (``X-Forwarded-For: 192.0.2.x``).
"""

from __future__ import annotations

import base64
import os
import socket

import pytest
import requests

from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home, xmlrpc_call
from tests.scopes.clients import certificate_path, cpcmd

DOMAIN, ADMIN, PASSWORD = "gate.example.com", "gateadmin", "Gate-passw0rd"
LOGIN = f"{ADMIN}@{DOMAIN}"
NO_DELAYS = {"anvil": {"min_attempts": "1000"}}


def dav_site(server_factory, overrides=None, https=False):
    """A server with one site; returns (server, session acting as the site's administrator)."""
    server = server_factory(overrides, https=https)
    sid = add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    return server, sid


def test_missing_or_unreadable_credentials_get_the_challenge(server_factory):
    """No Authorization, another scheme or broken Base64: 401 with a Basic challenge, nothing counted."""
    server, _ = dav_site(server_factory, {"anvil": {"limit": "2", "min_attempts": "1000"}})
    dav = Dav(server.url, LOGIN, PASSWORD, address="192.0.2.1")
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic !!!"},
                    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}):
        answer = requests.request("PROPFIND", dav.url(), headers={"Depth": "0", "X-Forwarded-For": "192.0.2.1",
                                                                  **headers}, timeout=30)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="')
    assert dav.propfind(depth="0").status_code == 207  # none of them counted towards the limit of 2


def test_put_without_credentials_is_refused_before_its_body(server_factory):
    """A PUT without Authorization gets 401 at once, without the server waiting for (or storing) the body."""
    server, _ = dav_site(server_factory)
    host, port = server.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"PUT /dav/big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 401 ") and b"WWW-Authenticate: Basic" in head


def test_bad_passwords_count_in_anvil_until_429(server_factory):
    """Wrong passwords are 401 and count; at the limit 429 with Retry-After, even with the right password."""
    server, _ = dav_site(server_factory, {"anvil": {"limit": "3", "min_attempts": "1000"}})
    wrong = Dav(server.url, LOGIN, "wrong-password", address="192.0.2.20")
    assert [wrong.propfind(depth="0").status_code for _ in range(2)] == [401, 401]
    blocking = wrong.propfind(depth="0")
    assert blocking.status_code == 429 and int(blocking.headers["Retry-After"]) > 0
    right = Dav(server.url, LOGIN, PASSWORD, address="192.0.2.20")
    answer = right.propfind(depth="0")
    assert answer.status_code == 429 and 0 < int(answer.headers["Retry-After"]) <= 900
    assert Dav(server.url, LOGIN, PASSWORD, address="192.0.2.21").propfind(depth="0").status_code == 207


def test_ip_restriction_at_gate_dav(server_factory):
    """A DAV entry admits its address only; a refused address is the same 401 as a bad password and counts."""
    server, sid = dav_site(server_factory, {"anvil": {"limit": "3", "min_attempts": "1000"}})
    assert xmlrpc_call(server, "auth_restrict_ip", "192.0.2.10", "DAV", sid=sid) is True
    assert Dav(server.url, LOGIN, PASSWORD, address="192.0.2.10").propfind(depth="0").status_code == 207
    refused = Dav(server.url, LOGIN, PASSWORD, address="192.0.2.30")
    first = refused.propfind(depth="0")
    assert first.status_code == 401
    assert first.text == Dav(server.url, LOGIN, "wrong", address="192.0.2.31").propfind(depth="0").text
    assert [refused.propfind(depth="0").status_code for _ in range(2)] == [401, 429]


def test_restriction_for_another_gate_closes_dav_too(server_factory):
    """All-or-nothing: an entry for gate UI alone leaves DAV open to no address."""
    server, sid = dav_site(server_factory, NO_DELAYS)
    assert xmlrpc_call(server, "auth_restrict_ip", "192.0.2.40", "UI", sid=sid) is True
    assert Dav(server.url, LOGIN, PASSWORD, address="192.0.2.40").propfind(depth="0").status_code == 401
    assert xmlrpc_call(server, "auth_restrict_ip", "192.0.2.40", None, sid=sid) is True
    assert Dav(server.url, LOGIN, PASSWORD, address="192.0.2.40").propfind(depth="0").status_code == 207


def test_https_only_refuses_remote_plain_http(server_factory):
    """https_only: remote HTTP is 403 naming HTTPS; HTTPS and loopback HTTP keep working."""
    server, _ = dav_site(server_factory, {"frontend": {"https_only": "true"}}, https=True)
    refused = Dav(server.url, LOGIN, PASSWORD, address="192.0.2.50").propfind(depth="0")
    assert refused.status_code == 403 and "https://" in refused.text
    secure = Dav(server.https_url, LOGIN, PASSWORD, address="192.0.2.50", verify=certificate_path(server))
    assert secure.propfind(depth="0").status_code == 207
    assert Dav(server.url, LOGIN, PASSWORD).propfind(depth="0").status_code == 207


def test_dav_toggle_and_the_apache_dav_scope(server_factory):
    """[dav] enabled=false answers 403 with the reason; scope apache.dav switches it at run time."""
    server, _ = dav_site(server_factory, {"dav": {"enabled": "false"}}, https=True)
    dav = Dav(server.url, LOGIN, PASSWORD)
    answer = dav.propfind(depth="0")
    assert answer.status_code == 403 and "[dav] enabled=false" in answer.text
    assert cpcmd(server, "scope:set", "apache.dav", "true") is True
    assert dav.propfind(depth="0").status_code == 207
    assert cpcmd(server, "scope:set", "apache.dav", "false") is True
    secure = Dav(server.https_url, LOGIN, PASSWORD, verify=certificate_path(server))
    assert dav.request("PUT", "x.txt", data=b"x").status_code == 403
    assert secure.propfind(depth="0").status_code == 403
    assert cpcmd(server, "scope:get", "apache.dav") is False
    assert "enabled = false" in open(server.config_path).read()


def test_upload_over_max_upload_size_is_413_and_stores_nothing(server_factory):
    """A declared or chunked PUT over [dav] max_upload_size is 413 and leaves no file."""
    server, _ = dav_site(server_factory, {"dav": {"max_upload_size": "1000"}})
    dav = Dav(server.url, LOGIN, PASSWORD)
    assert dav.request("PUT", "small.txt", data=b"s" * 1000).status_code == 201
    assert dav.request("PUT", "big.txt", data=b"b" * 1001).status_code == 413
    assert dav.request("PUT", "chunked.txt", data=iter([b"c" * 600, b"c" * 600])).status_code == 413
    home = site_home(server, DOMAIN)
    assert not os.path.exists(os.path.join(home, "big.txt")) and not os.path.exists(os.path.join(home, "chunked.txt"))
    assert dav.request("PUT", "chunked-ok.txt", data=iter([b"o" * 400, b"o" * 400])).status_code == 201
    with open(os.path.join(home, "chunked-ok.txt"), "rb") as fh:
        assert fh.read() == b"o" * 800


def test_password_change_ends_the_remembered_password(server_factory):
    """A verified password is remembered (one login recorded for many requests) until the password changes."""
    server, sid = dav_site(server_factory, NO_DELAYS)
    dav = Dav(server.url, LOGIN, PASSWORD, address="192.0.2.60")
    assert [dav.propfind(depth="0").status_code for _ in range(4)] == [207] * 4
    logins = [r for r in xmlrpc_call(server, "auth_get_login_history", None, sid=sid) if r["gate"] == "DAV"]
    assert len(logins) == 1 and logins[0]["success"] is True
    assert xmlrpc_call(server, "auth_change_password", "New-passw0rd-1", None, None, sid=sid) is True
    assert dav.propfind(depth="0").status_code == 401
    assert Dav(server.url, LOGIN, "New-passw0rd-1", address="192.0.2.60").propfind(depth="0").status_code == 207


def test_deleted_site_is_no_longer_served(server_factory):
    """After admin_delete_site the remembered password of its administrator opens nothing."""
    server, _ = dav_site(server_factory, NO_DELAYS)
    dav = Dav(server.url, LOGIN, PASSWORD, address="192.0.2.70")
    assert dav.request("PUT", "f.txt", data=b"f").status_code == 201
    xmlrpc_call(server, "admin_delete_site", DOMAIN, key=server.admin_key)
    assert dav.propfind(depth="0").status_code == 401


@pytest.mark.parametrize("login", [f"{ADMIN}@other.example", f"{ADMIN}@", "@" + DOMAIN, ADMIN])
def test_wrong_domain_or_shapes_of_user_name(server_factory, login):
    """Another domain, an empty part or no domain at all never reach the site's files."""
    server, _ = dav_site(server_factory, NO_DELAYS)
    assert Dav(server.url, login, PASSWORD).propfind(depth="0").status_code == 401
