"""GateKeeper.admit on the real application: the real Accounts on SQLite, keys, sessions, stored restrictions."""

import pytest

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.errors import AuthenticationFailed, Throttled
from apiserver.module import Role
from tests.accounts.support import Harness, wait

REMOTE = "192.0.2.40"


@pytest.fixture
def harness(tmp_path):
    """The real application with an empty Anvil whitelist and no delays (min_attempts above limit)."""
    h = Harness(tmp_path / "state", {"anvil": {"whitelist": "", "min_attempts": "100"}})
    yield h
    h.close()


def admit(h, address=REMOTE, gate=Gate.SOAP, **credentials):
    return wait(h.app.gatekeeper.admit(AuthRequest(gate=gate, address=address, credentials=Credentials(**credentials))))


def refusal(h, **kwargs):
    with pytest.raises((AuthenticationFailed, Throttled)) as raised:
        admit(h, **kwargs)
    return raised.value


def failures(h, address=REMOTE):
    state = wait(h.app.gatekeeper.anvil.status(address))
    return state.count if state else 0


def test_real_key_admitted(harness):
    """The appliance administrator's key from init is admitted from a remote address."""
    ctx = admit(harness, api_key=harness.init.admin_key)
    assert ctx.identity.role is Role.ADMIN and ctx.client_address == REMOTE and ctx.gate is Gate.SOAP


def test_twentieth_bad_key_blocks_and_real_key_waits_for_ttl(harness):
    """19 bad keys fail, the 20th is Throttled, the real key too until ttl has passed."""
    errors = [refusal(harness, api_key="0" * 64) for _ in range(20)]
    assert all(type(e) is AuthenticationFailed for e in errors[:19]) and isinstance(errors[19], Throttled)
    assert isinstance(refusal(harness, api_key=harness.init.admin_key), Throttled)
    harness.clock.advance(900)
    assert admit(harness, api_key=harness.init.admin_key).identity.role is Role.ADMIN


def test_forged_session_counts(harness):
    """An esprit_id that names no live session counts as a failed login."""
    assert isinstance(refusal(harness, session_id="f" * 32), AuthenticationFailed)
    assert failures(harness) == 1


def test_stored_restriction_refuses_like_bad_key_and_counts(harness):
    """auth_restrict_ip for SOAP: the site key works from that address only, at SOAP only; refusals count."""
    site_admin = harness.add_site()
    site_key = harness.call(site_admin, "auth_create_api_key", "for tests")
    harness.call(site_admin, "auth_restrict_ip", "192.0.2.50", "SOAP")
    assert admit(harness, address="192.0.2.50", api_key=site_key).identity.site == "example.com"
    refused = refusal(harness, address="192.0.2.51", api_key=site_key)
    bad = refusal(harness, address="192.0.2.51", api_key="0" * 64)
    assert (type(refused), str(refused)) == (type(bad), str(bad))
    assert failures(harness, "192.0.2.51") == 2
    assert isinstance(refusal(harness, address="192.0.2.50", gate=Gate.DAV, api_key=site_key), AuthenticationFailed)


def test_removing_the_restriction_shows_at_once(harness):
    """auth_remove_ip_restriction invalidates the cache: the next login is unrestricted."""
    site_admin = harness.add_site()
    site_key = harness.call(site_admin, "auth_create_api_key", "")
    harness.call(site_admin, "auth_restrict_ip", "192.0.2.0/24")
    assert isinstance(refusal(harness, address="198.51.100.1", api_key=site_key), AuthenticationFailed)
    harness.call(site_admin, "auth_remove_ip_restriction", "192.0.2.0/24")
    assert admit(harness, address="198.51.100.1", api_key=site_key).identity.site == "example.com"


def test_hijacked_session_ignores_the_sites_restrictions(harness):
    """The appliance administrator's hijack session works from anywhere though the site is restricted."""
    site_admin = harness.add_site()
    harness.call(site_admin, "auth_restrict_ip", "192.0.2.50")
    sid = harness.call(harness.admin, "admin_hijack", "example.com")
    ctx = admit(harness, address="203.0.113.9", session_id=sid)
    assert ctx.identity.site == "example.com" and ctx.session_id == sid


def test_root_on_the_cli_socket_is_never_throttled(harness):
    """Failures counted against the socket's address (whitelist emptied) block others there, never root."""
    from apiserver.transport.cli_socket import LOCAL_ADDRESS

    for _ in range(20):
        refusal(harness, address=LOCAL_ADDRESS, gate=Gate.CLI, api_key="0" * 64)
    assert isinstance(refusal(harness, address=LOCAL_ADDRESS, gate=Gate.CLI, api_key=harness.init.admin_key), Throttled)
    ctx = admit(harness, address=LOCAL_ADDRESS, gate=Gate.CLI, peer_uid=0)
    assert ctx.identity.role is Role.ADMIN
