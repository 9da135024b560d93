"""Host-level names of a site's accounts.

ApisCP names a site's group ``admin<N>`` for site ``site<N>``; inside the site a user keeps the
plain name it was given.  On the host every name must be unique across all sites, so a site
user's system account is ``<user>.<N>``: a site number never contains a dot, so reading from the
right always gives back the site and the user, and two sites can have a user of the same name.
Linux limits a user name to 32 characters: a longer one keeps a prefix of the user's name and
adds six hexadecimal digits of its SHA-256, which keeps it unique within the site.

``prefix`` (``[web] account_prefix``, empty by default) goes in front of every group and user
name, with a ``-``: two servers on one host (or tests) never share a name, and leftovers are
easy to find.
"""

from __future__ import annotations

import hashlib
import re

#: Longest user or group name the system's tools accept.
MAX_NAME_LENGTH = 32

#: What a prefix may be (checked by config.py through :func:`prefix_problem`).
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,9}")


def prefix_problem(prefix: str):
    """Why ``prefix`` cannot start host names, or None."""
    if prefix and not PREFIX_PATTERN.fullmatch(prefix):
        return "must be empty or a lower-case letter then up to 9 lower-case letters or digits"
    return None


def site_dir_name(site_id: int) -> str:
    """The site's folder under sites_root: ``site<N>``."""
    return f"site{_number(site_id)}"


def admin_link_name(site_id: int) -> str:
    """The link ``admin<N>`` under sites_root (as ApisCP's /home/virtual/admin<N>)."""
    return f"admin{_number(site_id)}"


def group_name(site_id: int, prefix: str = "") -> str:
    """The site's system group: ``admin<N>`` (``<prefix>-admin<N>`` with a prefix)."""
    return _prefixed(prefix, f"admin{_number(site_id)}")


def host_user_name(site_id: int, username: str, prefix: str = "") -> str:
    """The system user of ``username`` of site ``N``: ``<username>.<N>``, shortened when too long."""
    suffix = f".{_number(site_id)}"
    head = f"{prefix}-" if prefix else ""
    name = f"{head}{username}{suffix}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(username.encode()).hexdigest()[:6]
    room = MAX_NAME_LENGTH - len(head) - len(suffix) - len(digest) - 1
    return f"{head}{username[:room]}-{digest}{suffix}"


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}-{name}" if prefix else name


def _number(site_id: int) -> int:
    if isinstance(site_id, bool) or not isinstance(site_id, int) or site_id < 1:
        raise ValueError(f"a site number is a positive integer, not {site_id!r}")
    return site_id
