"""Fortification: what the web server user may write in a site's folder, by POSIX ACLs.

A *profile* (:mod:`apiserver.sites.profiles`, or the folder's Web App Manifest:
:mod:`apiserver.sites.manifest`) says which paths of an application the web server may write
(``max``) and a wider set for updates and plugin installs (``min``).  Modes (api.md): ``max``,
``min``, ``learn`` (everything writable for a window, then ``max`` with what was learned),
``write`` (everything writable for a window, then the mode the folder had before: ``max``,
``min``, ``release`` or ``reset``), ``release`` (everything), ``reset`` (nothing, and what was
learned is forgotten).  Writable means an access
ACL ``u:WEB:rwx`` on the entry plus, on folders, the default ACL so that new entries inherit it;
reading stays with the ordinary mode bits.  Outside the writable paths the web server user has
no ACL entry, and files it owns there are given to the site's owner (a file's owner can always
chmod it, so ownership would undo the fortification).  The manifest is never granted.

Windows live in the database (``fortifications``, with the mode a write window returns to) on
the injected clock, closed by one :class:`~apiserver.timers.WorkTimer` (``Fortifier.windows``)
due at the earliest end on record: a restart closes overdue windows at once and makes the timer
due at the next one; a test advancing the clock waits for ``windows.idle()``.  When a learn window closes, what
the web server user made in it (:mod:`apiserver.sites.learning`) is added to what the folder
learned before, kept in its row, and ``max`` applies: the profile's paths plus the learned ones.

:class:`Fortifier` is ``app.fortifier``: its public methods return Deferreds and run the disk
and database work through the injected ``run_blocking``; its timer runs on the reactor.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pwd
import stat
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.errors import InvalidArgument, NotFound, ServerError
from apiserver.sites import acl, manifest
from apiserver.sites.learning import added_to, filesystem_now_ns, learn, under_any
from apiserver.sites.home import DOCUMENT_ROOT, SiteHome, display_path, is_inside, split_site_path
from apiserver.sites.walk import PATH_FLAGS, Folder, open_below, open_file, open_folder, walk
from apiserver.sites.profiles import Profile, detect, expand
from apiserver.sites.records import FortificationInfo
from apiserver.storage import utcnow
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.sites.fortify")

MODES = ("max", "min", "learn", "write", "release", "reset")
#: Modes that end by themselves, and the [security] key giving their length in seconds.
WINDOWS = {"learn": "learning_window", "write": "write_window"}
#: What a write window may return to (anything else, or nothing on record, returns to max).
RESTORABLE = ("max", "min", "release", "reset")
#: The profile entry meaning "the fortified folder and everything under it".
EVERYTHING = "./"
#: Retry a window whose closing failed (disk or database error) after this many seconds.
RETRY_SECONDS = 60.0
MAX_PATH = 512


@dataclasses.dataclass
class _Target:
    """The fortified folder of a call: its host path and its key (relative to the document root)."""

    home: SiteHome
    folder: str
    key: str


class Fortifier(service.Service):
    """Fortify site folders and keep their learn/write windows (a Service: start, stop).

    ``storage``: the database; ``clock``: what windows are measured on (``callLater``,
    ``seconds``); ``run_blocking``: runs a blocking callable off the reactor, returns a Deferred;
    ``site_homes``: finds a site's home when a window closes; ``web_user``: the web server's user
    name; ``settings``: the config (``[security] learning_window``/``write_window``, read per call).
    """

    name = "fortifier"

    def __init__(self, storage, clock, run_blocking: Callable, site_homes, web_user: str, settings):
        self.storage = storage
        self.clock = clock
        self.run_blocking = run_blocking
        self.site_homes = site_homes
        self.web_user = web_user
        self.settings = settings
        self._locks: dict = {}     # domain -> DeferredLock: one change per site at a time
        #: Closes every window that is due, then makes itself due at the next end on record.
        self.windows = WorkTimer(clock, None, self._close_due, None, name="fortification windows",
                                 on_failure=self._windows_failed)

    # --- service ----------------------------------------------------------------------------
    def startService(self):
        super().startService()
        return self.start()

    def stopService(self):
        super().stopService()
        return self.stop()

    def start(self) -> defer.Deferred:
        """Close overdue windows at once and make the timer due at the next end on record
        (fires when the overdue ones are closed)."""
        return self.windows.run_now()

    def stop(self) -> defer.Deferred:
        """Stop the timer (the windows stay in the database for the next start); fires when a
        run under way has ended."""
        return self.windows.stop()

    # --- API --------------------------------------------------------------------------------
    def fortify(self, home: SiteHome, path: str, mode: str) -> defer.Deferred:
        """Set ``mode`` on the folder ``path`` of ``home``'s document root; a Deferred True."""
        if not isinstance(mode, str) or mode.strip().lower() not in MODES:
            return defer.fail(InvalidArgument(f"unknown Fortification mode {display_path(str(mode))!r}: "
                                              f"use one of {', '.join(MODES)}"))
        mode = mode.strip().lower()
        now = self.clock.seconds()

        def scheduled(until):
            if until is not None:
                self.windows.run_after(until - self.clock.seconds())
            return True

        d = self._lock(home.domain).run(self.run_blocking, self._fortify_blocking, home, path, mode, now)
        return d.addCallback(scheduled)

    def info(self, home: SiteHome, path: str) -> defer.Deferred:
        """A Deferred :class:`FortificationInfo` of the folder ``path`` of ``home``'s document root."""
        return self.run_blocking(self._info_blocking, home, path)

    # --- the window timer (reactor thread) -------------------------------------------------
    @defer.inlineCallbacks
    def _close_due(self):
        """One run of :attr:`windows`: close every window that has ended, each under its site's
        lock; the timer is then due at the next end on record (a failed close: a retry)."""
        windows = yield self.run_blocking(self._open_windows)
        now = self.clock.seconds()
        pending = [until for _domain, _key, until in windows if until > now + 1e-6]
        closing = []
        for domain, key, until in windows:
            if until <= now + 1e-6:
                d = self._lock(domain).run(self.run_blocking, self._close_blocking, domain, key, now)
                closing.append(d.addErrback(self._close_failed, domain, key, pending))
        yield defer.DeferredList(closing)
        if pending:
            self.windows.run_after(max(0.0, min(pending) - self.clock.seconds()))

    def _close_failed(self, failure, domain: str, key: str, pending: list) -> None:
        log.failure("closing the Fortification window of {domain} {key!r} failed; retrying in {retry}s",
                    failure, domain=domain, key=key, retry=RETRY_SECONDS)
        pending.append(self.clock.seconds() + RETRY_SECONDS)

    def _windows_failed(self, failure) -> None:
        """The windows could not be read (the database is down): try again in RETRY_SECONDS."""
        log.failure("cannot read the Fortification windows; retrying in {retry}s", failure, retry=RETRY_SECONDS)
        self.windows.run_after(RETRY_SECONDS)

    def _lock(self, domain: str) -> defer.DeferredLock:
        lock = self._locks.get(domain)
        if lock is None:
            lock = self._locks[domain] = defer.DeferredLock()
        return lock

    # --- blocking work ----------------------------------------------------------------------
    def _fortify_blocking(self, home: SiteHome, path: str, mode: str, now: float):
        """Blocking.  Apply ``mode``; returns the window's end or None."""
        target = self._target(home, path)
        profile = self._profile(target.folder, strict=mode in ("max", "min"))
        app_name = profile.name if profile else "unknown"
        site_id, row = self._load(home.domain, target.key)
        learned = _learned(row)
        if mode in ("max", "min") and profile is None and not learned:
            mode = "learn"  # nothing known about this application: learn what it writes
        if mode == "reset":
            learned = []  # reset forgets what was learned
        until = None
        if mode in WINDOWS:
            until = now + self.settings.get("security", WINDOWS[mode])
        restore = _restore_mode(row) if mode == "write" else None
        # The window is on record before the folder is opened: a crash in between still closes it.
        self._save(site_id, target.key, app_name, mode, until, None, learned, now, restore)
        self._apply(target, self._writable(mode, profile, learned))
        if mode == "learn":  # learning counts what changes from now on (opening changed every ctime)
            self._save(site_id, target.key, app_name, mode, until, filesystem_now_ns(home.root), learned, now)
        if mode == "min":
            self._give_control_files(target, profile)
        return until

    def _give_control_files(self, target: _Target, profile: Optional[Profile]) -> None:
        """Blocking.  min: the profile's control files become the web user's (see give_to_web)."""
        for rel in profile.control_files if profile is not None else ():
            give_to_web(target.folder, rel, target.home.owner, self._web_uid())

    def _close_blocking(self, domain: str, key: str, now: float) -> None:
        """Blocking.  Close the window of ``domain``'s folder ``key`` when it is due: learn, then
        max; write, then the mode the folder had before the window."""
        try:
            site_id, row = self._load(domain, key)
        except NotFound:
            return  # the site is gone
        if row is None or row["until"] is None or row["until"] > now + 1e-6:
            return  # replaced by a newer mode or window, which has its own timer
        try:
            home = self.site_homes.get(domain)
            target = self._target(home, key)
            profile = self._profile(target.folder, strict=False)
        except (NotFound, InvalidArgument) as exc:
            log.warn("Fortification window of {domain} {key!r} closed without a folder: {why}",
                     domain=domain, key=key, why=exc)
            self._delete(row["id"])
            return
        learned = _learned(row)
        mode = "max"
        if row["mode"] == "learn":
            known = profile.max if profile else ()
            # A control file is the web user's because min made it so, not because it wrote it.
            made = [e for e in learn(target.folder, self._web_uid(), home.real_root, row["learn_since_ns"] or 0)
                    if not profile or e not in profile.control_files]
            learned = added_to(known, learned, made)
        elif row["mode"] == "write":
            mode = _restore_mode(row)
        self._apply(target, self._writable(mode, profile, learned))
        if mode == "min":
            self._give_control_files(target, profile)
        self._save(site_id, key, profile.name if profile else "unknown", mode, None, None, learned, now)

    def _info_blocking(self, home: SiteHome, path: str) -> FortificationInfo:
        """Blocking.  The folder's FortificationInfo from its row and what exists on disk."""
        target = self._target(home, path)
        profile = self._profile(target.folder, strict=False)
        app = profile.name if profile else "unknown"
        _site_id, row = self._load(home.domain, target.key)
        if row is None:
            return FortificationInfo(app=app, mode="none", writable=[], until=None, learned=[])
        learned = _learned(row)
        until = None
        if row["until"] is not None:
            until = datetime.datetime.fromtimestamp(row["until"], datetime.timezone.utc).replace(tzinfo=None)
        return FortificationInfo(app=app, mode=row["mode"],
                                 writable=self._shown(target, self._writable(row["mode"], profile, learned)),
                                 until=until, learned=self._shown(target, learned))

    def _shown(self, target: _Target, entries) -> list:
        """Blocking.  The site paths of the profile ``entries`` that exist in the folder."""
        shown = []
        for entry in expand(target.folder, entries):
            host = target.folder if entry == EVERYTHING else os.path.join(target.folder, entry.rstrip("/"))
            # Only what lies in the folder itself: through a link, lexists would say whether a
            # host path (named by a learned entry) exists.
            if is_inside(os.path.realpath(host), target.folder) and os.path.lexists(host):
                shown.append(target.home.site_path(host))
        return sorted(set(shown))

    def _profile(self, folder: str, strict: bool = True) -> Optional[Profile]:
        """Blocking.  The folder's Web App Manifest as a profile, else the detected profile, else None.
        A bad manifest is an error when ``strict``, else (modes that need no profile, windows that
        close) it is logged and detection decides."""
        try:
            found = manifest.load(folder, self._web_uid())
        except manifest.ManifestError as exc:
            if strict:
                raise
            log.warn("{folder}: {why}; detecting the application instead", folder=folder, why=exc)
            found = None
        return found.profile() if found is not None else detect(folder)

    def write_manifest(self, home: SiteHome, path: str) -> defer.Deferred:
        """A Deferred site path of the ``.webapp.yml`` written from the folder's profile and what it learned."""
        return self._lock(home.domain).run(self.run_blocking, self._write_manifest_blocking, home, path)

    def _write_manifest_blocking(self, home: SiteHome, path: str) -> str:
        target = self._target(home, path)
        profile = self._profile(target.folder)
        _site_id, row = self._load(home.domain, target.key)
        learned = _learned(row)
        if profile is None and not learned:
            raise InvalidArgument("nothing to write: the application is not recognised and nothing was learned "
                                  "(fortify learn first)")
        max_paths = list(dict.fromkeys((profile.max if profile else ()) + tuple(learned)))
        min_paths = [p for p in (profile.min if profile else ()) if p not in max_paths]
        text = manifest.dump(profile.name if profile else "custom", max_paths, min_paths)
        manifest.parse(text)  # what is written is what will be read
        manifest.write_new(target.folder, text, home.owner)
        return home.site_path(os.path.join(target.folder, manifest.FILENAME))

    def _open_windows(self) -> list:
        """Blocking.  (domain, key, until) of every learn or write window on record."""
        t = self.storage.tables
        with self.storage.read() as conn:
            rows = conn.execute(sa.select(t.sites.c.domain, t.fortifications.c.path, t.fortifications.c.until)
                                .join(t.sites, t.sites.c.id == t.fortifications.c.site_id)
                                .where(t.fortifications.c.until.is_not(None))).all()
        return [(r.domain, r.path, r.until) for r in rows]

    @staticmethod
    def _writable(mode: str, profile: Optional[Profile], learned: list) -> list:
        """The profile entries writable in ``mode``: what was learned is always added, never replacing."""
        if mode in ("release", "learn", "write"):
            return [EVERYTHING]
        if mode == "reset":
            return []
        paths = (profile.max if mode == "max" else profile.min) if profile else ()
        return list(dict.fromkeys(tuple(paths) + tuple(learned)))

    def _web_uid(self) -> int:
        try:
            return pwd.getpwnam(self.web_user).pw_uid
        except KeyError:
            raise ServerError(f"the web server user {self.web_user!r} does not exist; set [web] user") from None

    def _target(self, home: SiteHome, path: str) -> _Target:
        """Blocking.  The folder ``path`` names: relative to the document root, or a site path inside it."""
        if not isinstance(path, str):
            raise InvalidArgument("path must be a string")
        if len(path) > MAX_PATH:
            raise InvalidArgument(f"path is longer than {MAX_PATH} characters")
        parts = split_site_path(path)
        root_parts = DOCUMENT_ROOT.strip("/").split("/")
        if path.startswith("/"):
            if parts[:len(root_parts)] != root_parts:
                raise InvalidArgument(f"path {display_path(path)!r} is not inside the document root {DOCUMENT_ROOT}")
            parts = parts[len(root_parts):]
        docroot = home.resolve(DOCUMENT_ROOT, must_exist=True)
        folder = home.resolve("/".join([DOCUMENT_ROOT] + parts), must_exist=True)
        if not is_inside(folder, docroot):
            raise InvalidArgument(f"path {display_path(path)!r} leads out of the document root")
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise InvalidArgument(f"path {display_path(path)!r} is not a folder")
        key = os.path.relpath(folder, docroot)
        return _Target(home, folder, "" if key == "." else key)

    def _apply(self, target: _Target, writable: list) -> None:
        """Blocking.  Make exactly ``writable`` (profile entries) writable for the web server user."""
        home = target.home
        apply_writable(target.folder, expand(target.folder, writable), home.owner, self._web_uid(),
                       shown=home.site_path(target.folder))

    # --- storage ----------------------------------------------------------------------------
    def _load(self, domain: str, key: str):
        """Blocking.  (site id, the folder's row as a mapping or None); NotFound for an unknown site."""
        t = self.storage.tables
        with self.storage.read() as conn:
            site_id = conn.execute(sa.select(t.sites.c.id).where(t.sites.c.domain == domain)).scalar()
            if site_id is None:
                raise NotFound(f"unknown site {domain!r}")
            row = conn.execute(sa.select(t.fortifications).where(
                t.fortifications.c.site_id == site_id, t.fortifications.c.path == key)).mappings().first()
        return site_id, row

    def _save(self, site_id: int, key: str, app: str, mode: str, until, since, learned, now: float,
              restore: Optional[str] = None) -> None:
        """Blocking.  Insert or update the folder's row (``restore``: where a write window returns)."""
        t = self.storage.tables
        values = dict(app=app, mode=mode, until=until, learn_since_ns=since, restore_mode=restore,
                      profile=json.dumps(learned) if learned else None, updated_at=utcnow(_At(now)))
        with self.storage.write() as conn:
            updated = conn.execute(t.fortifications.update().where(
                t.fortifications.c.site_id == site_id, t.fortifications.c.path == key).values(**values)).rowcount
            if not updated:
                conn.execute(t.fortifications.insert().values(site_id=site_id, path=key, **values))

    def _delete(self, row_id: int) -> None:
        """Blocking.  Forget a folder's row."""
        t = self.storage.tables
        with self.storage.write() as conn:
            conn.execute(t.fortifications.delete().where(t.fortifications.c.id == row_id))


