"""Notices (``app.notices``): password and unrecognized-device notices through the durable outbox.

:mod:`apiserver.notices.outbox` holds the table's code and the sending service,
:mod:`apiserver.notices.devices` the device check; this facade ties them to the application.
"""

from __future__ import annotations

from typing import Callable, Optional

from apiserver.context import Identity
from apiserver.notices.devices import Devices
from apiserver.notices.outbox import FailedNotice, MailSettings, NoticeSender, Outbox

__all__ = ["Notices"]


class Notices:
    """The outbox, its sender (a Twisted service the server starts) and the device check."""

    def __init__(self, app):
        self.app = app
        self.outbox = Outbox(app.storage, app.clock)
        self.sender = NoticeSender(self.outbox, app.clock, app.run_blocking, self._settings,
                                   poll_interval=app.config.get("mail", "poll_interval"), on_failed=self._failed)
        self.devices = Devices(app, queued=self.queued)

    def enabled(self) -> bool:
        """``[mail] enabled`` right now: false queues (and sends) nothing."""
        return self.app.config.get("mail", "enabled")

    def _settings(self) -> Optional[MailSettings]:
        return MailSettings.from_config(self.app.config) if self.enabled() else None

    async def password_notice(self, target: Identity, actor: Identity, reset: bool,
                              address: Optional[str]) -> Optional[Callable]:
        """What queues the notice of a password change, to run in the transaction that stores the
        password (``fn(conn)``); None when mail is disabled.  Places ``address`` first, off the reactor."""
        if not self.enabled():
            return None
        from apiserver.notices.passwords import queue_password_notice

        location = await self.app.geolocator.locate(address)
        return lambda conn: queue_password_notice(self.app, conn, target, actor, reset, address, location)

    def queued(self) -> None:
        """A notice was committed on this node (reactor thread): send it without waiting for the poll."""
        self.sender.wake()

    def _failed(self, notice: FailedNotice) -> None:
        events = getattr(self.app, "security_events", None)
        if events is not None:
            events.record("notice_failed", detail=f"notice {notice.id} to {notice.recipient}: {notice.error}")
