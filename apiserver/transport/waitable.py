"""A set that says when it becomes empty: requests or calls in flight, open connections."""

from __future__ import annotations

from twisted.internet import defer


class WaitableSet(set):
    """A set whose :meth:`emptied` Deferred fires once :meth:`discard` leaves it empty."""

    def __init__(self):
        super().__init__()
        self._waiters: list = []

    def discard(self, item) -> None:
        super().discard(item)
        if not self:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                if not d.called:  # a waiter that timed out was cancelled
                    d.callback(None)

    def emptied(self) -> defer.Deferred:
        """Fires once the set is empty (at once when it is)."""
        if not self:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d
