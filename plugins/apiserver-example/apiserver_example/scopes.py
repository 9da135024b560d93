"""The ``example.max-times`` scope: ``cpcmd scope:set example.max-times 5``."""

from __future__ import annotations

from apiserver.errors import InvalidArgument
from apiserver.plugin_api import StoredScope
from apiserver.types import INT, TypeSpec

#: ``example_echo`` repeats at most this many times unless the scope says otherwise.
DEFAULT_MAX_TIMES = 100
#: The largest limit the scope accepts, a bound on the size of one echo answer.
LIMIT_CEILING = 1000


class MaxTimes(StoredScope):
    """How many copies ``example_echo`` may return; stored in the plugin's state, so it survives restarts."""

    plugin = "example"
    name = "example.max-times"
    type = "int"
    spec = TypeSpec(INT)
    default = DEFAULT_MAX_TIMES
    help = f"Most copies example:echo returns (0 to {LIMIT_CEILING})."

    def check(self, value: int) -> None:
        if not 0 <= value <= LIMIT_CEILING:
            raise InvalidArgument(f"{self.name} must be between 0 and {LIMIT_CEILING}, got {value}")
