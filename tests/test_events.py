"""The security event trail: batched writes on the clock, pruning, filters, every action, no secrets."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.errors import AuthenticationFailed, InvalidArgument, Throttled
from apiserver.events import FLUSH_INTERVAL, PRUNE_INTERVAL
from tests.accounts.support import Harness, harness, wait  # noqa: F401 - the fixture


def _stored(h) -> list:
    """Every row of security_events as a tuple, read straight from the database."""
    table = h.app.storage.tables.security_events
    with h.app.storage.read() as conn:
        return [tuple(row) for row in conn.execute(sa.select(table).order_by(table.c.id)).all()]


@pytest.fixture
def trail(tmp_path):
    """A harness whose Anvil blocks 192.0.2.66 after two failures for 60 s, without delays."""
    h = Harness(tmp_path / "state", {"anvil": {"limit": "2", "min_attempts": "5", "ttl": "60", "whitelist": ""},
                                     "audit": {"keep_days": "2"}})
    yield h
    h.close()


def test_events_are_written_in_batches_by_the_timer(trail):
    """record only queues; the flush timer of the clock writes the batch on the pool."""
    events = trail.app.security_events
    wait(events.flush())                      # the harness's own login
    before = len(_stored(trail))
    events.record("login_failed", address="192.0.2.1", gate=Gate.SOAP, detail="method key")
    events.record("login_failed", address="192.0.2.2", gate=Gate.SOAP, detail="method key")
    assert len(_stored(trail)) == before      # nothing written on the reactor thread
    trail.advance(FLUSH_INTERVAL)
    assert len(_stored(trail)) == before + 2


def test_old_events_are_pruned_after_keep_days(trail):
    """An event older than [audit] keep_days goes at the next hourly pruning; a recent one stays."""
    events = trail.app.security_events
    events.record("login_failed", address="192.0.2.1", detail="old")
    wait(events.flush())
    trail.advance(2 * 86400 - 60)             # hourly prunings meanwhile; "old" is not 2 days old yet
    events.record("login_failed", address="192.0.2.2", detail="recent")
    wait(events.flush())
    assert {e.detail for e in trail.call(trail.admin, "admin_get_security_events")} >= {"old", "recent"}
    trail.advance(PRUNE_INTERVAL)             # the next pruning ("old" is past keep_days=2), waited for
    assert "old" not in {row[-1] for row in _stored(trail)}
    assert "recent" in {row[-1] for row in _stored(trail)}


def test_disabled_trail_records_nothing(tmp_path):
    """[audit] enabled = false: actions leave no events."""
    h = Harness(tmp_path / "state", {"audit": {"enabled": "false"}})
    try:
        h.call(h.admin, "auth_create_api_key", "ci")
        h.call(h.admin, "auth_change_password", "Another-Password-1")
        assert h.call(h.admin, "admin_get_security_events") == [] and _stored(h) == []
    finally:
        h.close()


def _admit(h, credentials, address="192.0.2.66", gate=Gate.SOAP):
    return wait(h.app.admit(AuthRequest(gate=gate, address=address, credentials=credentials, user_agent="t/1")))


def test_every_action_is_listed_and_no_secret_is_stored(trail):
    """Each action of the issue leaves its event (newest first, filterable); no password, key or session id."""
    h = trail
    password, key_comment = "Very-Secret-Password-1", "deploy"
    site = h.add_site(password="Site-Secret-Password-2")
    h.call(h.admin, "auth_change_password", password)
    reset = h.call(h.admin, "auth_reset_password", None, "example.com")
    new_key = h.call(site, "auth_create_api_key", key_comment)
    ctx = _admit(h, Credentials(api_key=new_key), address="198.51.100.9")       # a (non-cached) key login
    assert ctx.identity.user_id == site.user_id
    h.call(site, "auth_delete_api_key", new_key)
    h.call(site, "auth_restrict_ip", "192.0.2.0/24", "UI")
    h.call(site, "auth_remove_ip_restriction", "192.0.2.0/24", "UI")
    sid = h.call(h.admin, "admin_hijack", "example.com")
    h.call(h.admin, "scope_set", "cp.bootstrapper", "has_low_memory", True)
    wrong = "Wrong-Secret-Password-3"
    for _ in range(2):
        with pytest.raises((AuthenticationFailed, Throttled)):
            _admit(h, Credentials(username="siteadmin", site="example.com", password=wrong))
    h.clock.advance(61)                                                         # the block ends
    events = h.call(h.admin, "admin_get_security_events")
    kinds = {e.kind for e in events}
    assert kinds >= {"password_changed", "password_reset", "api_key_created", "api_key_deleted",
                     "login_succeeded", "login_failed", "login_blocked", "login_unblocked",
                     "ip_restriction_added", "ip_restriction_removed", "hijack_started", "scope_changed"}
    assert [e.time for e in events] == sorted((e.time for e in events), reverse=True)
    [login] = [e for e in events if e.kind == "login_succeeded" and e.address == "198.51.100.9"]
    assert (login.account, login.site, login.address, login.gate, login.detail) == (
        "siteadmin", "example.com", "198.51.100.9", "SOAP", "method key")
    [hijack] = h.call(h.admin, "admin_get_security_events", {"kind": "hijack_started"})
    assert (hijack.account, hijack.site, hijack.detail) == ("siteadmin", "example.com", "by appliance admin")
    blocked = h.call(h.admin, "admin_get_security_events", {"address": "192.0.2.66"})
    assert {e.kind for e in blocked} == {"login_failed", "login_blocked", "login_unblocked"}
    own = h.call(site, "auth_get_security_events")
    assert own and {(e.account, e.site) for e in own} == {("siteadmin", "example.com")}
    assert len(h.call(site, "auth_get_security_events", 2)) == 2
    stored = repr(_stored(h))
    for secret in (password, reset, new_key, sid, wrong, "Site-Secret-Password-2", h.init.admin_key):
        assert secret not in stored


@pytest.mark.parametrize("bad", [{"colour": "red"}, {"kind": "nap"}])
def test_bad_filters_are_refused(harness, bad):
    """Unknown filter keys and kinds are Client.InvalidArgument naming them."""
    with pytest.raises(InvalidArgument) as info:
        harness.call(harness.admin, "admin_get_security_events", bad)
    assert list(bad.values())[0] in str(info.value) or list(bad)[0] in str(info.value)


def test_database_outage_keeps_a_bounded_queue_counts_drops_and_logs_once(trail, monkeypatch):
    """While writes fail the queue stays within QUEUE_LIMIT, every event it cannot hold is counted,
    the outage is logged once, and the count of dropped events once it is over."""
    import sqlalchemy.exc
    from twisted.logger import globalLogPublisher

    import apiserver.events as events_module

    events = trail.app.security_events
    wait(events.flush())
    monkeypatch.setattr(events_module, "QUEUE_LIMIT", 5)
    real_write = trail.app.storage.write

    def down():
        for n in range(5):  # calls keep arriving while the failing write runs
            events.record("login_failed", address=f"192.0.2.{n}", detail="during")
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    lines = []
    observer = lambda e: lines.append(e) if e.get("log_namespace") == "apiserver.events" else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        monkeypatch.setattr(trail.app.storage, "write", down)
        for n in range(3):
            events.record("login_failed", address="198.51.100.1", detail=f"before {n}")
        for _ in range(4):                                # four flushes fail
            wait(events.flush())
        assert len(events._pending) <= 5
        monkeypatch.setattr(trail.app.storage, "write", real_write)
        wait(events.flush())
    finally:
        globalLogPublisher.removeObserver(observer)
    stored = [row[-1] for row in _stored(trail)]
    kept = [d for d in stored if d in ("before 0", "before 1", "before 2", "during")]
    assert len(kept) == 5                                 # the bound, oldest first
    assert events.dropped_total == 3 + 4 * 5 - 5          # everything else was counted
    texts = [e["log_format"] for e in lines]
    assert sum("could not be written" in t for t in texts) == 1, texts
    assert sum("were dropped" in t for t in texts) == 1, texts


def test_metrics_show_the_queued_and_dropped_events(trail, monkeypatch):
    """/metrics exposes the trail's queue and its count of dropped events, so an outage is visible."""
    from prometheus_client.parser import text_string_to_metric_families

    import apiserver.events as events_module

    events = trail.app.security_events
    wait(events.flush())
    monkeypatch.setattr(events_module, "QUEUE_LIMIT", 2)
    for n in range(5):
        events.record("login_failed", address=f"192.0.2.{n}")
    samples = {s.name: s.value for f in text_string_to_metric_families(trail.app.metrics.render().decode())
               for s in f.samples}
    assert samples["apiserver_security_events_queued"] == 2
    assert samples["apiserver_security_events_dropped_total"] == 3
