"""The durable outbox of notices, and the service that mails them.

A notice is a row of ``notices`` inserted by :func:`queue_notice` in the transaction of the
change that causes it, so a change is never stored without its notice nor a notice without its
change.  :class:`NoticeSender` (a Twisted ``Service``) looks at the outbox every ``[mail]
poll_interval`` seconds of the injected clock, and at once when this node queued one; it sends
on the blocking pool, one SMTP connection per batch.  Several nodes on one database each claim
a notice before sending it, with a conditional UPDATE whose row count says who won (portable to
SQLite, PostgreSQL and MariaDB), so each notice is sent by one node.  A failed attempt is retried
after ``min(retry_cap, retry_base * 2 ** (attempts - 1))`` seconds; after ``max_attempts`` the
notice is ``failed`` and stays listed.  Each failed attempt logs one line (relay, error, notices
pending), never a traceback; a node whose claim expired mid-send and was taken by another node
counts nothing and reports nothing failed (the other node has the notice now).
"""

from __future__ import annotations

import dataclasses
import datetime
import email
import email.message
import email.policy
import email.utils
import smtplib
import socket
import ssl
import uuid
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.storage import schema, utcnow
from apiserver.logs import one_line_error as _one_line
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.notices")

QUEUED, SENT, FAILED = "queued", "sent", "failed"
STATES = (QUEUED, SENT, FAILED)

#: Seconds a node's claim on a notice lasts; a node that died mid-send loses it after this.
CLAIM_LEASE = 300.0
#: Notices sent over one SMTP connection per look at the outbox.
BATCH = 50
SMTP_TIMEOUT = 30
#: Notices listed when no limit is given (the outbox keeps every notice).
DEFAULT_LIMIT = 1000

_notices = schema.notices


def queue_notice(conn: sa.Connection, clock, kind: str, message: email.message.EmailMessage) -> int:
    """Insert ``message`` as a queued notice in ``conn``'s transaction; returns its id.

    The caller checks ``[mail] enabled`` first (disabled mail queues nothing).
    """
    now = utcnow(clock)
    return conn.execute(_notices.insert().values(
        kind=kind, recipient=str(message["To"])[:254], subject=str(message["Subject"])[:255],
        message=message.as_string(policy=email.policy.SMTP), state=QUEUED, attempts=0, created_at=now,
        next_attempt=clock.seconds())).inserted_primary_key[0]


def notice_message(sender: str, recipient: str, subject: str, when: datetime.datetime,
                   text: str) -> email.message.EmailMessage:
    """A notice's mail: ``From`` ``sender``, ``To`` ``recipient``, dated ``when`` (aware, UTC)."""
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.format_datetime(when)
    message["Message-ID"] = email.utils.make_msgid(domain="apiserver")
    message["Subject"] = subject
    message.set_content(text)
    return message


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``min(cap, base * 2 ** (attempts - 1))``."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


@dataclasses.dataclass
class NoticeInfo:
    """One notice of the outbox as ``admin_get_notices`` lists it (``state``: queued, sent, failed)."""

    id: int
    to: str
    subject: str
    state: str
    attempts: int
    created: datetime.datetime  # UTC, with its zone
    sent: Optional[datetime.datetime]


@dataclasses.dataclass(frozen=True)
class MailSettings:
    """What sending needs of ``[mail]``, read afresh for each batch."""

    host: str
    port: int
    starttls: bool
    username: str
    password: str = dataclasses.field(repr=False)
    max_attempts: int = 10
    retry_base: float = 30.0
    retry_cap: float = 3600.0

    @classmethod
    def from_config(cls, config) -> "MailSettings":
        get = config.get
        return cls(get("mail", "smtp_host"), get("mail", "smtp_port"), get("mail", "starttls"),
                   get("mail", "username"), get("mail", "password"), get("mail", "max_attempts"),
                   get("mail", "retry_base"), get("mail", "retry_cap"))

    @property
    def relay(self) -> str:
        return f"{self.host}:{self.port}"


def smtp_connect(settings: MailSettings) -> smtplib.SMTP:
    """Blocking: a connection to the relay, after STARTTLS and login when configured."""
    smtp = smtplib.SMTP(settings.host, settings.port, timeout=SMTP_TIMEOUT)
    try:
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.username:
            smtp.login(settings.username, settings.password)
    except BaseException:
        smtp.close()
        raise
    return smtp


