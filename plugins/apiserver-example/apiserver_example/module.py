"""The ``example`` module: written exactly like apiserver's built-in modules."""

from __future__ import annotations

import dataclasses
from typing import Optional

from apiserver.errors import InvalidArgument
from apiserver.module import Module, Role, export

from apiserver_example.events import key_counter

#: ``example_echo`` refuses more repetitions than this, as a bound on the answer's size.
MAX_TIMES = 100


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
        """Return TEXT repeated TIMES times (0 to 100) as a list."""
        if times is None:
            times = 1
        if not 0 <= times <= MAX_TIMES:
            raise InvalidArgument(f"times must be between 0 and {MAX_TIMES}, got {times}")
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
        counter = key_counter(ctx.app)
        return KeyStats(created=counter.created, last_owner=counter.last_owner)
