"""What the plugin keeps while the server runs, one object per application (tests build several)."""

from __future__ import annotations

import weakref
from typing import Optional

#: ``example_echo`` repeats at most this many times unless the scope ``example.max-times`` says otherwise.
DEFAULT_MAX_TIMES = 100

_STATES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class ExampleState:
    """Counters of the event hook and the scope's value; kept in memory, so a restart resets them."""

    def __init__(self):
        self.keys_created = 0
        self.last_key_owner: Optional[str] = None
        self.max_times = DEFAULT_MAX_TIMES

    def key_created(self, owner) -> None:
        """Count one key created for the identity ``owner``."""
        self.keys_created += 1
        self.last_key_owner = owner.describe()


def state_of(app) -> ExampleState:
    """The state of ``app``, made on first use and dropped with the application."""
    state = _STATES.get(app)
    if state is None:
        state = _STATES[app] = ExampleState()
    return state
