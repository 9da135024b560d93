"""The trail's batch insert, pruning and filters, and the outbox's claims, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import email.message

from twisted.internet import defer, task

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.context import Identity
from apiserver.events import SecurityEvents
from apiserver.module import Role
from apiserver.notices.outbox import Outbox, queue_notice
from tests.storage.support import storage  # noqa: F401 - the fixture


def _clock(seconds: float = 1_800_000_000.0) -> task.Clock:
    clock = task.Clock()
    clock.advance(seconds)
    return clock


def test_events_round_trip_newest_first_with_filters(storage):
    """A batch of events is written through the driver and read back with times to the microsecond."""
    clock = _clock(1_800_000_000.123456)
    config = Config(BUILTIN_SECTIONS, {"audit": {"keep_days": "1"}}, None)
    events = SecurityEvents(storage, clock, lambda fn, *a: defer.maybeDeferred(fn, *a), config)
    site = Identity(Role.SITE, 7, "exadmin", site_id=1, site="example.com")
    events.record("login_failed", address="192.0.2.1", gate="SOAP", detail="method key")
    clock.advance(1)
    events.record("hijack_started", identity=site, address="127.0.0.1", detail="by appliance admin")
    listed = events.list()
    assert [e.kind for e in listed] == ["hijack_started", "login_failed"]
    assert (listed[0].account, listed[0].site, listed[1].time.microsecond) == ("exadmin", "example.com", 123456)
    assert [e.kind for e in events.list(filters={"site": "Example.COM."})] == ["hijack_started"]
    assert [e.kind for e in events.list(filters={"address": "192.0.2.1", "kind": "login_failed"})] == ["login_failed"]
    assert [e.kind for e in events.list(identity=site)] == ["hijack_started"]
    clock.advance(86400)
    assert events.prune() == 1
    assert [e.kind for e in events.list()] == ["hijack_started"]


def test_only_one_outbox_wins_a_claim(storage):
    """Two nodes claiming the same notice: exactly one gets it, the other sees it taken."""
    clock = _clock()
    message = email.message.EmailMessage()
    message["To"], message["Subject"] = "root@example.net", "hello"
    message.set_content("text")
    with storage.write() as conn:
        notice_id = queue_notice(conn, clock, "password", message)
    first, second = Outbox(storage, clock, node="a"), Outbox(storage, clock, node="b")
    assert first.claim(notice_id) is not None
    assert second.claim(notice_id) is None
    first.mark_sent(notice_id)
    [info] = second.list()
    assert (info.state, info.attempts, info.to) == ("sent", 1, "root@example.net")