class _At:
    """A clock frozen at ``seconds`` (for utcnow of a time taken on the reactor)."""

    def __init__(self, seconds: float):
        self._seconds = seconds

    def seconds(self) -> float:
        return self._seconds


def manageable_uids(owner_uid: int, web_uid: int) -> set:
    """Whose files Fortification changes: the site owner's and the web server's (as root), else only our own.

    Anything else in a site (a root-owned file, a hard link to a system file) is never touched.
    """
    euid = os.geteuid()
    return {owner_uid, web_uid} if euid == 0 else {euid}


def apply_writable(folder: str, writable: list, owner, web_uid: int, shown: str = ".") -> None:
    """Blocking.  Make exactly ``writable`` (profile entries, relative to the folder ``folder``)
    writable for the web server user ``web_uid``; ``owner`` (a FileOwner) gets back what it made
    elsewhere.  ``shown`` names the folder in errors (as the site sees it).

    Each entry is visited once, by descriptors without following links
    (:func:`apiserver.sites.walk.walk`).  The first walk goes over the tree outside the writable
    folders and takes back: every ACL entry of the web user goes, and what it owns is given to
    the owner, each folder before it is listed, so that the web user can no longer add to a
    folder the walk is reading, nor move one of the writable folders away.  Then the profile's
    missing folders are made, and a second walk grants over each writable folder, taking back
    there only what is not granted.
    Files and folders of other owners (a root-owned file, a hard link to a system file) are never
    touched; a file with several hard links is never granted (it may be a protected file under
    another name: the web user links wp-config.php into uploads while released).
    """
    uids = manageable_uids(owner.uid, web_uid)
    recursive = {e.rstrip("/") or "." for e in writable if e.endswith("/")}
    single = {e for e in writable if not e.endswith("/")}

    def covered(rel: str) -> bool:
        return "." in recursive or under_any(rel, recursive)

    def is_writable(rel: str) -> bool:
        return covered(rel) or rel in single

    roots = sorted(r for r in recursive if r == "." or not covered(os.path.dirname(r)))
    top = open_folder(folder)
    try:
        if "." not in recursive:
            _take_back(top, folder, shown, uids, owner, web_uid, is_writable, set(roots))
        for entry in writable:  # a profile's folders that do not exist yet are made (as the owner)
            if entry.endswith("/") and entry != EVERYTHING:
                _make_folder(top, entry.rstrip("/"), owner)
        for root in roots:
            _grant_tree(top, folder, root, shown, uids, web_uid, single)
        for rel in sorted(single):
            if not covered(rel):
                _grant_one(top, rel, uids, web_uid)
    finally:
        os.close(top)