class Outbox:
    """The ``notices`` table: claiming, marking and listing.  Every method blocks."""

    def __init__(self, storage, clock, node: Optional[str] = None):
        self.storage = storage
        self.clock = clock
        self.node = node or f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:12]}"

    def due(self, limit: int = BATCH) -> list[int]:
        """Ids of queued notices whose next attempt is due and that no live claim holds."""
        now = self.clock.seconds()
        free = sa.or_(_notices.c.claimed_until.is_(None), _notices.c.claimed_until < now)
        with self.storage.read() as conn:
            return list(conn.execute(sa.select(_notices.c.id).where(
                _notices.c.state == QUEUED, _notices.c.next_attempt <= now, free)
                .order_by(_notices.c.next_attempt, _notices.c.id).limit(limit)).scalars())

    def claim(self, notice_id: int) -> Optional[tuple]:
        """``(recipient, message, attempts)`` when this node won the notice, else None."""
        now = self.clock.seconds()
        with self.storage.write() as conn:
            won = conn.execute(_notices.update().where(
                _notices.c.id == notice_id, _notices.c.state == QUEUED, _notices.c.next_attempt <= now,
                sa.or_(_notices.c.claimed_until.is_(None), _notices.c.claimed_until < now))
                .values(claimed_by=self.node, claimed_until=now + CLAIM_LEASE)).rowcount
            if won != 1:
                return None
            row = conn.execute(sa.select(_notices.c.recipient, _notices.c.message, _notices.c.attempts)
                               .where(_notices.c.id == notice_id)).first()
        return (row.recipient, row.message, row.attempts)

    def mark_sent(self, notice_id: int) -> None:
        with self.storage.write() as conn:
            conn.execute(_notices.update().where(_notices.c.id == notice_id, _notices.c.claimed_by == self.node)
                         .values(state=SENT, attempts=_notices.c.attempts + 1, sent_at=utcnow(self.clock),
                                 claimed_by=None, claimed_until=None, last_error=None))

    def mark_failed_attempt(self, notice_id: int, attempts: int, error: str, settings: MailSettings) -> Optional[str]:
        """Count a failed attempt of the notice claimed with ``attempts``: retry later, or ``failed`` after
        ``max_attempts``.  The notice's new state (queued or failed), or None when this node no longer
        holds the claim (it expired and another node claimed the notice): then nothing is changed."""
        attempts += 1
        failed = attempts >= settings.max_attempts
        with self.storage.write() as conn:
            changed = conn.execute(_notices.update().where(_notices.c.id == notice_id,
                                                           _notices.c.claimed_by == self.node)
                                   .values(attempts=attempts, state=FAILED if failed else QUEUED,
                                           last_error=error[:255],
                                           next_attempt=self.clock.seconds() + retry_delay(
                                               attempts, settings.retry_base, settings.retry_cap),
                                           claimed_by=None, claimed_until=None)).rowcount
        if changed != 1:
            return None
        return FAILED if failed else QUEUED

    def pending(self) -> int:
        """How many notices are queued."""
        with self.storage.read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(_notices)
                                .where(_notices.c.state == QUEUED)).scalar()

    def list(self, state: Optional[str] = None, limit: Optional[int] = None) -> list[NoticeInfo]:
        """Notices, newest first; only those in ``state`` when given; at most ``limit`` (default 1000)."""
        query = sa.select(_notices).order_by(_notices.c.id.desc()).limit(limit or DEFAULT_LIMIT)
        if state is not None:
            query = query.where(_notices.c.state == state)
        with self.storage.read() as conn:
            rows = conn.execute(query).all()
        return [NoticeInfo(id=r.id, to=r.recipient, subject=r.subject, state=r.state, attempts=r.attempts,
                           created=_utc(r.created_at), sent=_utc(r.sent_at)) for r in rows]


def _utc(value: Optional[datetime.datetime]) -> Optional[datetime.datetime]:
    """A stored time (UTC; SQLite gives it back without a zone) with its zone, so clients see ``Z``."""
    return value.replace(tzinfo=datetime.timezone.utc) if value is not None and value.tzinfo is None else value


@dataclasses.dataclass
class FailedNotice:
    """A notice that reached ``max_attempts`` (for the security trail)."""

    id: int
    recipient: str
    error: str


