"""Password notices: who is mailed for which change (the seed's table), through the outbox to a real SMTP server."""

from __future__ import annotations

import socket

import pytest
from aiosmtpd.controller import Controller
from twisted.logger import globalLogPublisher

from apiserver.notices import passwords as notifications
from apiserver.context import Identity
from apiserver.module import Role
from tests.accounts.support import Harness, eventually


class Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1; yields (inbox, port)."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture
def mailing(tmp_path, smtp):
    """(harness with mail on, inbox, site admin, user bob); every account has its own address."""
    inbox, port = smtp
    h = Harness(tmp_path / "state", {"mail": {"enabled": "true", "smtp_port": str(port),
                                              "sender": "panel@example.net"}})
    h.call(h.admin, "common_set_email", "root@example.net")
    site = h.add_site(email="site@example.com")
    bob = h.add_user(site, "bob", "bob-password", "bob@example.com")
    yield h, inbox, site, bob
    h.close()


def test_change_notices_follow_the_seed_table(mailing):
    """Each row of the table mails exactly the account it names, without the password."""
    h, inbox, site, bob = mailing
    rows = [
        (h.admin, dict(), "root@example.net"),                                  # appliance, self
        (h.admin, dict(domain="example.com"), "site@example.com"),             # appliance, site
        (h.admin, dict(user="bob", domain="example.com"), "site@example.com"),  # appliance, user
        (site, dict(), "site@example.com"),                                     # site, self
        (site, dict(user="bob"), "bob@example.com"),                            # site, user
        (bob, dict(), "bob@example.com"),                                       # user, self
    ]
    for n, (actor, target, expected) in enumerate(rows):
        password = f"Secret-Password-{n}"
        h.call(actor, "auth_change_password", password, **target)
        eventually(lambda: len(inbox.messages) == n + 1)
        recipients, text = inbox.messages[n]
        assert recipients == [expected], (actor.username, target)
        assert password not in text and "Subject: Password changed" in text
        assert "From: panel@example.net" in text


def test_reset_notifies_the_target_if_it_has_an_address(mailing):
    """A reset mails the reset account (not the password); without an address nothing is queued."""
    h, inbox, site, bob = mailing
    new = h.call(site, "auth_reset_password", "bob")
    eventually(lambda: len(inbox.messages) == 1)
    recipients, text = inbox.messages[0]
    assert recipients == ["bob@example.com"] and new not in text and "Subject: Password reset" in text
    h.call(bob, "common_set_email", "")
    h.call(site, "auth_reset_password", "bob")
    assert [n.to for n in h.call(h.admin, "admin_get_notices")] == ["bob@example.com"]
    assert len(inbox.messages) == 1


def test_notice_says_who_acted_for_a_hijacked_session(mailing):
    """A change made in a hijacked session names the appliance administrator behind it."""
    h, inbox, site, _bob = mailing
    hijacked = Identity(Role.SITE, site.user_id, site.username, site.site_id, site.site, impersonator=h.admin)
    message = notifications.compose_notice(h.app.config, h.app.clock, site, hijacked, False, "site@example.com")
    assert "by appliance admin acting as site siteadmin@example.com on " in message.get_content()


def test_smtp_failure_keeps_the_notice_queued_and_logs_one_line(tmp_path):
    """With no relay listening the change succeeds, the notice waits queued, one line (no traceback) is logged."""
    h = Harness(tmp_path / "state", {"mail": {"enabled": "true", "smtp_port": str(_free_port())}})
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        h.call(h.admin, "common_set_email", "root@example.net")
        assert h.call(h.admin, "auth_change_password", "another-password") is True
        eventually(lambda: h.call(h.admin, "admin_get_notices")[0].attempts == 1)
        [notice] = h.call(h.admin, "admin_get_notices")
        assert (notice.state, notice.to, notice.sent) == ("queued", "root@example.net", None)
        lines = [e for e in events if e.get("log_namespace") == "apiserver.notices"]
        assert len(lines) == 1 and "log_failure" not in lines[0]
        text = lines[0]["log_format"].format(**lines[0])
        assert f"127.0.0.1:{h.config.get('mail', 'smtp_port')}" in text and "1 notices pending" in text
    finally:
        globalLogPublisher.removeObserver(events.append)
        h.close()


def test_disabled_mail_queues_nothing(tmp_path, smtp):
    """[mail] enabled = false: a password change puts nothing in the outbox and mails nothing."""
    inbox, port = smtp
    h = Harness(tmp_path / "state", {"mail": {"enabled": "false", "smtp_port": str(port)}})
    try:
        h.call(h.admin, "common_set_email", "root@example.net")
        h.call(h.admin, "auth_change_password", "another-password")
        assert h.call(h.admin, "admin_get_notices") == []
        assert inbox.messages == []
    finally:
        h.close()