def _take_back(top: int, folder: str, shown: str, uids: set, owner, web_uid: int, is_writable,
               writable_roots: set) -> None:
    """Blocking.  The first walk of :func:`apply_writable`: no ACL entry of the web user is left and
    it owns nothing outside the writable entries, except in ``writable_roots`` (folders relative
    to the fortified one), which it does not enter: the granting walk goes there."""

    def enter(here: Folder) -> None:
        st = here.stat
        if st.st_uid in uids:
            acl.revoke(here.fd, st, web_uid)
            if st.st_uid == web_uid and not is_writable(here.rel or "."):
                _give_back(here.fd, owner, here.rel or ".")

    for here in walk(top, folder, shown=shown, enter=enter):
        if writable_roots:
            here.subfolders = [name for name in here.subfolders if here.child_rel(name) not in writable_roots]
        for entry in here.entries:
            if not entry.is_file(follow_symlinks=False):
                continue  # folders are entered by the walk; links, sockets, FIFOs are never touched
            fd, target = open_file(here.fd, entry.name)
            if fd < 0:
                continue  # gone since the listing
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid not in uids:
                    continue  # swapped for something else, or another owner's file: never touched
                acl.revoke(target, st, web_uid)  # takes rights away only, wherever the file's other names are
                rel = here.child_rel(entry.name)
                if st.st_uid == web_uid and not is_writable(rel) and st.st_nlink == 1:  # else maybe not the home's
                    _give_back(target, owner, rel)
            finally:
                os.close(fd)


