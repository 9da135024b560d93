"""The ``example.max-times`` scope: ``cpcmd scope:set example.max-times 5``."""

from __future__ import annotations

from apiserver.errors import InvalidArgument
from apiserver.scopes import Scope
from apiserver.types import INT, TypeSpec, coerce

from apiserver_example.state import DEFAULT_MAX_TIMES, state_of

#: The largest limit the scope accepts, a bound on the size of one echo answer.
LIMIT_CEILING = 1000


class MaxTimes(Scope):
    """How many copies ``example_echo`` may return."""

    name = "example.max-times"
    type = "int"
    default = DEFAULT_MAX_TIMES
    help = f"Most copies example:echo returns (0 to {LIMIT_CEILING}); kept in memory until restart."

    def get(self, app) -> int:
        return state_of(app).max_times

    def set(self, app, actor, value) -> None:
        number = coerce(value, TypeSpec(INT), self.name)
        if not 0 <= number <= LIMIT_CEILING:
            raise InvalidArgument(f"{self.name} must be between 0 and {LIMIT_CEILING}, got {number}")
        state_of(app).max_times = number
