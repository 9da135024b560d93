"""``openat2(2)`` (Linux 5.6 and later) with ``RESOLVE_BENEATH``: a path below a folder's
descriptor resolved by the kernel in one call, never through a symbolic link (nor a ``/proc``
magic link), and refused (``EXDEV``) unless what it opened lies beneath that folder when the
walk ends, a folder renamed away meanwhile included (``complete_walk``'s ``path_is_under``).

One call instead of an ``openat`` per folder, their ``close`` and the ``readlink`` of
``/proc/self/fd`` that checked the file's place (measured on a DAV GET 64 KB: seven system
calls fewer).  Python has no ``os.openat2``: the raw system call, through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Optional

#: openat2's number, the same on every architecture (the generic table).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x02, 0x04, 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class BeneathOpener:
    """``open(folder_fd, path)`` with fixed ``flags``; :attr:`available` False when the kernel (or
    a seccomp filter) has no ``openat2``: the caller then walks the path itself."""

    def __init__(self, flags: int):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._how = _OpenHow(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        self._size = ctypes.c_size_t(ctypes.sizeof(self._how))
        self._how_ref = ctypes.byref(self._how)  # read only: shared by every thread
        self.available = self._probe()

    def _probe(self) -> bool:
        try:
            fd = self.open(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), ".", close_folder=True)
        except OSError as exc:
            return exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL)
        os.close(fd)
        return True

    def open(self, folder_fd: int, path: str, close_folder: bool = False) -> int:
        """The descriptor of ``path`` (relative, no ``..``) beneath ``folder_fd``; OSError as ``open``'s
        (``ELOOP``: a link on the way, ``EXDEV``: not beneath the folder)."""
        try:
            fd = self._libc.syscall(SYS_OPENAT2, ctypes.c_int(folder_fd),
                                    os.fsencode(path), self._how_ref, self._size)
        finally:
            if close_folder:
                os.close(folder_fd)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return int(fd)


_openers: dict = {}


def opener(flags: int) -> Optional[BeneathOpener]:
    """The shared :class:`BeneathOpener` of ``flags``, None when the kernel has no ``openat2``."""
    found = _openers.get(flags)
    if found is None:
        found = _openers.setdefault(flags, BeneathOpener(flags))
    return found if found.available else None
