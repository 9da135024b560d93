"""DAV roots located recently, so a plain GET's file is opened on the reactor, with no thread hop.

A DAV thread locates an account's root the first time (:meth:`LocatedRoots.locate`: the site's
home, the account's identity, the user's folder made if needed, the provider with its site's
state: reads of ``/etc/passwd`` and the database, all blocking) and remembers it for
:data:`LOCATED_TTL` seconds.  While it is remembered, :meth:`LocatedRoots.open_now` opens a
plain GET's file on the calling (reactor) thread: the root's ``stat`` compared with the one
remembered, then the file resolved and opened as WsgiDAV's GET opens it
(:func:`open_answer`), as the account (``setfsuid`` of the calling thread for the length of the
call), ``O_NONBLOCK|O_NOFOLLOW``, checked on its descriptor to be a regular file inside the home
with one link.  That is one path resolution, one open and two ``fstat``: nothing that can wait
on a FIFO, a device or a lock, no folder walk.  A root that changed (site deleted or
re-created) or is not remembered goes to the DAV thread again (:data:`MISSING`).

The first profile of a 64 KB GET (py-spy) showed the hop to a DAV thread, and the reactor
waiting for the GIL those threads held, as most of its cost.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from typing import Optional

from wsgidav.dav_error import DAVError

from apiserver.dav.provider import HomeFileResource
from apiserver.dav.wsgi import FileAnswer
from apiserver.errors import NotFound

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
        with sendfile), None when WsgiDAV must answer, or :data:`MISSING` when the root is not
        remembered or changed."""
        with self._lock:
            located = self._entries.get(account)
        if located is None or located.until <= self.clock.seconds():
            return MISSING
        try:
            info = os.stat(located.root)
        except OSError:
            self.forget(account)
            return MISSING
        if (info.st_dev, info.st_ino) != located.key:
            self.forget(account)
            return MISSING
        return self.open_in(located, path, read_small=False)

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
