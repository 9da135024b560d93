"""Fortification: what the web server user may write in a site's folder, by POSIX ACLs.

A *profile* says which paths of an application the web server may write (``max``) and a wider
set for updates and plugin installs (``min``), and how the application is recognised from its
files.  Modes (api.md): ``max``, ``min``, ``learn`` and ``write`` (everything writable for a
window, then ``max``), ``release`` (everything), ``reset`` (nothing).  Writable means an access
ACL ``u:WEB:rwx`` on the entry plus, on folders, the default ACL so that new entries inherit it;
reading stays with the ordinary mode bits.  Outside the writable paths the web server user has
no ACL entry, and files it owns there are given to the site's owner (a file's owner can always
chmod it, so ownership would undo the fortification).

Windows live in the database (``fortifications``) on the injected clock: a restart closes
overdue windows at once and sets a timer for pending ones.  A learn window records the
filesystem's time when it opens; when it closes, what the web server user owns or modified
since becomes the folder's learned profile and ``max`` applies.

:class:`Fortifier` is ``app.fortifier``: its public methods return Deferreds and run the disk
and database work through the injected ``run_blocking``; its timers run on the reactor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pwd
import stat
import tempfile
from typing import Callable, Iterable, Optional

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.errors import InvalidArgument, NotFound, ServerError
from apiserver.sites import acl
from apiserver.sites.home import DOCUMENT_ROOT, SiteHome, display_path, is_inside, split_site_path, walk_inside
from apiserver.sites.records import FortificationInfo
from apiserver.storage import utcnow

log = Logger(namespace="apiserver.sites.fortify")

MODES = ("max", "min", "learn", "write", "release", "reset")
#: Modes that end by themselves, and the [security] key giving their length in seconds.
WINDOWS = {"learn": "learning_window", "write": "write_window"}
#: The profile entry meaning "the fortified folder and everything under it".
EVERYTHING = "./"
#: Retry a window whose closing failed (disk or database error) after this many seconds.
RETRY_SECONDS = 60.0
MAX_PATH = 512


@dataclasses.dataclass(frozen=True)
class Profile:
    """An application: how it is recognised and the paths it may write.

    ``markers`` is a tuple of alternatives, each a tuple of paths that must all exist.  Paths
    ending in ``/`` are folders writable with everything under them.
    """

    name: str
    markers: tuple
    max: tuple
    min_extra: tuple

    @property
    def min(self) -> tuple:
        return self.max + self.min_extra

    def matches(self, folder: str) -> bool:
        return any(all(os.path.lexists(os.path.join(folder, m)) for m in group) for group in self.markers)


#: Most specific first: a Magento or Laravel tree is checked before the looser markers.
PROFILES = (
    Profile("magento", (("app/etc/env.php", "bin/magento"),),
            max=("var/", "pub/media/", "pub/static/", "generated/"),
            min_extra=("app/etc/", "app/code/", "vendor/")),
    Profile("laravel", (("artisan", "bootstrap/app.php"),),
            max=("storage/", "bootstrap/cache/"),
            min_extra=("public/", "vendor/")),
    Profile("drupal", (("core/lib/Drupal.php",), ("sites/default/settings.php",)),
            max=("sites/default/files/",),
            min_extra=("modules/", "themes/", "libraries/", "sites/all/")),
    Profile("joomla", (("configuration.php", "libraries/joomla"),),
            max=("images/", "cache/", "tmp/", "logs/", "administrator/cache/", "administrator/logs/"),
            min_extra=("media/", "plugins/", "modules/", "components/", "templates/", "language/",
                       "administrator/components/", "administrator/modules/", "administrator/templates/",
                       "administrator/language/")),
    Profile("wordpress", (("wp-config.php",), ("wp-includes/version.php",)),
            max=("wp-content/uploads/", "wp-content/cache/"),
            min_extra=("wp-content/plugins/", "wp-content/themes/", "wp-content/upgrade/", "wp-content/languages/")),
)
PROFILE_NAMES = tuple(p.name for p in PROFILES)


def detect(folder: str) -> Optional[Profile]:
    """Blocking.  The profile whose marker files ``folder`` holds, or None."""
    for profile in PROFILES:
        if profile.matches(folder):
            return profile
    return None


@dataclasses.dataclass
class _Entry:
    rel: str        # relative to the fortified folder ('.' for the folder itself)
    is_dir: bool
    uid: int
    fd: int         # O_PATH descriptor of the entry (-1 once closed)
    links: int = 1  # hard links to a file


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
        self._timers: dict = {}    # (domain, key) -> IDelayedCall
        self._locks: dict = {}     # domain -> DeferredLock: one change per site at a time

    # --- service ----------------------------------------------------------------------------
    def startService(self):
        super().startService()
        return self.start()

    def stopService(self):
        self.stop()
        return super().stopService()

    def start(self) -> defer.Deferred:
        """Close overdue windows at once and set a timer for each pending one."""
        d = self.run_blocking(self._open_windows)
        d.addCallback(self._schedule_all)
        d.addErrback(lambda f: log.failure("cannot read or close Fortification windows", f))
        return d

    def stop(self) -> None:
        """Cancel the timers (the windows stay in the database for the next start)."""
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

    # --- API --------------------------------------------------------------------------------
    def fortify(self, home: SiteHome, path: str, mode: str) -> defer.Deferred:
        """Set ``mode`` on the folder ``path`` of ``home``'s document root; a Deferred True."""
        if not isinstance(mode, str) or mode.strip().lower() not in MODES:
            return defer.fail(InvalidArgument(f"unknown Fortification mode {display_path(str(mode))!r}: "
                                              f"use one of {', '.join(MODES)}"))
        mode = mode.strip().lower()
        now = self.clock.seconds()

        def scheduled(result):
            key, until = result
            self._schedule(home.domain, key, until)
            return True

        d = self._lock(home.domain).run(self.run_blocking, self._fortify_blocking, home, path, mode, now)
        return d.addCallback(scheduled)

    def info(self, home: SiteHome, path: str) -> defer.Deferred:
        """A Deferred :class:`FortificationInfo` of the folder ``path`` of ``home``'s document root."""
        return self.run_blocking(self._info_blocking, home, path)

    # --- timers (reactor thread) ----------------------------------------------------------
    def _schedule_all(self, windows: list) -> defer.Deferred:
        """Timers for pending windows; overdue ones close now (fires when they are closed)."""
        closing = [self._schedule(domain, key, until) for domain, key, until in windows]
        return defer.gatherResults([d for d in closing if d is not None])

    def _schedule(self, domain: str, key: str, until: Optional[float]) -> Optional[defer.Deferred]:
        old = self._timers.pop((domain, key), None)
        if old is not None and old.active():
            old.cancel()
        if until is None:
            return None
        delay = until - self.clock.seconds()
        if delay <= 0:
            return self._close(domain, key)
        self._timers[(domain, key)] = self.clock.callLater(delay, self._close, domain, key)
        return None

    def _close(self, domain: str, key: str) -> defer.Deferred:
        self._timers.pop((domain, key), None)
        now = self.clock.seconds()
        d = self._lock(domain).run(self.run_blocking, self._close_blocking, domain, key, now)

        def failed(failure):
            log.failure("closing the Fortification window of {domain} {key!r} failed; retrying in {retry}s",
                        failure, domain=domain, key=key, retry=RETRY_SECONDS)
            self._schedule(domain, key, self.clock.seconds() + RETRY_SECONDS)

        return d.addErrback(failed)

    def _lock(self, domain: str) -> defer.DeferredLock:
        lock = self._locks.get(domain)
        if lock is None:
            lock = self._locks[domain] = defer.DeferredLock()
        return lock

    # --- blocking work ----------------------------------------------------------------------
    def _fortify_blocking(self, home: SiteHome, path: str, mode: str, now: float):
        """Blocking.  Apply ``mode``; returns (key, window end or None)."""
        target = self._target(home, path)
        profile = detect(target.folder)
        app_name = profile.name if profile else "unknown"
        site_id, row = self._load(home.domain, target.key)
        learned = json.loads(row["profile"]) if row is not None and row["profile"] else None
        if mode in ("max", "min") and profile is None and learned is None:
            mode = "learn"  # nothing known about this application: learn what it writes
        until = since = None
        if mode in WINDOWS:
            until = now + self.settings.get("security", WINDOWS[mode])
        if mode == "learn":
            since = filesystem_now_ns(home.root)  # the home is outside every fortified folder
            learned = None
        # The window is on record before the folder is opened: a crash in between still closes it.
        self._save(site_id, target.key, app_name, mode, until, since, learned, now)
        self._apply(target, self._writable(mode, profile, learned))
        return target.key, until

    def _close_blocking(self, domain: str, key: str, now: float) -> None:
        """Blocking.  Close the window of ``domain``'s folder ``key`` when it is due: learn, then max."""
        try:
            site_id, row = self._load(domain, key)
        except NotFound:
            return  # the site is gone
        if row is None or row["until"] is None or row["until"] > now + 1e-6:
            return  # replaced by a newer mode or window, which has its own timer
        try:
            home = self.site_homes.get(domain)
            target = self._target(home, key)
        except (NotFound, InvalidArgument) as exc:
            log.warn("Fortification window of {domain} {key!r} closed without a folder: {why}",
                     domain=domain, key=key, why=exc)
            self._delete(row["id"])
            return
        profile = detect(target.folder)
        learned = json.loads(row["profile"]) if row["profile"] else None
        if row["mode"] == "learn":
            learned = learn(target.folder, self._web_uid(), row["learn_since_ns"] or 0, home.real_root)
        self._apply(target, self._writable("max", profile, learned))
        self._save(site_id, key, profile.name if profile else "unknown", "max", None, None, learned, now)

    def _info_blocking(self, home: SiteHome, path: str) -> FortificationInfo:
        """Blocking.  The folder's FortificationInfo from its row and what exists on disk."""
        target = self._target(home, path)
        profile = detect(target.folder)
        _site_id, row = self._load(home.domain, target.key)
        if row is None:
            return FortificationInfo(app=profile.name if profile else "unknown", mode="none", writable=[], until=None)
        learned = json.loads(row["profile"]) if row["profile"] else None
        entries = self._writable(row["mode"], profile, learned)
        writable = []
        for entry in entries:
            host = target.folder if entry == EVERYTHING else os.path.join(target.folder, entry.rstrip("/"))
            # Only what lies in the folder itself: through a link, lexists would say whether a
            # host path (named by a learned entry) exists.
            if is_inside(os.path.realpath(host), target.folder) and os.path.lexists(host):
                writable.append(home.site_path(host))
        until = None
        if row["until"] is not None:
            until = datetime.datetime.fromtimestamp(row["until"], datetime.timezone.utc).replace(tzinfo=None)
        return FortificationInfo(app=profile.name if profile else "unknown", mode=row["mode"],
                                 writable=sorted(set(writable)), until=until)

    def _open_windows(self) -> list:
        """Blocking.  (domain, key, until) of every learn or write window on record."""
        t = self.storage.tables
        with self.storage.read() as conn:
            rows = conn.execute(sa.select(t.sites.c.domain, t.fortifications.c.path, t.fortifications.c.until)
                                .join(t.sites, t.sites.c.id == t.fortifications.c.site_id)
                                .where(t.fortifications.c.until.is_not(None))).all()
        return [(r.domain, r.path, r.until) for r in rows]

    @staticmethod
    def _writable(mode: str, profile: Optional[Profile], learned: Optional[list]) -> list:
        if mode in ("release", "learn", "write"):
            return [EVERYTHING]
        if mode == "reset":
            return []
        if mode == "max":
            return list(learned) if learned is not None else list(profile.max if profile else ())
        # min: the profile's wider set, plus what was learned
        return sorted(set(profile.min if profile else ()) | set(learned or ()))

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
        """Blocking.  Make exactly ``writable`` (profile entries) writable for the web server user.

        Three passes over the tree, each on descriptors opened without following links: first
        every ACL entry of the web user goes, then what it owns outside ``writable`` is given
        to the owner, only then are the writable paths granted.  Once the first two passes are
        done the web user can change nothing outside ``writable``, so it cannot steer the rest.
        """
        web = self.web_user
        web_uid = self._web_uid()
        owner = target.home.owner
        uids = manageable_uids(owner.uid, web_uid)
        recursive = {e.rstrip("/") or "." for e in writable if e.endswith("/")}
        single = {e for e in writable if not e.endswith("/")}

        def is_writable(rel: str) -> bool:
            return "." in recursive or _under_any(rel, recursive) or rel in single

        with _open_folder(target.folder) as top:
            for batch in _batches(walk_fds(top, uids)):
                acl.revoke([e.fd for e in batch if e.is_dir], web)
                acl.revoke_files([e.fd for e in batch if not e.is_dir], web)
            for batch in _batches(walk_fds(top, {web_uid})):
                for entry in batch:
                    if not is_writable(entry.rel):
                        _give_back(entry, owner)
            for entry in writable:  # a profile's folders that do not exist yet are made (as the owner)
                if entry.endswith("/") and entry != EVERYTHING:
                    _make_folder(top, entry.rstrip("/"), owner)
            for batch in _batches(walk_fds(top, uids)):
                # A file with several hard links may be a protected one under another name (the web
                # user links wp-config.php into uploads while released): never granted.
                chosen = [e for e in batch if is_writable(e.rel) and (e.is_dir or e.links == 1)]
                acl.grant_folders([e.fd for e in chosen if e.is_dir and e.rel not in single], web)
                acl.grant_folders_only([e.fd for e in chosen if e.is_dir and e.rel in single], web)
                acl.grant_files([e.fd for e in chosen if not e.is_dir], web)

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

    def _save(self, site_id: int, key: str, app: str, mode: str, until, since, learned, now: float) -> None:
        """Blocking.  Insert or update the folder's row."""
        t = self.storage.tables
        values = dict(app=app, mode=mode, until=until, learn_since_ns=since,
                      profile=json.dumps(learned) if learned is not None else None, updated_at=utcnow(_At(now)))
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