class NoticeSender(service.Service):
    """Sends the outbox: see the module docstring.

    ``run_blocking(fn, *args)`` runs ``fn`` off the reactor thread and returns a Deferred;
    ``settings()`` gives the current :class:`MailSettings` or None while mail is disabled;
    ``on_failed(FailedNotice)`` is called on the reactor thread for each notice that failed for good.
    """

    name = "notice-sender"

    def __init__(self, outbox: Outbox, clock, run_blocking: Callable, settings: Callable[[], Optional[MailSettings]],
                 poll_interval: float, on_failed: Callable[[FailedNotice], None] = lambda notice: None,
                 connect: Callable[[MailSettings], smtplib.SMTP] = smtp_connect):
        self.outbox = outbox
        self.clock = clock
        self.run_blocking = run_blocking
        self.settings = settings
        self.poll_interval = poll_interval
        self.on_failed = on_failed
        self.connect = connect
        #: Looks at the outbox every ``poll_interval`` and on :meth:`wake`, one at a time.
        self.timer = WorkTimer(clock, poll_interval, self.look, run_blocking, name="outbox",
                               on_result=self._report, on_failure=self._look_failed)
        self._stopping = False
        self._unreachable = False  # the last look at the outbox failed (logged once per outage)
        #: Notices queued as of the last look at the outbox (the /metrics gauge; None: not looked yet).
        self.last_pending: Optional[int] = None

    def startService(self):
        super().startService()
        self._stopping = False
        self.timer.start(now=True)

    def stopService(self):
        super().stopService()
        self._stopping = True
        return self.timer.stop()

    def idle(self) -> defer.Deferred:
        """Fires when no look at the outbox is running or due (at once if none is)."""
        return self.timer.idle()

    def wake(self) -> None:
        """A notice was queued here: send it now rather than at the next poll (reactor thread)."""
        if self.running:
            self.timer.run_now()

    def poll(self) -> defer.Deferred:
        """Send what is due, on the blocking pool; a poll while one runs makes it look again after.
        Fires when that look has finished."""
        return self.timer.run_now()

    def look(self) -> list:
        """Blocking: send the due notices, or only count them while mail is off; those failed for good."""
        settings = self.settings()
        if settings is None:  # mail is off: nothing is sent, but what waits is still counted
            return self.count_pending()
        return self.send_due(settings)

    def _look_failed(self, failure) -> None:
        if not self._unreachable:  # a database down for hours logs one line, not one a poll
            self._unreachable = True
            log.error("outbox: looking at the queue failed (logged once until the queue answers): {error}",
                      error=_one_line(failure.value))

    def _report(self, failed: list) -> None:
        if self._unreachable:
            self._unreachable = False
            log.info("outbox: the queue answers again")
        for notice in failed:
            try:
                self.on_failed(notice)
            except Exception as exc:  # the trail's trouble is not the sender's
                log.error("outbox: reporting failed notice {id} raised {error}", id=notice.id, error=_one_line(exc))

    def count_pending(self) -> list:
        """Blocking: update :attr:`last_pending` only (no notice failed: an empty list)."""
        self.last_pending = self.outbox.pending()
        return []

    def send_due(self, settings: MailSettings) -> list[FailedNotice]:
        """Blocking: claim and send the due notices over one connection; returns those failed for good."""
        try:
            return self._send_due(settings)
        finally:
            self.last_pending = self.outbox.pending()

    def _send_due(self, settings: MailSettings) -> list[FailedNotice]:
        failed: list[FailedNotice] = []
        ids = self.outbox.due()
        if not ids:
            return failed
        smtp = None
        pending: Optional[int] = None  # queued notices, counted at the batch's first failure
        try:
            for notice_id in ids:
                if self._stopping:  # the rest waits for the next start (or another node)
                    break
                claimed = self.outbox.claim(notice_id)
                if claimed is None:
                    continue  # another node has it
                recipient, text, attempts = claimed
                try:
                    if smtp is None:
                        smtp = self.connect(settings)
                    smtp.send_message(email.message_from_string(text, policy=email.policy.SMTP),
                                      to_addrs=[recipient])
                except Exception as exc:
                    # smtplib's errors are OSErrors too: only a lost or refused connection stops the batch.
                    relay_down = smtp is None or isinstance(exc, smtplib.SMTPServerDisconnected) or (
                        isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException))
                    error = _one_line(exc)
                    state = self.outbox.mark_failed_attempt(notice_id, attempts, error, settings)
                    if state is None:
                        log.info("outbox: notice {id} to {recipient} not sent via {relay}: {error}; "
                                 "its claim expired and another node holds it now",
                                 id=notice_id, recipient=recipient, relay=settings.relay, error=error)
                    else:
                        if state == FAILED:
                            failed.append(FailedNotice(notice_id, recipient, error))
                        # One COUNT a batch, at its first failure; then this batch's sent and failed come off.
                        if pending is None:
                            pending = self.outbox.pending()
                        elif state == FAILED:
                            pending -= 1
                        log.warn("outbox: notice {id} to {recipient} not sent via {relay}: {error}; "
                                 "{pending} notices pending",
                                 id=notice_id, recipient=recipient, relay=settings.relay, error=error,
                                 pending=pending)
                    if relay_down:
                        # The relay is unreachable: the rest waits for the next poll, uncounted.
                        _close(smtp)
                        smtp = None
                        break
                    continue
                self.outbox.mark_sent(notice_id)
                if pending is not None:
                    pending -= 1
        finally:
            _close(smtp)
        return failed


def _close(smtp: Optional[smtplib.SMTP]) -> None:
    if smtp is None:
        return
    try:
        smtp.quit()
    except Exception:
        smtp.close()
