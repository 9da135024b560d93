"""The lockdown of dangerous binaries: the web server user may not run rm, cat, perl, python, curl...

ApisCP (docs/SECURITY.md, "Common measures" 1) gives the web server an ACL denying execute on
binaries that "have no reasonable usage from a PHP script" and revokes pyenv/rbenv/goenv, nightly
(``/etc/cron.daily/99lockdown_procs``); the ACL lands on the host's binary and, through the hard
link the template keeps, on the sites' synthetic root alike.  Here:

- ``[security] lockdown_binaries`` are names (shell patterns: ``python3*``) looked up in each folder
  of ``lockdown_search_path``, or absolute paths (patterns too); ``lockdown_trees`` are folders
  (pyenv, rbenv, goenv) whose top folder the web server may then not even enter.  Each is also
  looked for under ``[security] template_root`` when that is not ``/``.
- A link is followed to its file; one file (device and inode) gets one ACL however many names
  lead to it, so a template hard-linked to the host is one change.
- The entry is ``u:WEB:---`` (``setfacl -m u:www-data:0``): no execute, and no read either, so the
  binary cannot be copied somewhere and run from there.  Everyone else (site users, root) keeps
  what the mode bits give them.
- :class:`Lockdown` remembers the last call in ``lockdown.json`` in the state directory (the
  binaries are this machine's, not the cluster's) and re-applies it every
  ``[security] lockdown_interval`` seconds on the injected clock, so a binary a package update
  replaced (a new file without the ACL) is locked again.

Everything but :class:`Lockdown`'s timer is blocking.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import stat
from typing import Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.errors import InvalidArgument, ServerError
from apiserver.sites import acl
from apiserver.sites.records import LockdownEntry
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.sites.lockdown")

STATE_FILE = "lockdown.json"
MAX_PATHS = 256


def targets(names, search_path, trees, template_root: str) -> list:
    """Blocking.  The existing paths the lockdown covers: ``names`` (patterns, or absolute paths)
    in the folders of ``search_path``, the folders ``trees``; each also under ``template_root``."""
    found = []
    for name in names:
        if name.startswith("/"):
            matched = sorted(glob.glob(name))
            folders = [p for p in matched if os.path.isdir(p)]
            if folders:  # a whole folder (/usr/bin) would stop every program: trees are configured on purpose
                raise InvalidArgument(f"lockdown entry {folders[0]!r} is a folder: name binaries, or list the "
                                      "folder in [security] lockdown_trees")
            found.extend(matched)
        elif "/" in name or not name:
            raise InvalidArgument(f"lockdown entry {name!r} is neither a name nor an absolute path")
        else:
            for folder in search_path:
                found.extend(p for p in sorted(glob.glob(os.path.join(glob.escape(folder), name)))
                             if not os.path.isdir(p))
    found.extend(t for t in trees if os.path.isdir(t))
    if template_root and os.path.realpath(template_root) != "/":
        found.extend([os.path.join(template_root, p.lstrip("/")) for p in found
                      if os.path.lexists(os.path.join(template_root, p.lstrip("/")))])
    return list(dict.fromkeys(found))


def apply(paths, web_uid: int) -> list:
    """Blocking.  Deny ``web_uid`` each of ``paths`` (links followed, each file once); returns the
    LockdownEntry of each path."""
    return _entries(paths, web_uid, deny=True)


def status(paths, web_uid: int) -> list:
    """Blocking.  The LockdownEntry of each of ``paths``: whether the web user can neither run nor read it."""
    return _entries(paths, web_uid, deny=False)


def _entries(paths, web_uid: int, deny: bool) -> list:
    """Blocking.  The LockdownEntry of each of ``paths`` that leads to a file or folder, each file
    first denied to ``web_uid`` (once) when ``deny``."""
    denied_files = set()
    out = []
    for path in paths:
        fd, st = _open(path)
        if fd is None:
            continue
        try:
            key = (st.st_dev, st.st_ino)
            if deny and key not in denied_files:
                acl.deny(acl.handle(fd), st, web_uid)
                denied_files.add(key)
            out.append(LockdownEntry(path=path, denied=_denied(fd, st, web_uid)))
        finally:
            os.close(fd)
    return out


def _open(path: str):
    """(O_PATH descriptor, fstat) of the file or folder ``path`` leads to (links followed); (None, None)
    when it is gone or something else."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None, None
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        os.close(fd)
        return None, None
    return fd, st