#: Deeper folders than this are not walked (each level holds one descriptor open).
MAX_DEPTH = 256
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@contextlib.contextmanager
def _open_folder(path: str):
    """Blocking.  A descriptor of the folder ``path``, opened one component at a time without following links."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in [p for p in path.split("/") if p]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise InvalidArgument(f"the folder changed while it was being fortified: {exc.strerror}") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def walk_fds(top: int, uids: set) -> Iterable[_Entry]:
    """Blocking.  The folder open at ``top`` and the folders and regular files under it owned by
    ``uids``, each with an ``O_PATH`` descriptor (closed by :func:`_batches`); links are never followed."""
    fd = os.open(".", _PATH_FLAGS, dir_fd=top)
    st = os.fstat(fd)
    if st.st_uid in uids:
        yield _Entry(".", True, st.st_uid, fd)
    else:
        os.close(fd)
    yield from _walk_below(top, "", uids, 0)


def _walk_below(dir_fd: int, rel: str, uids: set, depth: int) -> Iterable[_Entry]:
    """Blocking.  :func:`walk_fds` below the folder open at ``dir_fd``, depth first."""
    if depth > MAX_DEPTH:
        log.warn("not fortifying below {rel}: deeper than {depth} folders", rel=rel, depth=MAX_DEPTH)
        return
    with os.scandir(dir_fd) as listing:
        names = sorted(e.name for e in listing)
    for name in names:
        child = f"{rel}/{name}" if rel else name
        try:
            fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                os.close(fd)
                continue
            if not os.path.samestat(os.fstat(sub), st):  # replaced between the two opens
                os.close(sub)
                os.close(fd)
                continue
            if st.st_uid in uids:
                yield _Entry(child, True, st.st_uid, fd)
            else:
                os.close(fd)
            try:
                yield from _walk_below(sub, child, uids, depth + 1)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode) and st.st_uid in uids:
            yield _Entry(child, False, st.st_uid, fd, st.st_nlink)
        else:
            os.close(fd)  # links, sockets, fifos: never touched


def _batches(entries: Iterable[_Entry], size: int = acl.BATCH):
    """Groups of ``size`` entries; each group's descriptors are closed once the caller is done with it."""
    batch = []
    try:
        for entry in entries:
            batch.append(entry)
            if len(batch) >= size:
                yield batch
                _close_all(batch)
                batch = []
        if batch:
            yield batch
    finally:
        _close_all(batch)


