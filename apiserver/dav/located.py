"""DAV roots located recently, so a plain GET's file is opened on the reactor, with no thread hop.

A DAV thread locates an account's root the first time (:meth:`LocatedRoots.locate`: the site's
home, the account's identity, the user's folder made if needed, the provider with its site's
state: reads of ``/etc/passwd`` and the database, all blocking) and remembers it for
:data:`LOCATED_TTL` seconds.  While it is remembered, :meth:`LocatedRoots.open_now` opens a
plain GET's file on the calling (reactor) thread: the root's ``stat`` compared with the one
remembered, then the file reached from its descriptor (:func:`walk_open`: one ``openat2``
beneath it through no link, or without ``openat2`` each folder ``O_NOFOLLOW``; the file
``O_NONBLOCK|O_NOFOLLOW``, checked on its descriptor to be a regular file inside the home with
one link), as the account (``setfsuid`` of the calling thread for the length of the call): a
few ``openat`` and ``fstat``, nothing that can wait on a FIFO, a
device or a lock, no folder listing.  Anything else (a root that changed or is not remembered,
a link, a missing or refused file) goes to a DAV thread (:data:`MISSING`), where WsgiDAV's GET
answers as it always did.

The first profile of a 64 KB GET (py-spy) showed the hop to a DAV thread, and the reactor
waiting for the GIL those threads held, as most of its cost.
"""

from __future__ import annotations

import collections
import functools
import dataclasses
import os
import stat
import threading
from typing import Optional

from wsgidav import util as wsgidav_util
from wsgidav.dav_error import DAVError

from apiserver.dav.beneath import opener as beneath_opener
from apiserver.dav.provider import NAME_MAX, PATH_MAX, TEMP_PREFIX, HomeFileResource, fd_path
from apiserver.dav.wsgi import FileAnswer
from apiserver.errors import InvalidArgument, NotFound
from apiserver.sites.home import is_inside, split_site_path

#: Seconds a located root is used without locating it again on a DAV thread (its owner's
#: identity, the user's folder): a change of the site's owner is seen at most this late.
LOCATED_TTL = 5
#: Most roots remembered at once (the oldest go first).
MAX_LOCATED = 10_000

#: :meth:`LocatedRoots.open_now` could not decide on the calling thread: ask a DAV thread.
MISSING = object()


@dataclasses.dataclass(frozen=True)
class Located:
    """An account's DAV root as a DAV thread found it: real path, its ``(st_dev, st_ino)``, the
    identity to act as (None: the server is not root) and the provider; valid until ``until``."""

    root: str
    key: tuple
    identity: object
    provider: object
    until: float


class LocatedRoots:
    """``locate`` on a DAV thread, ``open_now`` on any thread; ``clock``: when entries expire."""

    def __init__(self, dav_app, clock, ttl: float = LOCATED_TTL, max_entries: int = MAX_LOCATED):
        self.dav_app = dav_app
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def locate(self, account) -> Optional[Located]:
        """Blocking (DAV thread), as the server.  ``account``'s root located and remembered, or None
        (no home, no site in the database, unreadable)."""
        app = self.dav_app
        try:
            root, identity = app._locate(account)
            provider = app.provider_for(root, account)
            info = os.stat(root)
        except (NotFound, OSError):
            self.forget(account)
            return None
        located = Located(root, (info.st_dev, info.st_ino), identity, provider, self.clock.seconds() + self.ttl)
        with self._lock:
            self._entries.pop(account, None)
            self._entries[account] = located
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return located

    def forget(self, account) -> None:
        with self._lock:
            self._entries.pop(account, None)

    def open_now(self, account, path: str):
        """A plain GET's :class:`FileAnswer` opened on the calling thread (not read: it is sent
        straight into the socket), or :data:`MISSING` when a DAV thread must decide (the root not
        remembered or changed, or anything :func:`walk_open` does not serve)."""
        with self._lock:
            located = self._entries.get(account)
        if located is None or located.until <= self.clock.seconds():
            return MISSING
        if located.identity is None:
            return self._walk_open(located, account, path)
        with self.dav_app.site_files.threads.acting_as(located.identity):
            return self._walk_open(located, account, path)

    def _walk_open(self, located: Located, account, path: str):
        """:func:`walk_open` from ``located``'s root, checked to be the one remembered; MISSING
        (the root forgotten) when it is not."""
        try:
            root_fd = os.open(located.root, _FOLDER)
        except OSError:
            self.forget(account)
            return MISSING
        try:
            info = os.fstat(root_fd)
            if (info.st_dev, info.st_ino) != located.key:
                self.forget(account)
                return MISSING
            return walk_open(root_fd, located.root, path)
        finally:
            os.close(root_fd)

    def open_located(self, account, path: str, read_small: bool):
        """Blocking (DAV thread).  :meth:`locate`, then the file opened as in :meth:`open_now`;
        None when WsgiDAV must answer."""
        located = self.locate(account)
        if located is None:
            return None
        return self.open_in(located, path, read_small)

    def open_in(self, located: Located, path: str, read_small: bool):
        """The file at DAV ``path`` of ``located`` opened as its account (see :func:`open_answer`)."""
        if located.identity is None:
            return open_answer(located.provider, path, read_small)
        with self.dav_app.site_files.threads.acting_as(located.identity):
            return open_answer(located.provider, path, read_small)


