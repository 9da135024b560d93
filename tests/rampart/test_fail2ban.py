"""fail2ban through its client, against a real fail2ban-server started here."""

from __future__ import annotations

from apiserver.rampart.fail2ban import Fail2ban
from tests.rampart.support import fail2ban  # noqa: F401 - the fixture


def test_jails_bans_unbans_and_ignore_lists(fail2ban):
    """The client lists the jail, tells which jails ban an address, lifts bans, and keeps an
    ignored address from being banned."""
    client = Fail2ban("fail2ban-client", fail2ban.socket)
    assert client.running() and client.jails() == [fail2ban.jail]
    assert client.banned_in("192.0.2.10") == []
    fail2ban.ban("192.0.2.10")
    assert client.banned_in("192.0.2.10") == [fail2ban.jail]
    client.unban("192.0.2.10", fail2ban.jail)
    assert client.banned_in("192.0.2.10") == []
    fail2ban.ban("192.0.2.10")
    client.unban("192.0.2.10")  # every jail
    assert client.banned_in("192.0.2.10") == []
    client.unban("192.0.2.99")  # nothing banned: no error
    client.ignore("192.0.2.11")
    fail2ban.ban_all("192.0.2.11", "192.0.2.12")
    assert client.banned_in("192.0.2.11") == [] and client.banned_in("192.0.2.12") == [fail2ban.jail]
    client.ignore("192.0.2.11", add=False)
    fail2ban.ban("192.0.2.11")


def test_without_fail2ban_there_are_no_jails(tmp_path):
    """No socket configured, or nobody answering on it: fail2ban has no jails and bans nothing."""
    for socket in ("", str(tmp_path / "absent.sock")):
        client = Fail2ban("fail2ban-client", socket)
        assert not client.running() and client.jails() == [] and client.banned_in("192.0.2.1") == []
        client.unban("192.0.2.1")
        client.ignore("192.0.2.1")