def _close_all(batch: list) -> None:
    for entry in batch:
        if entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1


def _give_back(entry: _Entry, owner) -> None:
    """Blocking.  The owner gets what the web user made, without group or other write."""
    handle = f"/proc/self/fd/{entry.fd}"
    try:
        os.chown(handle, owner.uid, owner.gid)
        os.chmod(handle, stat.S_IMODE(os.stat(handle).st_mode) & ~0o022)
    except PermissionError:
        log.warn("cannot give {rel} to {owner}: the server does not run as root", rel=entry.rel, owner=owner.name)


def learn(folder: str, web_uid: int, since_ns: int, home_root: str) -> list:
    """Blocking.  What the web server user wrote under ``folder`` since ``since_ns`` (filesystem time).

    A folder it owns counts with everything under it (``dir/``); a folder in which entries were
    made or removed counts alone (``dir``); a file counts when it owns it or it was modified.
    The walk never follows a link nor leaves the home ``home_root`` (a real path).
    """
    learned = []
    top = os.lstat(folder)
    if top.st_uid != web_uid and top.st_mtime_ns >= since_ns:
        learned.append(".")
    for dirpath, dirnames, filenames, dir_fd in walk_inside(folder, home_root):
        descend = set()
        for name in sorted(dirnames) + sorted(filenames):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if stat.S_ISDIR(st.st_mode):
                if st.st_uid == web_uid:
                    learned.append(rel + "/")
                    continue  # its whole tree is writable
                if st.st_mtime_ns >= since_ns:
                    learned.append(rel)
                descend.add(name)
            elif stat.S_ISREG(st.st_mode) and (st.st_uid == web_uid or st.st_mtime_ns >= since_ns):
                learned.append(rel)
        dirnames[:] = [d for d in dirnames if d in descend]
    return learned


def filesystem_now_ns(directory: str) -> int:
    """Blocking.  The filesystem's current time: the modification time of a file made now in ``directory``.

    Learning compares files' modification times with it, so it must come from the same
    source as they do (the site's filesystem, not the injected clock).
    """
    with tempfile.NamedTemporaryFile(prefix=".apiserver-fortify-", dir=directory) as marker:
        return os.fstat(marker.fileno()).st_mtime_ns


def _under_any(rel: str, folders: set) -> bool:
    if rel in folders:
        return True
    parent = os.path.dirname(rel)
    while parent:
        if parent in folders:
            return True
        parent = os.path.dirname(parent)
    return False


def _make_folder(top: int, rel: str, owner) -> None:
    """Blocking.  Make the profile folder ``rel`` under the folder open at ``top`` when its parent
    exists (as the owner); never through a link."""
    parts = rel.split("/")
    fd = os.dup(top)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                return  # no such parent (or a link): this tree does not have that folder
            os.close(fd)
            fd = child
        try:
            os.mkdir(parts[-1], 0o755, dir_fd=fd)
        except FileExistsError:
            return
        if os.geteuid() == 0:
            os.chown(parts[-1], owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