def _grant_tree(top: int, folder: str, root: str, shown: str, uids: set, web_uid: int, single: set) -> None:
    """Blocking.  Grant the web user the folder ``root`` (relative to the fortified folder) and
    everything in it; a folder named alone in ``single`` gets no inheritance.  No walk took back
    here first, so what is not granted loses the web user's entry: a file with several hard links
    (it may be a protected file under another name), a single folder's default entry."""
    try:
        root_fd = open_below(top, root) if root != "." else os.dup(top)
    except OSError:
        return  # no such folder (or a link in its place): nothing to grant
    prefix = "" if root == "." else root

    def enter(here: Folder) -> None:
        st = here.stat
        if st.st_uid in uids:
            rel = f"{prefix}/{here.rel}".strip("/") if prefix else (here.rel or ".")
            if rel in single:
                acl.revoke(here.fd, st, web_uid)
            acl.grant_folder(here.fd, st, web_uid, inherit=rel not in single)

    try:
        for here in walk(root_fd, os.path.join(folder, prefix), shown=shown, enter=enter):
            for entry in here.entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                fd, target = open_file(here.fd, entry.name)
                if fd < 0:
                    continue
                try:
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode) and st.st_uid in uids:
                        # the manifest says what the web server may write: never the web server's to edit
                        if st.st_nlink == 1 and not (root == "." and not here.rel and entry.name == manifest.FILENAME):
                            acl.grant_file(target, st, web_uid)
                        else:
                            acl.revoke(target, st, web_uid)
                finally:
                    os.close(fd)
    finally:
        os.close(root_fd)


