"""The trail's event hooks reach a third-party plugin on the reactor thread with the documented arguments."""

from __future__ import annotations

import threading

import pytest

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.errors import AuthenticationFailed, Throttled
from apiserver.hookspecs import hookimpl
from tests.accounts.support import harness_with_plugin, wait


class TrailHooks:
    """Records the hooks added for the security trail, with whether they ran on the main thread."""

    def __init__(self):
        self.calls = []

    def _seen(self, name, **kwargs):
        self.calls.append((name, kwargs, threading.current_thread() is threading.main_thread()))

    @hookimpl
    def apiserver_login_succeeded(self, identity, address, gate, method):
        self._seen("login_succeeded", identity=identity, address=address, gate=gate, method=method)

    @hookimpl
    def apiserver_login_unblocked(self, address):
        self._seen("login_unblocked", address=address)

    @hookimpl
    def apiserver_ip_restriction_added(self, identity, ip, gate, address):
        self._seen("ip_restriction_added", identity=identity, ip=ip, gate=gate, address=address)

    @hookimpl
    def apiserver_ip_restriction_removed(self, identity, ip, gate, address):
        self._seen("ip_restriction_removed", identity=identity, ip=ip, gate=gate, address=address)

    @hookimpl
    def apiserver_hijack_started(self, actor, target, gate, address):
        self._seen("hijack_started", actor=actor, target=target, gate=gate, address=address)


@pytest.fixture
def hooked(tmp_path):
    yield from harness_with_plugin(tmp_path, TrailHooks(),
                                   {"anvil": {"limit": "1", "min_attempts": "5", "ttl": "30", "whitelist": ""}})


def test_trail_hooks_fire_on_the_reactor_thread(hooked):
    """Key login, IP restriction added and removed, hijack and Anvil's unblock each call their hook once."""
    h, plugin = hooked
    site = h.add_site()
    assert ("login_succeeded", {"identity": h.admin, "address": "127.0.0.1", "gate": "SOAP", "method": "key"},
            True) in plugin.calls
    h.call(site, "auth_restrict_ip", "192.0.2.0/24", "DAV")
    h.call(site, "auth_remove_ip_restriction", "192.0.2.0/24", "DAV")
    h.call(h.admin, "admin_hijack", "example.com", None, "SOAP")
    with pytest.raises((AuthenticationFailed, Throttled)):
        wait(h.app.admit(AuthRequest(Gate.SOAP, "192.0.2.9", Credentials(api_key="0" * 64))))
    h.clock.advance(31)
    names = [name for name, _kwargs, _main in plugin.calls]
    assert names.count("ip_restriction_added") == names.count("ip_restriction_removed") == 1
    assert names.count("hijack_started") == names.count("login_unblocked") == 1
    assert all(main for _name, _kwargs, main in plugin.calls)
    by_name = {name: kwargs for name, kwargs, _main in plugin.calls}
    assert by_name["ip_restriction_added"] == {"identity": site, "ip": "192.0.2.0/24", "gate": "DAV",
                                               "address": "127.0.0.1"}
    assert by_name["hijack_started"]["actor"] == h.admin and by_name["hijack_started"]["gate"] == "SOAP"
    assert by_name["hijack_started"]["target"].user_id == site.user_id
    assert by_name["login_unblocked"] == {"address": "192.0.2.9"}
