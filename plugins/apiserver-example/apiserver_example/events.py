"""What the plugin's event hook remembers, kept per application (tests build several)."""

from __future__ import annotations

import weakref
from typing import Optional

_COUNTERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class KeyCounter:
    """Counts ``apiserver_api_key_created`` events; read and written on the reactor thread."""

    def __init__(self):
        self.created = 0
        self.last_owner: Optional[str] = None

    def record(self, owner) -> None:
        """Count one key created for the identity ``owner``."""
        self.created += 1
        self.last_owner = owner.describe()


def key_counter(app) -> KeyCounter:
    """The counter of ``app``, made on first use and dropped with the application."""
    counter = _COUNTERS.get(app)
    if counter is None:
        counter = _COUNTERS[app] = KeyCounter()
    return counter
