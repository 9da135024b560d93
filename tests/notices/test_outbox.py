"""The outbox: backoff on the injected clock, failed after max_attempts, a relay that comes back,
two senders on one database, all against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import threading

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from apiserver.notices.outbox import NoticeSender, Outbox, queue_notice, retry_delay
from tests.accounts.support import Harness, eventually, wait
from tests.conftest import run_in_threads
from tests.notices.test_passwords import Inbox, _free_port, smtp  # noqa: F401  (the real SMTP server fixture)


def test_retry_delay_doubles_up_to_the_cap():
    """min(cap, base * 2 ** (attempts - 1)): 30, 60, 120 ... then the cap."""
    assert [retry_delay(n, 30, 200) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]


def _tick(h, seconds: float) -> None:
    """Advance the harness clock (the sender's polls are due on it) and let the poll finish."""
    h.clock.advance(seconds)
    wait(h.app.notices.sender.idle())


def _notice(h):
    [notice] = h.call(h.admin, "admin_get_notices")
    return notice


def _mailing_harness(tmp_path, port, **mail):
    settings = {"enabled": "true", "smtp_port": str(port), "poll_interval": "5", "retry_base": "10",
                "retry_cap": "15", "max_attempts": "3"}
    settings.update({k: str(v) for k, v in mail.items()})
    h = Harness(tmp_path / "state", {"mail": settings})
    h.call(h.admin, "common_set_email", "root@example.net")
    return h


def test_backoff_then_failed_after_max_attempts(tmp_path):
    """A relay that never answers: attempts at 0, +10 s, +25 s (capped at 15), then failed, with a trail event."""
    h = _mailing_harness(tmp_path, _free_port())
    lines = []
    observer = lambda e: lines.append(e) if e.get("log_namespace") == "apiserver.notices" else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        h.call(h.admin, "auth_change_password", "Changed-Password-1")
        eventually(lambda: _notice(h).attempts == 1)
        _tick(h, 5)
        assert _notice(h).attempts == 1          # 5 s after the failure: not due yet
        _tick(h, 5)
        assert _notice(h).attempts == 2          # 10 s: second attempt
        _tick(h, 10)
        assert _notice(h).attempts == 2          # next wait is min(15, 20) = 15 s
        _tick(h, 5)
        notice = _notice(h)
        assert (notice.attempts, notice.state) == (3, "failed")
        _tick(h, 3600)
        assert _notice(h).attempts == 3          # failed notices are not tried again, but stay listed
        assert len(lines) == 3 and all("log_failure" not in e for e in lines)
        [failed] = h.call(h.admin, "admin_get_security_events", {"kind": "notice_failed"})
        assert f"notice {notice.id} to root@example.net" in failed.detail
        assert h.call(h.admin, "admin_get_notices", "queued") == []
        assert [n.id for n in h.call(h.admin, "admin_get_notices", "failed")] == [notice.id]
    finally:
        globalLogPublisher.removeObserver(observer)
        h.close()


def test_relay_back_delivers_once(tmp_path):
    """Queued while the relay is down, the notice goes out once when it answers again, and only once."""
    port = _free_port()
    h = _mailing_harness(tmp_path, port, max_attempts=10)
    inbox = Inbox()
    controller = None
    try:
        h.call(h.admin, "auth_change_password", "Changed-Password-1")
        h.call(h.admin, "auth_change_password", "Changed-Password-2")
        eventually(lambda: sum(n.attempts for n in h.call(h.admin, "admin_get_notices")) >= 1)
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        for _ in range(6):
            _tick(h, 15)
        assert [n.state for n in h.call(h.admin, "admin_get_notices")] == ["sent", "sent"]
        ids = [email.message_from_string(text)["Message-ID"] for _to, text in inbox.messages]
        assert len(ids) == 2 and len(set(ids)) == 2
        assert all(n.sent is not None for n in h.call(h.admin, "admin_get_notices"))
    finally:
        if controller is not None:
            controller.stop()
        h.close()


def test_two_senders_on_one_database_send_each_notice_once(tmp_path, smtp):  # noqa: F811
    """Two nodes' senders racing over the same outbox deliver each of 30 notices exactly once."""
    inbox, port = smtp
    h = _mailing_harness(tmp_path, port)
    try:
        def queue_all():
            with h.app.storage.write() as conn:
                for n in range(30):
                    message = email.message.EmailMessage()
                    message["To"], message["Subject"] = f"user{n}@example.net", f"notice {n}"
                    message["Message-ID"] = f"<n{n}@test>"
                    message.set_content("hello")
                    queue_notice(conn, h.clock, "password", message)

        wait(h.app.run_blocking(queue_all))
        settings = h.app.notices.sender.settings()
        senders = [NoticeSender(Outbox(h.app.storage, h.clock, node=name), h.clock, h.app.run_blocking,
                                lambda: settings, poll_interval=5) for name in ("node-a", "node-b")]
        run_in_threads(lambda sender: sender.send_due(settings), [(s,) for s in senders], timeout=60)
        eventually(lambda: len(inbox.messages) >= 30)
        ids = sorted(email.message_from_string(text)["Message-ID"] for _to, text in inbox.messages)
        assert ids == sorted(f"<n{n}@test>" for n in range(30))
        assert {n.state for n in h.call(h.admin, "admin_get_notices")} == {"sent"}
    finally:
        h.close()


def test_a_claim_taken_over_mid_send_reports_nothing_failed(tmp_path):
    """A send whose expired claim another node took meanwhile counts no attempt and reports no failed notice."""
    h = _mailing_harness(tmp_path, _free_port(), max_attempts=1)
    notices = h.app.storage.tables.notices
    try:
        def queue():
            message = email.message.EmailMessage()
            message["To"], message["Subject"] = "root@example.net", "hello"
            message.set_content("hello")
            with h.app.storage.write() as conn:
                return queue_notice(conn, h.clock, "password", message)

        notice_id = wait(h.app.run_blocking(queue))

        def taken_over_then_refused(settings):  # the lease ran out while this node waited on the relay
            with h.app.storage.write() as conn:
                conn.execute(notices.update().where(notices.c.id == notice_id)
                             .values(claimed_by="node-b", claimed_until=h.clock.seconds() + 300))
            raise ConnectionRefusedError(111, "Connection refused")

        reported = []
        settings = h.app.notices.sender.settings()
        sender = NoticeSender(Outbox(h.app.storage, h.clock, node="node-a"), h.clock, h.app.run_blocking,
                              lambda: settings, poll_interval=5, on_failed=reported.append,
                              connect=taken_over_then_refused)
        wait(sender.poll())
        assert reported == []
        with h.app.storage.read() as conn:
            row = conn.execute(sa.select(notices).where(notices.c.id == notice_id)).one()
        assert (row.state, row.attempts, row.claimed_by) == ("queued", 0, "node-b")
    finally:
        h.close()


@pytest.mark.parametrize("state", ["nope", ""])
def test_get_notices_refuses_an_unknown_state(harness, state):
    """admin_get_notices takes queued, sent, failed or null."""
    from apiserver.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        harness.call(harness.admin, "admin_get_notices", state)


def test_a_refused_recipient_does_not_stop_the_batch(tmp_path):
    """A 550 for one recipient counts an attempt for that notice only; the next one is still sent."""

    class Picky(Inbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("nobody@"):
                return "550 no such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    picky = Picky()
    controller = Controller(picky, hostname="127.0.0.1", port=_free_port())
    controller.start()
    h = _mailing_harness(tmp_path, controller.port)
    try:
        def queue(to):
            message = email.message.EmailMessage()
            message["To"], message["Subject"] = to, f"to {to}"
            message.set_content("hello")
            with h.app.storage.write() as conn:
                queue_notice(conn, h.clock, "password", message)

        for to in ("nobody@example.net", "somebody@example.net"):
            wait(h.app.run_blocking(queue, to))
        wait(h.app.notices.sender.poll())
        states = {n.to: (n.state, n.attempts) for n in h.call(h.admin, "admin_get_notices")}
        assert states == {"nobody@example.net": ("queued", 1), "somebody@example.net": ("sent", 1)}
        assert [to for to, _text in picky.messages] == [["somebody@example.net"]]
    finally:
        h.close()
        controller.stop()


def test_pending_count_is_kept_while_mail_is_disabled(tmp_path):
    """Notices left queued are counted (the /metrics outbox depth) even when [mail] enabled is false."""
    h = _mailing_harness(tmp_path, _free_port())
    try:
        h.call(h.admin, "auth_change_password", "Changed-Password-1")
        eventually(lambda: h.app.notices.sender.last_pending == 1)
    finally:
        h.close()
    h = Harness(tmp_path / "state", {"mail": {"enabled": "false", "poll_interval": "5"}})
    try:
        _tick(h, 5)
        assert h.app.notices.sender.last_pending == 1
    finally:
        h.close()


def test_notice_failed_while_stopping_reaches_the_trail(tmp_path):
    """A batch still sending at SIGTERM reports its failed notice to the trail, which then writes it."""
    h = _mailing_harness(tmp_path, _free_port(), max_attempts="1")
    connecting, release = threading.Event(), threading.Event()

    def slow_refusal(settings):
        connecting.set()
        release.wait(10)
        raise ConnectionRefusedError(111, "Connection refused")

    h.app.notices.sender.connect = slow_refusal
    h.call(h.admin, "auth_change_password", "Changed-Password-2")
    eventually(connecting.is_set)  # the batch is on the relay

    async def stop_like_the_server():  # ApiServer._stop: the background services in reverse order
        for each in reversed(h.app.background_services()):
            stopped = defer.maybeDeferred(each.stopService)
            if each is h.app.notices.sender:
                release.set()  # the relay answers only once the sender is stopping
            await stopped

    wait(defer.ensureDeferred(stop_like_the_server()))
    h.services = []
    table = h.app.storage.tables.security_events
    with h.app.storage.read() as conn:
        kinds = list(conn.execute(sa.select(table.c.kind)).scalars())
    h.close()
    assert "notice_failed" in kinds


def test_get_notices_without_a_limit_lists_the_newest_1000(harness):
    """The outbox keeps every notice, so a null limit lists the newest 1000 (as the trail does), not the table."""
    message = email.message.EmailMessage()
    message["To"], message["Subject"] = "root@example.net", "hello"
    message.set_content("hello")

    def fill():
        with harness.app.storage.write() as conn:
            return [queue_notice(conn, harness.clock, "password", message) for _ in range(1003)]

    ids = wait(harness.app.run_blocking(fill))
    listed = harness.call(harness.admin, "admin_get_notices")
    assert [n.id for n in listed] == sorted(ids, reverse=True)[:1000]
    assert len(harness.call(harness.admin, "admin_get_notices", None, 1003)) == 1003


def test_a_long_database_outage_is_logged_once(tmp_path, monkeypatch):
    """Polls that cannot read the outbox log one line for the outage, and one when it answers again."""
    h = _mailing_harness(tmp_path, _free_port())
    sender = h.app.notices.sender
    lines = []
    observer = lambda e: lines.append(e["log_format"]) if e.get("log_namespace") == "apiserver.notices" else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        def down(limit=50):
            raise sa.exc.OperationalError("SELECT", {}, Exception("could not connect to server"))

        monkeypatch.setattr(sender.outbox, "due", down)
        for _ in range(5):
            _tick(h, 5)
        monkeypatch.undo()
        _tick(h, 5)
        _tick(h, 5)
    finally:
        globalLogPublisher.removeObserver(observer)
        h.close()
    assert sum("looking at the queue failed" in line for line in lines) == 1, lines
    assert sum("answers again" in line for line in lines) == 1, lines


def test_notice_times_carry_their_zone(tmp_path):
    """admin_get_notices gives each notice's created time as UTC with its zone, never a naive time."""
    import datetime

    h = _mailing_harness(tmp_path, _free_port(), max_attempts="1")
    try:
        h.call(h.admin, "auth_change_password", "Changed-Password-1")
        notice = _notice(h)
        assert notice.created.utcoffset() == datetime.timedelta(0)
        assert notice.sent is None or notice.sent.utcoffset() == datetime.timedelta(0)
    finally:
        h.close()
