"""The ``example`` module: written exactly like apiserver's built-in modules."""

from __future__ import annotations

import dataclasses
from typing import Optional

from apiserver.errors import InvalidArgument
from apiserver.module import Module, Role, export

from apiserver_example.state import state_of


@dataclasses.dataclass
class KeyStats:
    """API keys created since the server started, as the plugin's event hook counted them."""

    created: int
    last_owner: Optional[str]


class Example(Module):
    """Shows every kind of argument and answer a plugin's functions can have."""

    name = "example"

    @export(roles=Role.ALL, blocking=False)
    def echo(self, ctx, text: str, times: Optional[int] = 1) -> list[str]:
        """Return TEXT repeated TIMES times (0 to the scope example.max-times, 100 by default) as a list."""
        if times is None:
            times = 1
        limit = state_of(ctx.app).max_times
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

    @export(roles=Role.ADMIN, blocking=False)
    def key_stats(self, ctx) -> KeyStats:
        """Count the API keys created since start-up (appliance administrator only)."""
        state = state_of(ctx.app)
        return KeyStats(created=state.keys_created, last_owner=state.last_key_owner)
