"""Notices: password and unrecognized-device notices through the durable outbox.

:mod:`apiserver.notices.outbox` holds the table's code and the sending service,
:mod:`apiserver.notices.passwords` whom a password change notifies and what it says,
:mod:`apiserver.notices.devices` the device check; :class:`Notices` ties them together.
"""

from __future__ import annotations

from typing import Callable, Optional

from apiserver.context import Identity
from apiserver.notices.devices import Devices
from apiserver.notices.outbox import FailedNotice, MailSettings, NoticeSender, Outbox
from apiserver.notices.passwords import queue_password_notice

__all__ = ["Notices"]


class Notices:
    """The outbox, its sender (a Twisted service the server starts) and the device check.

    ``storage``, ``clock``, ``run_blocking`` and ``settings`` (the config, ``[mail]``) as their
    parts take them; ``geolocator`` places the client address a notice names;
    ``record_event(kind, detail=...)`` records a notice that failed for good in the security trail.
    """

    def __init__(self, storage, clock, run_blocking: Callable, settings, geolocator, record_event: Callable):
        self._settings = settings
        self._clock = clock
        self._geolocator = geolocator
        self._record_event = record_event
        self.outbox = Outbox(storage, clock)
        self.sender = NoticeSender(self.outbox, clock, run_blocking, self._mail_settings,
                                   poll_interval=settings.get("mail", "poll_interval"), on_failed=self._failed)
        self.devices = Devices(storage, clock, run_blocking, settings, geolocator, queued=self.queued)

    def enabled(self) -> bool:
        """``[mail] enabled`` right now: false queues (and sends) nothing."""
        return self._settings.get("mail", "enabled")

    def _mail_settings(self) -> Optional[MailSettings]:
        return MailSettings.from_config(self._settings) if self.enabled() else None

    async def password_notice(self, target: Identity, actor: Identity, reset: bool,
                              address: Optional[str]) -> Optional[Callable]:
        """What queues the notice of a password change, to run in the transaction that stores the
        password (``fn(conn)``); None when mail is disabled.  Places ``address`` first, off the reactor."""
        if not self.enabled():
            return None
        location = await self._geolocator.locate(address)
        return lambda conn: queue_password_notice(self._settings, self._clock, conn, target, actor, reset,
                                                  address, location)

    def queued(self) -> None:
        """A notice was committed on this node (reactor thread): send it without waiting for the poll."""
        self.sender.wake()

    def forget_users(self, user_ids) -> None:
        """Accounts were deleted: their devices are no longer known."""
        self.devices.forget_users(user_ids)

    def _failed(self, notice: FailedNotice) -> None:
        self._record_event("notice_failed", detail=f"notice {notice.id} to {notice.recipient}: {notice.error}")
