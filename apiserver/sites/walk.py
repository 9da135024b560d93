"""The one walk over a folder tree: by descriptors, never through a link, to any depth.

:func:`walk` yields a :class:`Folder` for the top folder and every real folder under it,
each before anything below it (pre-order), with its open descriptor, its ``fstat`` and its
listing.  The listing is :func:`os.scandir`'s: each entry's type comes from the directory
itself, so nothing is ``stat``-ed that the caller does not ask about.

- A subfolder is opened through its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY |
  O_NONBLOCK``: one swapped for a link (or a file, or a FIFO) since the listing is not
  entered, and everything the caller does to the folder itself goes through the descriptor
  that is then listed, so it is the folder that was opened, whatever happens to its name.
- The walk is iterative (an explicit stack), so depth is not limited by Python's recursion,
  and it holds at most :data:`MAX_OPEN` descriptors however deep it goes.  A parent's
  descriptor is closed as soon as its last subfolder is opened (a chain of single folders
  holds one or two); past the limit some held ones are let go, spread so that the nearest
  one left is never far, and reopened when the walk comes back, name by name from the
  nearest open ancestor, each checked to be the same folder (device and inode).  A folder
  moved away meanwhile fails the walk with :class:`WalkError` naming it: no folder is
  skipped silently, and a 2,000-deep comb costs about twice the opens of a shallow tree.
- ``one_filesystem`` leaves folders on other filesystems (mount points) out, as ``find -xdev``.

Everything here is blocking.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Iterator, Optional

from apiserver.errors import ServerError
from apiserver.sites.home import open_inside, printable

#: A folder opened by the walk: never through a link, never blocking on a FIFO swapped in.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Descriptors one walk holds open at most (its depth is not limited by it).
MAX_OPEN = 64
#: A listed subfolder that is gone or no longer a folder when it is opened: nothing to walk there.
_VANISHED = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


class WalkError(ServerError):
    """A folder of the walk could not be read, or was moved while it was walked.

    ``rel`` is the folder relative to the walk's top; the message names it as the caller
    showed the top (never a host path unless the caller gave one).
    """

    def __init__(self, message: str, rel: str, strerror: str = ""):
        super().__init__(message)
        self.rel = rel
        self.strerror = strerror or message


class Folder:
    """One folder of a walk, valid until the walk resumes.

    ``rel``: its path relative to the top (``""`` for the top); ``path``: the top's path joined
    with ``rel``; ``fd``: its open descriptor; ``stat``: ``os.fstat(fd)``; ``entries``: its
    listing (``os.DirEntry``, in directory order); ``subfolders``: the names of the real folders
    among them (by the listing's type, links excluded), which the walk enters after the caller
    is done with this folder: remove names (or assign a new list) to prune; ``parent``: the
    parent's Folder (None for the top); ``data``: the caller's, e.g. what a folder passes down.
    """

    __slots__ = ("rel", "path", "fd", "stat", "entries", "subfolders", "parent", "data", "name", "depth", "_next",
                 "_owned")

    def __init__(self, name: str, rel: str, path: str, fd: int, st: os.stat_result, parent: Optional["Folder"]):
        self.name, self.rel, self.path, self.fd, self.stat, self.parent = name, rel, path, fd, st, parent
        self.entries: list = []
        self.subfolders: list = []
        self.data = None
        self.depth = 0
        self._next = 0
        self._owned = parent is not None  # the top's descriptor is the caller's

    def child_rel(self, name: str) -> str:
        """The path relative to the top of the entry ``name`` in this folder."""
        return f"{self.rel}/{name}" if self.rel else name

    def child_path(self, name: str) -> str:
        """The path (the top's joined with its relative path) of the entry ``name`` in this folder."""
        return f"{self.path}/{name}" if self.path else name


def walk(top_fd: int, top_path: str = "", *, shown: str = ".", one_filesystem: bool = False,
         onerror: Optional[Callable[[WalkError], None]] = None,
         enter: Optional[Callable[[Folder], None]] = None) -> Iterator[Folder]:
    """Blocking.  Every folder from the one open at ``top_fd`` down (see the module doc).

    ``top_fd`` stays open and the caller's; ``top_path`` is joined into each Folder's ``path``;
    ``shown`` names the top in errors.  A folder that cannot be listed (or opened, other than
    gone or no longer a folder) is a :class:`WalkError`: raised, or given to ``onerror`` and
    the walk goes on without it.  A folder moved while the walk had to let go of its descriptor
    is always raised.  ``enter``, when given, is called with each folder as soon as it is open,
    before it is listed (``entries`` still empty): what it changes on the folder (taking away
    someone's write access) is in force before anything in it is read.
    """
    top_stat = os.fstat(top_fd)
    top = Folder("", "", top_path, top_fd, top_stat, None)
    if enter is not None:
        enter(top)
    if not _list(top, shown, onerror):
        return
    stack = [top]
    held: list = []  # the folders whose descriptor the walk opened and holds
    try:
        yield top
        while stack:
            parent = stack[-1]
            if parent._next >= len(parent.subfolders):
                stack.pop()
                _release(parent, held)
                continue
            name = parent.subfolders[parent._next]
            parent._next += 1
            if parent.fd < 0:
                _reopen(stack, held, shown)
            rel = parent.child_rel(name)
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent.fd)
            except OSError as exc:
                if exc.errno not in _VANISHED:
                    _failed(WalkError(f"cannot open folder {_name(shown, rel)!r}: {exc.strerror}", rel, exc.strerror),
                            onerror)
                continue
            folder = Folder(name, rel, parent.child_path(name), fd, os.fstat(fd), parent)
            folder.depth = len(stack)
            held.append(folder)
            if parent._next >= len(parent.subfolders):
                _release(parent, held)  # its last subfolder is open: the parent's descriptor is done
            if one_filesystem and folder.stat.st_dev != top_stat.st_dev:
                _release(folder, held)
                continue
            if enter is not None:
                enter(folder)
            if not _list(folder, shown, onerror):
                _release(folder, held)
                continue
            stack.append(folder)
            _bound(held)
            yield folder
    finally:
        for folder in held:
            os.close(folder.fd)
            folder.fd = -1


def _list(folder: Folder, shown: str, onerror) -> bool:
    try:
        with os.scandir(folder.fd) as listing:
            entries = list(listing)
    except OSError as exc:
        _failed(WalkError(f"cannot list folder {_name(shown, folder.rel)!r}: {exc.strerror}", folder.rel,
                          exc.strerror), onerror)
        return False
    folder.entries = entries
    folder.subfolders = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    return True


def _failed(error: WalkError, onerror) -> None:
    if onerror is None:
        raise error
    onerror(error)


def _release(folder: Folder, held: list) -> None:
    """Close the folder's descriptor if the walk holds it (the top's is the caller's)."""
    if folder._owned and folder.fd >= 0:
        os.close(folder.fd)
        folder.fd = -1
        held.remove(folder)


def _bound(held: list) -> None:
    """Keep at most MAX_OPEN descriptors.  The deeper half stays (the folders the walk comes back to
    first); of the others, those at depths with more trailing zero bits stay, so the ones left
    open are spread evenly between the top and the current folder and a reopening starts near."""
    while len(held) > MAX_OPEN:
        by_depth = sorted(held, key=lambda f: f.depth)
        shallower = by_depth[:len(by_depth) - MAX_OPEN // 2]
        victim = min(shallower, key=lambda f: ((f.depth & -f.depth).bit_length(), f.depth))
        _release(victim, held)


def _reopen(stack: list, held: list, shown: str) -> None:
    """Open the descriptor of the deepest folder of ``stack`` again, name by name from its nearest
    open ancestor, each checked to be the folder walked before; the ones on the way stay open
    (the walk needs them next, on its way back up) as far as :func:`_bound` allows."""
    start = len(stack) - 2
    while stack[start].fd < 0:
        start -= 1  # the top's descriptor is never let go
    fd = stack[start].fd
    for folder in stack[start + 1:]:
        try:
            child = os.open(folder.name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            child = -1
        if child >= 0:
            st = os.fstat(child)
            if (st.st_dev, st.st_ino) != (folder.stat.st_dev, folder.stat.st_ino):
                os.close(child)
                child = -1
        if child < 0:
            raise WalkError(f"folder {_name(shown, folder.rel)!r} was moved while it was walked; try again",
                            folder.rel)
        folder.fd = fd = child
        held.append(folder)
    _bound(held)


def _name(shown: str, rel: str) -> str:
    """The folder ``rel`` as the caller shows the top, printable, long ones cut in the middle (the
    end names the folder)."""
    text = printable(shown if not rel else rel if shown in ("", ".") else f"{shown.rstrip('/')}/{rel}")
    return text if len(text) <= 240 else f"{text[:80]}...{text[-160:]}"


#: A listed file is opened for its metadata (owner, ACL), never its content: O_NONBLOCK so that
#: neither a FIFO swapped in nor a lease holder can make the walk wait, O_NOATIME so that it
#: leaves no trace (root and the owner may), O_NOCTTY for a terminal swapped in.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOATIME | os.O_CLOEXEC
#: What opens a file that cannot be opened to read: only a handle on it, no access at all.
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def open_file(dir_fd: int, name: str) -> tuple:
    """Blocking.  ``(fd, target)`` of the entry ``name`` of the folder open at ``dir_fd``, opened
    without following a link, to read or change its metadata through the descriptor (what is
    changed is then the file that was opened and checked, whatever happens to its name).
    ``target`` is what :func:`os.getxattr` and :func:`os.chown` take for it: ``fd`` itself, or,
    when the file could only be opened ``O_PATH`` (a lease, no read permission without root),
    ``/proc/self/fd/N``.  ``(-1, None)`` when it is gone or was swapped for a link.  The caller
    checks what it is (``os.fstat(fd)``) and closes ``fd``.
    """
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
        return fd, fd
    except OSError as exc:
        if exc.errno in _VANISHED:
            return -1, None
    try:
        fd = os.open(name, PATH_FLAGS, dir_fd=dir_fd)
    except OSError:
        return -1, None
    return fd, f"/proc/self/fd/{fd}"


def open_below(top_fd: int, rel: str, flags: int = DIR_FLAGS) -> int:
    """Blocking.  Open ``rel`` (``a/b/c``) below the folder open at ``top_fd`` one name at a time,
    never through a link: every folder on the way with :data:`DIR_FLAGS`, the last part with
    ``flags`` (which should carry ``O_NOFOLLOW``).  OSError as :func:`os.open` raises it."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if not parts:
        return os.open(".", flags, dir_fd=top_fd)
    fd = top_fd
    try:
        for part in parts[:-1]:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            if fd != top_fd:
                os.close(fd)
            fd = child
        return os.open(parts[-1], flags, dir_fd=fd)
    finally:
        if fd != top_fd:
            os.close(fd)


def open_folder(path: str) -> int:
    """Blocking.  A descriptor of the folder at the absolute ``path``, opened from ``/`` one name at a
    time without following any link.  OSError when a part is missing or is not a folder."""
    root = os.open("/", DIR_FLAGS)
    try:
        return open_below(root, path.lstrip("/")) if path.strip("/") else os.dup(root)
    finally:
        os.close(root)


def walk_inside(top: str, root: str, *, shown: str = ".", one_filesystem: bool = False,
                onerror: Optional[Callable[[WalkError], None]] = None,
                enter: Optional[Callable[[Folder], None]] = None) -> Iterator[Folder]:
    """Blocking.  :func:`walk` from the folder ``top`` (a host path), which must lie inside the
    folder ``root`` (a real path): checked on the opened descriptor (InvalidArgument otherwise)."""
    fd = open_inside(top, root, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        yield from walk(fd, top, shown=shown, one_filesystem=one_filesystem, onerror=onerror, enter=enter)
    finally:
        os.close(fd)
