"""One rule for name filters (``cpcmd -l``, ``misc:info``, ``misc:list-commands``, ``scope:list``).

A filter with ``*``, ``?`` or ``[`` is a glob matched against the whole name (``auth:*``,
``cp.*``); any other word matches every name containing it (``auth`` finds
``auth:restrict-ip`` and ``auth.geoip-key``); both ignore case; no filter or an empty one
matches all.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Optional

MAX_FILTER = 200  # no name is near this long; bounds the glob's regular expression
GLOB_CHARACTERS = "*?["


def name_matcher(pattern: Optional[str]) -> Callable[[str], bool]:
    """A predicate on names for ``pattern`` (see the module docstring); ValueError if too long."""
    if not pattern:
        return lambda name: True
    if len(pattern) > MAX_FILTER:
        raise ValueError(f"the filter is longer than {MAX_FILTER} characters")
    word = pattern.lower()
    if any(c in pattern for c in GLOB_CHARACTERS):
        return lambda name: fnmatch.fnmatchcase(name.lower(), word)
    return lambda name: word in name.lower()
