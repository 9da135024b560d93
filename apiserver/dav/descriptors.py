"""Changing a home through descriptors of checked folders, never through paths (DAV's MOVE,
COPY, DELETE, MKCOL).

Blocking: filesystem work, on the DAV thread pool.  A folder is opened once (``O_NOFOLLOW``)
and checked on its descriptor to lie inside the home; the change then names only the last
part relative to it (``unlinkat``, ``mkdirat``, ``renameat2``, ``shutil.rmtree`` with
``dir_fd``), so a folder swapped for a link after the check cannot redirect it, and a link
as the last part is acted on itself, never followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from typing import Optional

from apiserver.sites.home import is_inside

#: renameat2's flag: fail with EEXIST rather than replace the target.
RENAME_NOREPLACE = 1

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def fd_path(fd: int) -> str:
    """The path the kernel has for open descriptor ``fd`` (what it really opened)."""
    return os.readlink(f"/proc/self/fd/{fd}")


class OutsideHome(PermissionError):
    """A folder that turned out, on its descriptor, not to lie inside the home."""


def open_folder(folder: str, root: str) -> int:
    """Blocking.  A descriptor of ``folder`` (never a link itself) checked to lie inside ``root``."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(folder):
            raise OutsideHome(f"{folder} became a link") from None
        raise
    if not is_inside(fd_path(fd), root):
        os.close(fd)
        raise OutsideHome(f"{folder} is not inside the site's home")
    return fd


@contextlib.contextmanager
def parent_of(file_path: str, root: str):
    """``(folder descriptor, last part)`` of ``file_path``, the folder checked inside ``root``."""
    folder, name = os.path.split(file_path)
    fd = open_folder(folder, root)
    try:
        yield fd, name
    finally:
        os.close(fd)


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Blocking.  ``renameat2(RENAME_NOREPLACE)``: FileExistsError rather than replacing ``dst``."""
    if _renameat2 is None:  # a C library without it: check, then rename (a narrow window)
        try:
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    if _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


def lstat_inside(file_path: str, root: str) -> Optional[os.stat_result]:
    """Blocking.  ``lstat`` of ``file_path`` (not ``root`` itself) taken in its folder, opened
    (``O_PATH``: search permission is enough) and checked on its descriptor to lie inside ``root``:
    a folder swapped for a link since the path was checked raises :class:`OutsideHome`, never
    stats what the link leads to.  None when nothing is there."""
    folder, name = os.path.split(file_path)
    try:
        fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if not is_inside(fd_path(fd), root):
            raise OutsideHome(f"{folder} is not inside the site's home")
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
    finally:
        os.close(fd)


def remove_file(file_path: str, root: str) -> None:
    """Blocking.  Unlink the file (or link) ``file_path``; never a folder."""
    with parent_of(file_path, root) as (fd, name):
        if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file_path)
        os.unlink(name, dir_fd=fd)


def remove_tree(folder_path: str, root: str) -> None:
    """Blocking.  Remove the folder ``folder_path`` and all in it, links never followed."""
    if os.path.normpath(folder_path) == os.path.normpath(root):
        raise PermissionError(errno.EPERM, "the home itself is never removed", folder_path)
    with parent_of(folder_path, root) as (fd, name):
        shutil.rmtree(name, dir_fd=fd)


def make_folder(folder_path: str, root: str) -> None:
    """Blocking.  ``mkdir`` in the checked parent (FileExistsError when something is there)."""
    with parent_of(folder_path, root) as (fd, name):
        os.mkdir(name, 0o777, dir_fd=fd)


def create_file(file_path: str, root: str) -> os.stat_result:
    """Blocking.  An empty new file (FileExistsError when something is there); its ``fstat``."""
    with parent_of(file_path, root) as (fd, name):
        made = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd)
        try:
            return os.fstat(made)
        finally:
            os.close(made)


def move(src_path: str, dst_path: str, root: str) -> None:
    """Blocking.  Rename ``src_path`` to ``dst_path`` (both inside ``root``), never replacing."""
    with parent_of(src_path, root) as (src_fd, src), parent_of(dst_path, root) as (dst_fd, dst):
        rename_noreplace(src_fd, src, dst_fd, dst)


def same_device(src_path: str, dst_path: str) -> bool:
    """Blocking.  ``dst_path``'s folder is on the file system of ``src_path`` (a rename can join them)."""
    try:
        return os.lstat(src_path).st_dev == os.stat(os.path.dirname(dst_path)).st_dev
    except OSError:
        return False