_FOLDER = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def walk_open(root_fd: int, root: str, path: str):
    """The :class:`FileAnswer` (not read) of the regular file at DAV ``path`` below the folder
    ``root_fd`` (real path ``root``), opened with ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO never
    waited on) through no link: with ``openat2`` (:mod:`apiserver.dav.beneath`: the kernel
    refuses a link anywhere on the path and a file not beneath ``root_fd``), else each folder
    opened from the one before with ``O_NOFOLLOW`` and the file's place checked by its
    ``/proc/self/fd`` link; checked on its descriptor to be a regular file with one link.
    :data:`MISSING` for anything else (a link, a reserved name, no such file, refused): WsgiDAV
    then decides on a DAV thread, with the same answer as before."""
    try:
        parts = split_site_path(path)
    except InvalidArgument:
        return MISSING
    if (not parts or len(path) > PATH_MAX or parts[-1].startswith(TEMP_PREFIX)
            or any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in parts)):
        return MISSING
    beneath = beneath_opener(_FILE)
    if beneath is not None:  # the kernel walks, refuses links and checks the file is beneath the root
        try:
            fd = beneath.open(root_fd, "/".join(parts))
        except (OSError, ValueError):
            return MISSING
        placed = True  # beneath the root: the kernel checked it
    else:
        fd = _walk_folders(root_fd, parts)
        if fd is None:
            return MISSING
        placed = False
    try:
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_nlink != 1
                or not (placed or is_inside(fd_path(fd), root))):
            os.close(fd)
            return MISSING
        os.set_blocking(fd, True)
        # Unbuffered: the file is sent by the kernel (sendfile, a mapping), never read through it.
        fileobj = os.fdopen(fd, "rb", 0)
    except BaseException:
        os.close(fd)
        raise
    try:
        return FileAnswer.of(fileobj, mime_type(parts[-1]), read_small=False, info=info)
    except BaseException:
        fileobj.close()
        raise


@functools.lru_cache(maxsize=1024)
def mime_type(name: str) -> str:
    """WsgiDAV's Content-Type for a file named ``name`` (the same few names come back); as a
    path's last part, so that a name like ``data:x`` is not read as a URL."""
    return wsgidav_util.guess_mime_type("/" + name, {})


def _walk_folders(root_fd: int, parts: list) -> Optional[int]:
    """Without ``openat2``: each folder opened from the one before with ``O_NOFOLLOW``, then the
    file (its place checked by the caller); None when any step fails."""
    opened = []
    try:
        folder = root_fd
        for part in parts[:-1]:
            folder = os.open(part, _FOLDER, dir_fd=folder)
            opened.append(folder)
        return os.open(parts[-1], _FILE, dir_fd=folder)
    except (OSError, ValueError):
        return None
    finally:
        for fd_ in opened:
            os.close(fd_)


def open_answer(provider, path: str, read_small: bool):
    """Blocking.  A plain GET of the file at DAV ``path`` of ``provider``, opened and checked as
    WsgiDAV's GET opens it (:meth:`HomeFileResource.get_content`), or None when WsgiDAV must
    answer (not a file, refused, gone); a small file read whole when ``read_small``."""
    try:
        environ = {"wsgidav.provider": provider, "wsgidav.config": {}, "REQUEST_METHOD": "GET"}
        res = provider.get_resource_inst(path, environ)
        if not isinstance(res, HomeFileResource):
            return None
        fileobj = res.get_content()
    except (DAVError, OSError, NotFound):
        return None
    try:
        return FileAnswer.of(fileobj, res.get_content_type(), read_small)
    except BaseException:
        fileobj.close()
        raise
