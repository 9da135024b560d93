"""Records the security module returns (each becomes a struct on the wire)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Optional


@dataclasses.dataclass
class HtaccessFinding:
    """One directive of a ``.htaccess`` that re-enables what the policy disables, or that Apache refuses."""

    file: str        # as the site sees it: /var/www/html/blog/.htaccess
    line: int        # 1-based; the first line of a continued directive
    directive: str   # the directive as written, continuations joined
    reason: str


@dataclasses.dataclass
class FortificationInfo:
    """How a folder of a site is fortified: the application, mode, writable paths and window end."""

    app: str                           # wordpress, joomla, drupal, magento, laravel, or unknown
    mode: str                          # max, min, learn, write, release, reset, or none
    writable: list[str]                # paths the web server user may write, as the site sees them
    until: Optional[datetime.datetime]  # end of a learn or write window (UTC), else null
    learned: list[str]                 # of those, what learning added to the profile's paths


@dataclasses.dataclass
class LockdownEntry:
    """A binary (or a pyenv/rbenv/goenv tree) the web server user must not execute, and whether it cannot."""

    path: str      # as configured, or under the template root
    denied: bool   # true when the web server user can neither execute nor read it


@dataclasses.dataclass
class SetuidFile:
    """A setuid or setgid file under a template root and what the package manager says of it."""

    path: str
    mode: str                 # octal, e.g. 4755
    owner: str
    group: str
    sha256: str
    package: Optional[str]    # the system package owning the same path, null when none
    trusted: bool             # true only when that package's file has the same content
