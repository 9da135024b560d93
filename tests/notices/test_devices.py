"""Unrecognized-device notices: a new address and User-Agent is mailed once with the place; the first
login, a known device, sessions and hijacks are not."""

from __future__ import annotations

import email
import email.policy

import pytest

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.notices.devices import printable_agent
from tests.accounts.support import Harness, eventually, wait
from tests.test_geolocation import BERLIN, write_city_database
from tests.notices.test_passwords import smtp  # noqa: F401  (the real SMTP server fixture)


def _body(text: str) -> str:
    return email.message_from_string(text, policy=email.policy.default).get_content()


@pytest.fixture
def devices(tmp_path, smtp):  # noqa: F811
    """(harness with mail on and a GeoLite2 database placing 192.0.2.0/24 in Berlin, inbox, site admin key)."""
    inbox, port = smtp
    h = Harness(tmp_path / "state", {"mail": {"enabled": "true", "smtp_port": str(port)}})
    write_city_database(tmp_path / "state" / "GeoLite2-City.mmdb", {"192.0.2.0/24": BERLIN})
    site = h.add_site(email="site@example.com")
    key = h.call(site, "auth_create_api_key", "client")
    yield h, inbox, key
    h.close()


def _call(h, key, address, agent, gate=Gate.SOAP):
    ctx = wait(h.app.admit(AuthRequest(gate, address, Credentials(api_key=key), user_agent=agent)))
    eventually(lambda: not h.app.notices.devices._checking)
    wait(h.app.notices.sender.idle())
    return ctx


def _device_notices(h):
    return [n for n in h.call(h.admin, "admin_get_notices") if n.subject.startswith("Login from a new device")]


def test_new_address_and_agent_sends_one_notice_with_the_place(devices):
    """First login: none; same device again: none; a new address and client: one, with when, where, which client."""
    h, inbox, key = devices
    _call(h, key, "198.51.100.1", "billing/1.0")
    _call(h, key, "198.51.100.1", "billing/1.0")
    assert _device_notices(h) == []
    _call(h, key, "192.0.2.10", "Mozilla/5.0 (X11; Linux) Evil/6.6")
    _call(h, key, "192.0.2.10", "Mozilla/5.0 (X11; Linux) Evil/6.6")
    eventually(lambda: len(inbox.messages) == 1)
    [notice] = _device_notices(h)
    assert notice.to == "site@example.com" and notice.state == "sent"
    recipients, text = inbox.messages[0]
    body = _body(text)
    assert recipients == ["site@example.com"]
    assert "From:   192.0.2.10 (Berlin, Germany)" in body
    assert "Client: Mozilla/5.0 (X11; Linux) Evil/6.6" in body and " UTC" in body and key not in text
    _call(h, key, "192.0.2.10", "other-client/2")       # same address, other client: a new device
    eventually(lambda: len(inbox.messages) == 2)
    assert len(_device_notices(h)) == 2


def test_known_device_survives_a_restart_of_the_cache(devices):
    """Devices are remembered in the database: a new node (empty cache) sends nothing for a known one."""
    h, inbox, key = devices
    _call(h, key, "198.51.100.1", "billing/1.0")
    h.app.notices.devices._known.clear()
    _call(h, key, "198.51.100.1", "billing/1.0")
    assert _device_notices(h) == [] and inbox.messages == []


def test_sessions_and_hijacks_are_no_new_devices(devices):
    """A hijack session used from anywhere sends no device notice to the hijacked account."""
    h, inbox, key = devices
    _call(h, key, "198.51.100.1", "billing/1.0")
    sid = h.call(h.admin, "admin_hijack", "example.com")
    wait(h.app.admit(AuthRequest(Gate.SOAP, "192.0.2.77", Credentials(session_id=sid), user_agent="x")))
    assert _device_notices(h) == []


def test_ui_cookie_tells_browsers_apart(devices):
    """UI logins: a browser's cookie is a device; a browser without one is new (after the first ever)."""
    h, inbox, key = devices
    devices_ = h.app.notices.devices
    site = wait(h.app.run_blocking(h.app.directory.identity_for, "example.com", None))
    first = wait(devices_.ui_login(site, None, "198.51.100.1", "Firefox"))
    assert _device_notices(h) == []                                    # the account's first device
    assert wait(devices_.ui_login(site, first, "192.0.2.10", "Firefox")) == first
    wait(h.app.notices.sender.idle())
    assert _device_notices(h) == []                                    # known cookie, wherever it is
    other = wait(devices_.ui_login(site, "not-a-token", "192.0.2.10", "Chrome"))
    assert other != first and len(other) == 43
    eventually(lambda: len(inbox.messages) == 1)
    assert "Client: Chrome" in _body(inbox.messages[0][1])


def test_user_agent_is_printable_and_bounded():
    """Control characters never reach a notice; an absent or long User-Agent is shown sensibly."""
    assert printable_agent("a\r\nBcc: x@example.net\x00") == "aBcc: x@example.net"
    assert printable_agent(None) == "(none sent)" and len(printable_agent("x" * 1000)) == 200


def test_dav_password_logins_are_checked_in_the_shared_admission(devices):
    """The device check is in GateKeeper's admission, so the DAV gate (password logins) gets it too."""
    h, inbox, _key = devices
    credentials = Credentials(username="siteadmin", site="example.com", password="site-password")
    for address, agent in (("198.51.100.1", "davfs2/1.6"), ("198.51.100.1", "davfs2/1.6"),
                           ("192.0.2.10", "cadaver/0.24")):
        wait(h.app.admit(AuthRequest(Gate.DAV, address, credentials, user_agent=agent)))
        eventually(lambda: not h.app.notices.devices._checking)
    eventually(lambda: len(inbox.messages) == 1)
    body = _body(inbox.messages[0][1])
    assert "Client: cadaver/0.24" in body and "Gate:   DAV" in body and "192.0.2.10 (Berlin, Germany)" in body


def test_a_deleted_accounts_devices_are_not_its_successors(devices):
    """SQLite gives a deleted account's id to the next one: the node's memory of known devices must
    not make the new account's devices known (its first device is recorded, the next one is mailed)."""
    h, inbox, key = devices
    old = wait(h.app.run_blocking(h.app.directory.identity_for, "example.com", None))
    _call(h, key, "198.51.100.1", "billing/1.0")
    h.call(h.admin, "admin_delete_site", "example.com")
    site = h.add_site(domain="example.org", email="new@example.org")
    assert site.user_id == old.user_id                                  # the id was reused
    new_key = h.call(site, "auth_create_api_key", "client")
    _call(h, new_key, "198.51.100.1", "billing/1.0")                    # its first device: no notice
    _call(h, new_key, "192.0.2.10", "cadaver/0.24")                     # its second: mailed
    eventually(lambda: len(inbox.messages) == 1)
    assert inbox.messages[0][0] == ["new@example.org"]


def test_places_are_looked_up_only_for_a_notice(devices, monkeypatch):
    """An account's first device queues no notice, so its address is not geolocated (the GeoIP2
    web service charges per lookup); the next new device, which is mailed, is."""
    h, inbox, key = devices
    looked_up = []
    real = h.app.geolocator.lookup
    monkeypatch.setattr(h.app.geolocator, "lookup", lambda address: looked_up.append(address) or real(address))
    _call(h, key, "192.0.2.10", "first/1.0")                 # the site's first device
    assert looked_up == []
    _call(h, key, "192.0.2.11", "second/1.0")                # a new one: mailed, with its place
    assert len(looked_up) == 1
    eventually(lambda: len(inbox.messages) == 1)