def _grant_one(top: int, rel: str, uids: set, web_uid: int) -> None:
    """Blocking.  Grant the web user the one entry ``rel``: a folder without inheritance, or a file."""
    try:
        fd = open_below(top, rel, PATH_FLAGS)
    except OSError:
        return  # no such entry (or a link on the way): nothing to grant
    try:
        st = os.fstat(fd)
        if st.st_uid not in uids:
            return
        if stat.S_ISDIR(st.st_mode):
            acl.grant_folder(acl.handle(fd), st, web_uid, inherit=False)
        elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            acl.grant_file(acl.handle(fd), st, web_uid)
    finally:
        os.close(fd)


def give_to_web(folder: str, rel: str, owner, web_uid: int) -> None:
    """Blocking.  The owner's file ``rel`` becomes the web user's, the owner keeping read and write by
    an ACL entry (ApisCP's control files: WordPress compares the owner of wp-admin/includes/file.php
    with the owner of a file it creates to decide to write directly instead of asking for FTP
    credentials).  Only as root, only a plain file with one link, never through a link; the next
    max or reset gives it back like everything else the web user owns outside its paths."""
    if os.geteuid() != 0:
        return
    top = open_folder(folder)
    try:
        fd = open_below(top, rel, PATH_FLAGS)
    except OSError:
        return
    finally:
        os.close(top)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == owner.uid:
            target = acl.handle(fd)
            os.chown(target, web_uid, st.st_gid)
            acl.grant_file(target, os.fstat(fd), owner.uid)
    finally:
        os.close(fd)


