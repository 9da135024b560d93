"""Replacing a file whole: write a temporary file beside it, fsync, rename.  No project imports."""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional


def atomic_write(path: str, text: str, mode: Optional[int] = None,
                 check: Optional[Callable[[str], None]] = None) -> None:
    """Replace ``path`` with ``text``: temporary file in the same directory, fsync, rename.

    ``mode`` defaults to the existing file's permissions (0600 for a new file); its owner and
    group are kept when this process may set them.  A symbolic link is followed: the file it
    names is replaced and the link stays (config management often links config.ini).
    ``check``, if given, is called with the temporary file's path before the rename; an
    exception from it leaves the original untouched.
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if mode is None:
        mode = existing.st_mode & 0o7777 if existing else 0o600
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            if existing and (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fh.fileno(), existing.st_uid, existing.st_gid)
                except PermissionError:
                    pass  # not root: the file becomes ours, which only this process writes anyway
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(temp)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)
