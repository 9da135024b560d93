"""POSIX ACLs for one named user, through the ``acl`` tools (``setfacl``/``getfacl``).

The one place that runs them, so Fortification and the DAV endpoint give the web server user
access the same way.  A target is a path or an open file descriptor:

- a path is passed with ``-P`` (physical walk): a symbolic link given as an argument is
  skipped, never followed to its target;
- a descriptor (opened ``O_PATH | O_NOFOLLOW`` by the caller and checked with ``fstat``) is
  handed to setfacl and named ``/proc/self/fd/N``, so the ACL lands on exactly the file that
  was opened, whatever happens to the names on its path meanwhile (a web application renaming
  folders under our feet cannot redirect it).

Everything here is blocking: run it on the blocking pool.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from typing import Iterable, Optional, Union

from apiserver.errors import ServerError

#: How many targets one setfacl invocation takes (well below the argument and descriptor limits).
BATCH = 200

_ESCAPE = re.compile(rb"\\([0-7]{3})")

Target = Union[str, int]


def grant_folders(paths: Iterable[Target], user: str) -> None:
    """Blocking.  ``user`` may read, write and enter each folder, and new entries inherit that
    (access ACL ``u:USER:rwx`` plus the default ACL ``d:u:USER:rwx``)."""
    _setfacl(["-m", f"u:{user}:rwx,d:u:{user}:rwx"], paths)


def grant_folders_only(paths: Iterable[Target], user: str) -> None:
    """Blocking.  ``user`` may create and remove entries in each folder (access ACL only, no inheritance)."""
    _setfacl(["-m", f"u:{user}:rwx"], paths)


def grant_files(paths: Iterable[Target], user: str) -> None:
    """Blocking.  ``user`` may read and write each file (``u:USER:rwX``: execute only where someone has it)."""
    _setfacl(["-m", f"u:{user}:rwX"], paths)


def revoke(paths: Iterable[Target], user: str) -> None:
    """Blocking.  Remove ``user``'s access and default ACL entries; other entries stay as they are.

    ``-n`` keeps the mask: recalculating it would widen the owning group's effective rights.
    """
    _setfacl(["-n", "-x", f"u:{user},d:u:{user}"], paths)


def revoke_files(paths: Iterable[Target], user: str) -> None:
    """Blocking.  Remove ``user``'s access ACL entry from files (which carry no default ACL); the mask stays."""
    _setfacl(["-n", "-x", f"u:{user}"], paths)


@dataclasses.dataclass
class Acl:
    """The extended entries of one file's ACL (numeric ids); base permissions come from the mode."""

    users: dict            # uid -> "rwx" string
    groups: dict           # gid -> "rwx" string (named groups)
    group_obj: str
    mask: Optional[str]    # None when the ACL has no mask (no extended entries)


def read_tree(path: str) -> dict:
    """Blocking.  The ACLs with extended entries at or under ``path``: {host path: Acl}.

    One ``getfacl -R -P --skip-base`` call; files that carry only base entries are absent.
    """
    try:
        proc = subprocess.run(["getfacl", "-R", "-P", "--skip-base", "--numeric", "--absolute-names", "--", path],
                              capture_output=True, timeout=600)
    except FileNotFoundError:
        raise ServerError("getfacl is missing: install the acl package (Debian: apt-get install acl)") from None
    return parse_getfacl(proc.stdout)


def parse_getfacl(output: bytes) -> dict:
    """Parse getfacl's text (names escaped as ``\\ooo``) into {path: Acl}."""
    found = {}
    current = None
    for raw in output.split(b"\n"):
        if raw.startswith(b"# file: "):
            name = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw[8:])
            current = Acl(users={}, groups={}, group_obj="", mask=None)
            found[name.decode("utf-8", "surrogateescape")] = current
            continue
        if current is None or not raw or raw.startswith(b"#") or raw.startswith(b"default:"):
            continue
        parts = raw.decode("ascii", "replace").split("\t")[0].split(":")
        if len(parts) < 3:
            continue
        kind, qualifier, perms = parts[0], parts[1], parts[2]
        if kind == "user" and qualifier:
            current.users[int(qualifier)] = perms
        elif kind == "group" and qualifier:
            current.groups[int(qualifier)] = perms
        elif kind == "group":
            current.group_obj = perms
        elif kind == "mask":
            current.mask = perms
    return found


def _setfacl(options: list, targets: Iterable[Target]) -> None:
    targets = list(targets)
    paths = [t for t in targets if isinstance(t, str)]
    fds = [t for t in targets if not isinstance(t, str)]
    for start in range(0, len(paths), BATCH):
        _run(["setfacl", "-P", *options, "--", *paths[start:start + BATCH]], ())
    for start in range(0, len(fds), BATCH):
        chunk = fds[start:start + BATCH]
        # No -P here: /proc/self/fd/N is a magic link that must be followed to the opened file.
        _run(["setfacl", *options, "--", *[f"/proc/self/fd/{fd}" for fd in chunk]], chunk)


def _run(command: list, pass_fds) -> None:
    try:
        proc = subprocess.run(command, capture_output=True, timeout=600, pass_fds=tuple(pass_fds))
    except FileNotFoundError:
        raise ServerError("setfacl is missing: install the acl package (Debian: apt-get install acl)") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ServerError(f"setfacl failed: {message[0] if message else proc.returncode}")