def _give_back(target, owner, rel: str) -> None:
    """Blocking.  The owner gets what the web user made, without group or other write (``target``:
    an open descriptor, or the handle path of an ``O_PATH`` one)."""
    try:
        os.chown(target, owner.uid, owner.gid)
        # Read the mode again: the chown cleared setuid and setgid, which must stay cleared.
        os.chmod(target, stat.S_IMODE(os.stat(target).st_mode) & ~0o022)
    except PermissionError:
        log.warn("cannot give {rel} to {owner}: the server does not run as root", rel=rel, owner=owner.name)


def _restore_mode(row) -> str:
    """The mode a write window opened now on the folder's ``row`` returns to: the folder's mode,
    or during a write window the one that window returns to; max when none is on record (a
    folder never fortified, or a learn window, which would have ended in max)."""
    if row is None:
        return "max"
    mode = row["restore_mode"] if row["mode"] == "write" else row["mode"]
    return mode if mode in RESTORABLE else "max"


def _learned(row) -> list:
    """The learned entries of a folder's row (its ``profile`` column), [] when none."""
    return list(json.loads(row["profile"])) if row is not None and row["profile"] else []


def _make_folder(top: int, rel: str, owner) -> None:
    """Blocking.  Make the profile folder ``rel`` under the folder open at ``top`` when its parent
    exists (as the owner); never through a link."""
    parent, _sep, name = rel.rpartition("/")
    try:
        fd = open_below(top, parent) if parent else os.dup(top)
    except OSError:
        return  # no such parent (or a link): this tree does not have that folder
    try:
        try:
            os.mkdir(name, 0o755, dir_fd=fd)
        except FileExistsError:
            return
        if os.geteuid() == 0:
            os.chown(name, owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
