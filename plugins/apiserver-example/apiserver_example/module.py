"""The ``example`` module: written exactly like apiserver's built-in modules, on the plugin API."""

from __future__ import annotations

import dataclasses
from typing import Optional

from apiserver.errors import InvalidArgument
from apiserver.module import Module, Role, export

from apiserver_example.scopes import MaxTimes

#: The plugin's name: its state namespace and logger.
PLUGIN = "example"


@dataclasses.dataclass
class KeyStats:
    """API keys created, as the plugin's event hook counted them (kept in the plugin's state)."""

    created: int
    last_owner: Optional[str]


def count_key(state, owner: str) -> None:
    """Blocking.  Count one created key for ``owner`` (``Identity.describe()``)."""
    state.set("keys", {"created": state.get("keys", {}).get("created", 0) + 1, "last_owner": owner})


class Example(Module):
    """Shows every kind of argument and answer a plugin's functions can have."""

    name = "example"

    @export(roles=Role.ALL)
    def echo(self, ctx, text: str, times: Optional[int] = 1) -> list[str]:
        """Return TEXT repeated TIMES times (0 to the scope example.max-times, 100 by default) as a list."""
        if times is None:
            times = 1
        limit = MaxTimes(ctx.api).current()  # a database read: echo runs on the blocking pool
        if not 0 <= times <= limit:
            raise InvalidArgument(f"times must be between 0 and {limit}, got {times}")
        return [text] * times

    @export(roles=Role.ALL, blocking=False)
    def add(self, ctx, a: int, b: int) -> int:
        """Return the sum of A and B."""
        return a + b

    @export(roles=Role.ALL, blocking=False)
    def is_even(self, ctx, number: int) -> bool:
        """Tell whether NUMBER is even."""
        return number % 2 == 0

    @export(roles=Role.SITE, blocking=False)
    def whoami_role(self, ctx) -> str:
        """Say which role and account the caller acts as (site administrators only)."""
        return ctx.identity.describe()

    @export(roles=Role.ADMIN)
    def key_stats(self, ctx) -> KeyStats:
        """Count the API keys created while the plugin was installed (appliance administrator only)."""
        keys = ctx.api.state(PLUGIN).get("keys", {})
        return KeyStats(created=keys.get("created", 0), last_owner=keys.get("last_owner"))