def _denied(fd: int, st: os.stat_result, web_uid: int) -> bool:
    user = pwd.getpwuid(web_uid)
    gids = acl.user_groups(user.pw_name, user.pw_gid)
    rights = acl.access_of(acl.handle(fd), st)
    return not rights.allows(st, web_uid, gids, acl.EXECUTE) and not rights.allows(st, web_uid, gids, acl.READ)


class Lockdown(service.Service):
    """Apply and re-apply the lockdown (a Service: its timer starts and stops with the server).

    ``clock``: the re-apply timer's; ``run_blocking``: runs the ACL work off the reactor;
    ``web_user``: the web server's user name; ``settings``: the config (``[security]
    lockdown_*``, ``template_root``, read per call); ``state_dir``: where the last call is kept.
    """

    name = "lockdown"

    def __init__(self, clock, run_blocking: Callable, web_user: str, settings, state_dir: str):
        self.clock = clock
        self.run_blocking = run_blocking
        self.web_user = web_user
        self.settings = settings
        self.state_path = os.path.join(state_dir, STATE_FILE)
        self._timer: Optional[WorkTimer] = None

    def startService(self):
        super().startService()
        self._timer = WorkTimer(self.clock, self.settings.get("security", "lockdown_interval"),
                                self._reapply_blocking, self.run_blocking, name="lockdown",
                                on_failure=lambda f: log.failure("re-applying the lockdown of binaries failed", f))
        # The first run is one interval after start: a restart never rewrites ACLs at once.
        self._timer.start(now=False)

    def stopService(self):
        timer, self._timer = self._timer, None
        super().stopService()
        return timer.stop() if timer is not None else None

    def idle(self) -> defer.Deferred:
        """Fires when no re-apply is running or due (at once when the timer is not started)."""
        return self._timer.idle() if self._timer is not None else defer.succeed(None)

    def lock(self, names=None) -> defer.Deferred:
        """Deny the web server user ``names`` (None: the configured list); a Deferred list of LockdownEntry."""
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > MAX_PATHS:
                return defer.fail(InvalidArgument(f"paths must be a list of up to {MAX_PATHS} names or absolute paths"))
            if not names:
                return defer.fail(InvalidArgument("paths is empty: give names or absolute paths, or null for "
                                                  "[security] lockdown_binaries"))
        return self.run_blocking(self._lock_blocking, names)

    def status(self, names=None) -> defer.Deferred:
        """A Deferred list of LockdownEntry of ``names`` (None: the last call's, else the configured list)."""
        return self.run_blocking(self._status_blocking, names)

    # --- blocking ---------------------------------------------------------------------------
    def _lock_blocking(self, names) -> list:
        if os.geteuid() != 0:
            raise ServerError("the lockdown changes system files' ACLs: the server must run as root")
        entries = apply(self._targets(names), self._web_uid())
        self._remember(names)
        return entries

    def _status_blocking(self, names) -> list:
        if names is None:
            names = self._remembered()
        return status(self._targets(names), self._web_uid())

    def _reapply_blocking(self) -> Optional[list]:
        """Blocking.  The timer's run: the last call again, nothing when there was none."""
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                json.load(fh)
        except FileNotFoundError:
            return None  # never locked down on this machine
        return self._lock_blocking(self._remembered())

    def _targets(self, names) -> list:
        s = self.settings
        return targets(s.get("security", "lockdown_binaries") if names is None else names,
                       s.get("security", "lockdown_search_path"), s.get("security", "lockdown_trees"),
                       s.get("security", "template_root"))

    def _remember(self, names) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"paths": names}, fh)
        os.replace(tmp, self.state_path)

    def _remembered(self):
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                names = json.load(fh).get("paths")
        except (FileNotFoundError, ValueError, AttributeError):
            return None
        return names if isinstance(names, list) else None

    def _web_uid(self) -> int:
        try:
            return pwd.getpwnam(self.web_user).pw_uid
        except KeyError:
            raise ServerError(f"the web server user {self.web_user!r} does not exist; set [web] user") from None
