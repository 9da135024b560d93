"""The rampart module on a real application: Anvil as the jail ``anvil``, a real fail2ban's jails,
the whitelist, and what a site administrator may do within rampart.max."""

from __future__ import annotations

import pytest

from apiserver.context import Gate
from apiserver.errors import Denied, InvalidArgument
from tests.accounts.support import Harness, wait
from tests.rampart.support import fail2ban  # noqa: F401 - the fixture

ANVIL = {"anvil": {"limit": "3", "min_attempts": "100"}}  # blocked at the third failure, no delays


@pytest.fixture
def rampart(tmp_path, fail2ban):
    """(harness, fail2ban): an application whose rampart talks to the test's fail2ban."""
    sections = dict(ANVIL, rampart={"fail2ban_socket": fail2ban.socket, "whitelist_ttl": "0"})
    h = Harness(tmp_path / "state", sections=sections)
    yield h, fail2ban
    h.close()


def block_in_anvil(h, address: str) -> None:
    for _ in range(3):
        wait(h.app.anvil.fail(address, Gate.SOAP, "key"))


def test_anvil_and_fail2ban_jails_answer_queries_and_unbans(rampart):
    """get_jails lists anvil and fail2ban's jail; is_banned and banned_services see both; unban
    lifts a ban in one jail or all; unknown jails and addresses are named."""
    h, f2b = rampart
    call = lambda name, *args: h.call(h.admin, name, *args)  # noqa: E731
    assert call("rampart_get_jails") == ["anvil", f2b.jail]
    block_in_anvil(h, "192.0.2.20")
    f2b.ban("192.0.2.20")
    assert call("rampart_is_banned", "192.0.2.20") is True
    assert call("rampart_is_banned", "192.0.2.20", "anvil") is True
    assert call("rampart_is_banned", "192.0.2.20", f2b.jail) is True
    assert call("rampart_banned_services", "192.0.2.20") == ["anvil", f2b.jail]
    assert call("rampart_unban", "192.0.2.20", "anvil") is True
    assert call("rampart_banned_services", "192.0.2.20") == [f2b.jail]
    assert call("rampart_unban", "192.0.2.20") is True
    assert call("rampart_is_banned", "192.0.2.20") is False and call("rampart_banned_services", "192.0.2.20") == []
    assert call("rampart_unban", "192.0.2.20") is True  # nothing banned: still true
    with pytest.raises(InvalidArgument, match="no jail 'sshd'; jails are anvil, apitest"):
        call("rampart_is_banned", "192.0.2.20", "sshd")
    with pytest.raises(InvalidArgument, match="invalid IP address 'banana'"):
        call("rampart_unban", "banana")


def test_the_whitelist_keeps_anvil_from_counting_and_fail2ban_from_banning(rampart):
    """An address (or network) on the whitelist is never counted by Anvil nor banned by fail2ban;
    removing the entry ends that; entries are stored, so another node reading the same database sees them."""
    h, f2b = rampart
    assert h.call(h.admin, "rampart_whitelist", "192.0.2.0/28") is True
    block_in_anvil(h, "192.0.2.5")
    assert wait(h.app.anvil.status("192.0.2.5")) is None
    f2b.ban_all("192.0.2.5", "192.0.2.30")
    assert h.call(h.admin, "rampart_banned_services", "192.0.2.5") == []
    other = Harness(h.config.state_dir, sections=dict(ANVIL, rampart={"whitelist_ttl": "0"}))
    try:
        whitelist = other.app.rampart_whitelist
        whitelist.reload()
        assert whitelist.contains("192.0.2.7") and not whitelist.contains("192.0.2.17")
    finally:
        other.close()
    assert h.call(h.admin, "rampart_whitelist", "192.0.2.0/28", "remove") is True
    block_in_anvil(h, "192.0.2.5")
    assert h.call(h.admin, "rampart_is_banned", "192.0.2.5", "anvil") is True
    with pytest.raises(InvalidArgument, match="mode must be add or remove"):
        h.call(h.admin, "rampart_whitelist", "192.0.2.5", "toggle")


def test_a_site_administrator_acts_within_rampart_max(rampart):
    """Site administrators may query any address; unban and whitelist only with rampart.enabled and
    up to rampart.max addresses (whitelisted plus unbanned in 24 hours; null: [rampart]
    delegated_whitelist); users may only query; the entries show as rampart.whitelist."""
    h, f2b = rampart
    h.call(h.admin, "admin_add_site", "example.com", "owner", {"rampart": {"enabled": 1, "max": 2}})
    site = h.app.directory.identity_for("example.com", None)
    user = h.add_user(site, "bob")
    block_in_anvil(h, "192.0.2.40")
    assert h.call(site, "rampart_is_banned", "192.0.2.40") is True
    assert h.call(site, "rampart_unban", "192.0.2.40") is True
    assert h.call(site, "rampart_whitelist", "192.0.2.41") is True
    assert h.call(site, "rampart_unban", "192.0.2.40") is True  # counted already
    with pytest.raises(Denied, match="at most 2 address"):
        h.call(site, "rampart_whitelist", "192.0.2.42")
    assert h.call(h.admin, "admin_collect", ["rampart"])["site1"]["rampart"] == {
        "enabled": 1, "max": 2, "whitelist": ["192.0.2.41"]}
    h.clock.advance(86401)  # the unban no longer counts
    assert h.call(site, "rampart_whitelist", "192.0.2.42") is True
    assert h.call(site, "rampart_whitelist", "192.0.2.41", "remove") is True
    assert h.call(user, "rampart_is_banned", "192.0.2.40") is False
    with pytest.raises(Denied):
        h.call(user, "rampart_unban", "192.0.2.40")
    h.call(h.admin, "admin_edit_site", "example.com", {"rampart.max": None})
    with pytest.raises(Denied, match="at most 0"):  # [rampart] delegated_whitelist = 0
        h.call(site, "rampart_whitelist", "192.0.2.43")
    h.config.set("rampart", "delegated_whitelist", "-1")
    assert h.call(site, "rampart_whitelist", "192.0.2.43") is True
    h.call(h.admin, "admin_edit_site", "example.com", {"rampart.enabled": 0})
    with pytest.raises(Denied, match="rampart.enabled"):
        h.call(site, "rampart_unban", "192.0.2.40")


def test_without_fail2ban_anvil_is_the_only_jail(tmp_path):
    """No fail2ban on the host: the jails are anvil alone and the API works on it."""
    h = Harness(tmp_path / "state", sections=dict(ANVIL, rampart={"fail2ban_socket": str(tmp_path / "none.sock")}))
    try:
        assert h.call(h.admin, "rampart_get_jails") == ["anvil"]
        block_in_anvil(h, "2001:db8::1")
        assert h.call(h.admin, "rampart_banned_services", "2001:db8::2") == ["anvil"]  # counted per /64
        assert h.call(h.admin, "rampart_unban", "2001:db8::1") is True
        assert h.call(h.admin, "rampart_is_banned", "2001:db8::2") is False
    finally:
        h.close()
