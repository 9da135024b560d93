"""cp.config run-time keys take effect at once on a running server, without a restart.

Each key is changed with ``cpcmd scope:set cp.config SECTION KEY VALUE`` and its effect is then
observed from outside, over SOAP or in the server's log: ``[anvil]`` (limit, whitelist),
``[auth]`` limits (``min_pw_length``, ``ip_restriction_limit``), ``[soap] enabled``, ``[core]
http_trusted_forward`` and ``[core] debug`` (``cp.debug``).  (``[frontend] https_only`` is covered in
``test_https_listener.py``.)
Remote clients are named with ``X-Forwarded-For: 192.0.2.x`` through the trusted loopback proxy.
"""

from __future__ import annotations

import contextlib

import pytest
import zeep

from tests.e2e.clients.soap_clients import site_options, zeep_map
from tests.scopes.clients import cpcmd, soap_post, zeep_service

BAD_KEY = "0" * 64


def set_config(server, section: str, key: str, value: str) -> None:
    assert cpcmd(server, "scope:set", "cp.config", section, key, value) is True


@contextlib.contextmanager
def config_changed(server, *changes):
    """``(section, key, value, value_after)`` changes made for the block and undone after it."""
    for section, key, value, _ in changes:
        set_config(server, section, key, value)
    try:
        yield
    finally:
        for section, key, _, value_after in reversed(changes):
            set_config(server, section, key, value_after)


def bad_key_from(server, address: str) -> str:
    """The fault code a bad key from ``address`` gets."""
    answer = soap_post(f"{server.url}/soap?authkey={BAD_KEY}", "common_whoami", headers={"X-Forwarded-For": address})
    for code in ("Client.Throttled", "Client.Denied"):
        if code in answer.text:
            return code
    return answer.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module (no Anvil delays: counts are what matter here)."""
    from tests.conftest import start_server

    server = start_server(str(tmp_path_factory.mktemp("scope-runtime")), {"anvil": {"min_attempts": "1000"}})
    yield server
    server.stop()


def test_anvil_limit_applies_at_once(server):
    """Lowering [anvil] limit to 2 makes the second failure from an address block it."""
    with config_changed(server, ("anvil", "limit", "2", "20")):
        assert bad_key_from(server, "192.0.2.201") == "Client.Denied"
        assert bad_key_from(server, "192.0.2.201") == "Client.Throttled"


def test_anvil_whitelist_applies_at_once(server):
    """A network added to [anvil] whitelist is no longer counted or blocked."""
    with config_changed(server, ("anvil", "limit", "2", "20"),
                        ("anvil", "whitelist", "127.0.0.1, 198.51.100.0/24", "127.0.0.1")):
        assert [bad_key_from(server, "198.51.100.7") for _ in range(4)] == ["Client.Denied"] * 4


def test_min_pw_length_applies_at_once(server):
    """Raising [auth] min_pw_length refuses a password that was long enough a moment ago."""
    soap = zeep_service(server)
    with config_changed(server, ("auth", "min_pw_length", "30", "7")):
        with pytest.raises(zeep.exceptions.Fault) as refused:
            soap.auth_change_password("Twenty-chars-passw0rd")
        assert refused.value.code.endswith("Client.InvalidArgument")
    assert soap.auth_change_password("Twenty-chars-passw0rd") is True


def test_ip_restriction_limit_applies_at_once(server):
    """Lowering [auth] ip_restriction_limit to 1 refuses a second entry."""
    soap = zeep_service(server)
    domain = "runtime.example.com"
    soap.admin_add_site(domain, "siteadmin", zeep_map(site_options(f"admin@{domain}", "Site-passw0rd")))
    site = zeep_service(server, key=cpcmd(server, "-d", domain, "auth:create-api-key", "runtime"))
    with config_changed(server, ("auth", "ip_restriction_limit", "1", "50")):
        assert site.auth_restrict_ip("127.0.0.1") is True
        with pytest.raises(zeep.exceptions.Fault) as refused:
            site.auth_restrict_ip("127.0.0.2")
        assert "at most 1 IP restrictions" in refused.value.message
    assert site.auth_restrict_ip("127.0.0.2") is True


def test_soap_enabled_through_cp_config_applies_at_once(server):
    """[soap] enabled=false through cp.config closes the API at once; true opens it again."""
    with config_changed(server, ("soap", "enabled", "false", "true")):
        answer = soap_post(f"{server.url}/soap?authkey={server.admin_key}", "common_whoami")
        assert answer.status_code == 403 and "disabled by configuration" in answer.text
    assert "appliance" in soap_post(f"{server.url}/soap?authkey={server.admin_key}", "common_whoami").text


def test_trusted_forward_applies_at_once(server):
    """Without trusted proxies X-Forwarded-For is ignored: the loopback peer is whitelisted, never blocked."""
    with config_changed(server, ("anvil", "limit", "2", "20"), ("core", "http_trusted_forward", "", "127.0.0.1")):
        assert [bad_key_from(server, "192.0.2.202") for _ in range(3)] == ["Client.Denied"] * 3
    assert [bad_key_from(server, "192.0.2.202") for _ in range(2)] == ["Client.Denied"] * 2


def test_debug_logging_switches_at_once(server):
    """cp.debug true makes the server log debug lines (an Anvil delay) at once; false stops them."""
    with config_changed(server, ("anvil", "min_attempts", "1", "1000"), ("anvil", "base_delay", "1", "250")):
        bad_key_from(server, "192.0.2.203")
        bad_key_from(server, "192.0.2.203")  # delayed: logged at debug level only
        assert "anvil: delaying 192.0.2.203" not in server.log()
        assert cpcmd(server, "scope:set", "cp.debug", "true") is True
        try:
            bad_key_from(server, "192.0.2.204")
            bad_key_from(server, "192.0.2.204")
            assert "anvil: delaying 192.0.2.204" in server.log()
        finally:
            assert cpcmd(server, "scope:set", "cp.debug", "false") is True
        bad_key_from(server, "192.0.2.205")
        bad_key_from(server, "192.0.2.205")
        assert "anvil: delaying 192.0.2.205" not in server.log()
