"""How much a site's files take: the filesystem's group quota when it keeps one, else a count.

:func:`count_tree` walks a folder tree with the one walker (:mod:`apiserver.sites.walk`: by
descriptors, never through a link, one filesystem) and adds up what ``du -s`` and ``du -s
--inodes`` would: allocated blocks (``st_blocks``, a file with several hard links once) in KB,
and inodes (folders, files, links).  Given a group id it counts only what that group owns, as
a group quota does.  :func:`group_quota` reads the kernel's group quota figures of a
filesystem (``quotactl``), None when that filesystem keeps none for groups.

Everything here is blocking.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
from typing import Optional

from apiserver.sites.walk import WalkError, open_folder, walk


@dataclasses.dataclass(frozen=True)
class TreeCount:
    """KB allocated (rounded up) and inodes; ``method``: ``count`` (a walk) or ``quota``."""

    kilobytes: int
    files: int
    method: str = "count"


def count_tree(path: str, gid: Optional[int] = None) -> TreeCount:
    """Blocking.  What the tree at ``path`` (a host path, opened without following any link)
    takes, only what group ``gid`` owns when given.  A folder that cannot be listed counts itself
    only, as in ``du`` (the count goes on); OSError when ``path`` itself cannot be opened."""
    fd = open_folder(path)
    try:
        top = os.fstat(fd)
        counted = gid is None or top.st_gid == gid
        blocks, files = _count_entries(walk(fd, path, one_filesystem=True, onerror=_skip), top.st_dev, gid)
    finally:
        os.close(fd)
    if counted:
        blocks += top.st_blocks
        files += 1
    return TreeCount((blocks + 1) // 2, files)


def _count_entries(folders, dev: int, gid: Optional[int]) -> tuple:
    """Blocking.  ``(512-byte blocks, inodes)`` of every entry listed in ``folders`` (a walk), each
    by one ``lstat`` from its folder's listing, folders too, as ``du`` does.  The loop is the
    count's whole cost above the system calls: no test of the entry's type, and each stat result
    is let go at once (a DirEntry would keep a thousand of them per folder).  Left out: an entry
    gone since the listing, a second link to a counted inode, a folder of another filesystem (a
    mount point: the walk does not enter it either), and with ``gid`` what another group owns."""
    blocks = files = 0
    seen: set = set()
    lstat = os.lstat
    for folder in folders:
        entries, fd = folder.entries, folder.fd
        files += len(entries)
        for entry in entries:
            try:
                st = lstat(entry.name, dir_fd=fd)
            except OSError:
                files -= 1  # gone since the listing
                continue
            if gid is not None and st.st_gid != gid:
                files -= 1
                continue
            if st.st_nlink > 1 or st.st_dev != dev:  # rare: hard links, folders (`..` links), mount points
                key = (st.st_dev, st.st_ino)
                if st.st_dev != dev or key in seen:
                    files -= 1
                    continue
                seen.add(key)
            blocks += st.st_blocks
    return blocks, files


def _skip(error: WalkError) -> None:
    """A folder that cannot be listed: its content is not counted (the walk goes on)."""


# --- the kernel's group quota (quotactl(2)) ---------------------------------------------------

_Q_GETQUOTA = 0x800007
_GRPQUOTA = 1
#: The quota facility is off, not compiled in, or not kept for groups on this filesystem.
_NO_QUOTA = (errno.ESRCH, errno.ENOSYS, errno.ENOTSUP, errno.EINVAL, errno.ENOTBLK, errno.ENODEV, errno.ENOENT,
             errno.EPERM)


class _DiskQuota(ctypes.Structure):
    """``struct if_dqblk`` of <linux/quota.h>."""

    _fields_ = [("bhardlimit", ctypes.c_uint64), ("bsoftlimit", ctypes.c_uint64), ("curspace", ctypes.c_uint64),
                ("ihardlimit", ctypes.c_uint64), ("isoftlimit", ctypes.c_uint64), ("curinodes", ctypes.c_uint64),
                ("btime", ctypes.c_uint64), ("itime", ctypes.c_uint64), ("valid", ctypes.c_uint32)]


_libc = None


def _quotactl():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.quotactl


def mount_source(path: str) -> Optional[str]:
    """Blocking.  The device (``/proc/self/mountinfo``'s source) of the filesystem holding ``path``."""
    target = os.path.realpath(path)
    best, source = "", None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as info:
        for line in info:
            fields = line.split()
            if "-" not in fields:
                continue
            point = fields[4].replace("\\040", " ")
            after = fields[fields.index("-") + 1:]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best) and len(after) >= 2:
                best, source = point, after[1]
    return source


def group_quota(path: str, gid: int) -> Optional[TreeCount]:
    """Blocking.  Group ``gid``'s use on the filesystem holding ``path`` from its group quota, or
    None when that filesystem keeps no group quota (off, not enabled, no block device)."""
    device = mount_source(path)
    if not device or not device.startswith("/"):
        return None
    quota = _DiskQuota()
    cmd = (_Q_GETQUOTA << 8) | _GRPQUOTA
    if _quotactl()(ctypes.c_int(cmd), device.encode(), ctypes.c_int(gid), ctypes.byref(quota)) != 0:
        err = ctypes.get_errno()
        if err in _NO_QUOTA:
            return None
        raise OSError(err, os.strerror(err), device)
    return TreeCount((quota.curspace + 1023) // 1024, quota.curinodes, "quota")
