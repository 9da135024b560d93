"""A site's home on disk and the one rule every site path obeys: it resolves inside that home.

A site sees its files rooted at its home: ``/var/www/html/.htaccess`` is
``<sites_root>/<domain>/var/www/html/.htaccess``.  :meth:`SiteHome.resolve` turns such a path
into a host path, refusing ``..``, NUL bytes, percent-encoded separators or dots, and symbolic
links that lead out of the home (to ``/etc``, to another site).  Everything here is blocking
filesystem work: callers run it on the blocking pool.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import stat
import time
from typing import Optional

from apiserver.errors import Exists, InvalidArgument, NotFound, ServerError
from apiserver.sites import acl

#: The document root inside every home, as the site sees it.
DOCUMENT_ROOT = "/var/www/html"

#: Percent-encodings of '.', '/', '\' and NUL: a path that carries one is a trick, not a name.
_ENCODED_TRICK = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)

_TRASH_PREFIX = ".deleted-"

#: The folder of site N under sites_root, which ``<domain>`` links to.
SITE_DIR = re.compile(r"site[1-9][0-9]{0,9}")


@dataclasses.dataclass(frozen=True)
class FileOwner:
    """The system account that owns a site's files."""

    name: str
    uid: int
    gid: int


def web_server_user(configured: str) -> str:
    """``[web] user``, or when empty the web server's user that exists here (www-data, apache)."""
    if configured:
        return configured
    for candidate in ("www-data", "apache"):
        try:
            pwd.getpwnam(candidate)
            return candidate
        except KeyError:
            continue
    raise ServerError("no web server user: neither www-data nor apache exists; set [web] user")


#: The system user that owns sites' files when the server runs as root and [web] site_owner is empty.
DEFAULT_ROOT_SITE_OWNER = "apiserver"


def site_owner_name(configured: str, euid: Optional[int] = None) -> str:
    """The name ``[web] site_owner`` stands for: as configured, else the server's own user
    (never root: as root, the dedicated system user :data:`DEFAULT_ROOT_SITE_OWNER`)."""
    euid = os.geteuid() if euid is None else euid
    if configured:
        return configured
    if euid == 0:
        return DEFAULT_ROOT_SITE_OWNER
    return pwd.getpwuid(euid).pw_name


def lookup_owner(name: str) -> FileOwner:
    """Blocking.  The account ``name``; ServerError naming ``[web] site_owner`` when it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServerError(f"the sites' owner {name!r} does not exist: run 'apiserver init' as root "
                          f"or set [web] site_owner") from None
    return FileOwner(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def ensure_system_user(name: str) -> bool:
    """Blocking.  Create the unprivileged system user ``name`` (no login, no home) if missing.

    Returns True when it was created.  Used by ``apiserver init`` when it runs as root.
    """
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    import subprocess

    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True, timeout=60)
    return True


class SiteHome:
    """One site's home: ``root`` is its host path (``site<N>/fst``), ``owner`` who owns what is made in it."""

    def __init__(self, domain: str, root: str, owner: FileOwner, site_id: Optional[int] = None):
        self.domain = domain
        self.root = root
        self.owner = owner
        self.site_id = site_id  # N of site<N>; None for a home from before the site<N> layout

    @property
    def document_root(self) -> str:
        return os.path.join(self.root, DOCUMENT_ROOT.lstrip("/"))

    @property
    def real_root(self) -> str:
        """Blocking.  The home's real path: what every resolved path, walk and opened file must lie in."""
        return os.path.realpath(self.root)

    def resolve(self, site_path: str, must_exist: bool = False) -> str:
        """Blocking.  The host path of ``site_path`` (as the site sees it), inside the home.

        Links are followed only while they stay inside the home; a path whose last part does
        not exist yet resolves through its existing parents.  InvalidArgument for anything that
        leaves the home, NotFound when ``must_exist`` and the path does not exist.
        """
        parts = split_site_path(site_path)
        root_real = self.real_root
        candidate = os.path.join(root_real, *parts) if parts else root_real
        resolved = os.path.realpath(candidate)
        if not is_inside(resolved, root_real):
            raise InvalidArgument(f"path {display_path(site_path)!r} leads out of the site's home")
        if must_exist and not os.path.lexists(resolved):
            raise NotFound(f"no file or folder {display_path(site_path)!r} in the site")
        return resolved

    def site_path(self, host_path: str) -> str:
        """The path as the site sees it (``/var/www/html/x``) of a host path inside the home."""
        root_real = self.real_root
        rel = os.path.relpath(host_path, root_real)
        if rel == ".":
            return "/"
        if rel.startswith(".." + os.sep) or rel == "..":
            raise InvalidArgument("path is outside the site's home")
        return "/" + rel.replace(os.sep, "/")


def split_site_path(site_path: str) -> list:
    """The components of a site path; InvalidArgument for NUL, ``..``, encoded tricks or non-strings."""
    if not isinstance(site_path, str):
        raise InvalidArgument("a path must be a string")
    if "\x00" in site_path:
        raise InvalidArgument("a path may not contain NUL bytes")
    if _ENCODED_TRICK.search(site_path):
        raise InvalidArgument(f"path {display_path(site_path)!r} carries a percent-encoded '.', '/', '\\' or NUL")
    if "\\" in site_path:
        raise InvalidArgument(f"path {display_path(site_path)!r} contains a backslash")
    parts = [p for p in site_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {display_path(site_path)!r} contains '..'")
    return parts


def display_path(path: str) -> str:
    """A path safe to put in a fault message (bounded, no control characters)."""
    return printable(str(path), 200)


def printable(text: str, limit: Optional[int] = None) -> str:
    """``text`` with every unprintable character (controls, escapes) as ``?``, cut after ``limit``
    characters (marked ``...``): safe to show a person or put in a fault."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if limit is None or len(shown) <= limit else shown[:limit] + "..."


def is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def open_inside(path: str, root: str, flags: int) -> int:
    """Blocking.  ``os.open(path, flags)``, refused (InvalidArgument) when what it names lies outside
    the folder ``root`` (a real path).

    The check is on the file itself, opened first with ``O_PATH`` (which reads nothing and has no
    side effects, not even on a device or FIFO) and named by its ``/proc/self/fd`` link: a folder
    on the path swapped for a link after the path was resolved cannot send root elsewhere.  Only
    then is that same file opened with ``flags``.
    """
    located = os.open(path, os.O_PATH | os.O_CLOEXEC | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY)))
    try:
        if not is_inside(os.readlink(f"/proc/self/fd/{located}"), root):
            raise InvalidArgument("the path leads out of the site's home")
        return os.open(f"/proc/self/fd/{located}", (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
    finally:
        os.close(located)


class SiteHomes:
    """Every site's home under ``sites_root``, owned by ``owner_name``; ``web_user`` serves them.

    ``state_dir`` is 0700, so when ``sites_root`` lies inside it the web server user is given
    search (``x``, not read) on the folders between them: it can reach the sites, not list or
    read the state.
    """

    def __init__(self, sites_root: str, owner_name: str, web_user: str = "", state_dir: Optional[str] = None):
        self.sites_root = sites_root
        self.owner_name = owner_name
        self.web_user = web_user
        self.state_dir = state_dir

    def ensure_reachable(self) -> None:
        """Blocking.  Make ``sites_root`` and let the web server user reach it through ``state_dir``."""
        os.makedirs(self.sites_root, mode=0o755, exist_ok=True)
        if self.web_user:
            self.let_reach(self.web_user)

    def let_reach(self, user: str) -> None:
        """Blocking.  Give ``user`` search (``x``, no listing) on every folder from ``state_dir``
        down to ``sites_root`` that does not let it pass yet."""
        if not self.state_dir:
            return
        top = os.path.realpath(self.state_dir)
        path = os.path.realpath(self.sites_root)
        while is_inside(path, top):
            if not acl.can_search(path, user):
                acl.grant_search(path, user)
            if path == top:
                break
            path = os.path.dirname(path)

    def _root_of(self, domain: str) -> str:
        # Domains are validated (validation.normalize_domain) before they reach here; refuse
        # anything that would still name a path of its own.
        if not domain or "/" in domain or domain in (".", "..") or domain.startswith(_TRASH_PREFIX):
            raise InvalidArgument(f"invalid domain {domain!r}")
        return os.path.join(self.sites_root, domain)

    def get(self, domain: str) -> SiteHome:
        """Blocking.  The home of ``domain``; NotFound when it has none on disk.

        A site's home is ``site<N>/fst``, reached through the link ``<domain>`` -> ``site<N>``
        (ApisCP's layout); its owner is its document root's, the site administrator.  A folder
        ``<domain>`` itself is a home from before that layout (``apiserver migrate-sites``).
        Any other link or file in the domain's place is never followed.
        """
        root = self._root_of(domain)
        try:
            info = os.lstat(root)
        except FileNotFoundError:
            raise NotFound(f"site {domain!r} has no home on disk") from None
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(root)
            if not SITE_DIR.fullmatch(target):
                raise ServerError(f"the home of {domain!r} links to something that is no site<N> folder")
            fst = os.path.join(self.sites_root, target, "fst")
            try:
                owner = os.lstat(os.path.join(fst, DOCUMENT_ROOT.lstrip("/")))
            except FileNotFoundError:
                raise NotFound(f"site {domain!r} has no document root on disk") from None
            try:
                name = pwd.getpwuid(owner.st_uid).pw_name
            except KeyError:
                name = str(owner.st_uid)
            return SiteHome(domain, fst, FileOwner(name, owner.st_uid, owner.st_gid), site_id=int(target[4:]))
        if not stat.S_ISDIR(info.st_mode):  # a file in its place is never followed
            raise ServerError(f"the home of {domain!r} is not a folder")
        return SiteHome(domain, root, lookup_owner(self.owner_name))

    def create(self, domain: str) -> SiteHome:
        """Blocking.  Make the home and its document root, owned by the sites' owner.

        Exists when something is already at the home's place (it is never reused or wiped).
        """
        owner = lookup_owner(self.owner_name)
        self.ensure_reachable()
        root = self._root_of(domain)
        try:
            os.mkdir(root, 0o755)
        except FileExistsError:
            # The fault names no host path (the server's layout); the administrator finds it in sites_root.
            raise Exists(f"a home for {domain!r} already exists in [web] sites_root; move it away first") from None
        try:
            path = root
            for part in DOCUMENT_ROOT.strip("/").split("/"):
                path = os.path.join(path, part)
                os.mkdir(path, 0o755)
            for made in _walk_up(path, root):
                os.chown(made, owner.uid, owner.gid, follow_symlinks=False)
                os.chmod(made, 0o755)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return SiteHome(domain, root, owner)

    def detach(self, domain: str) -> Optional[str]:
        """Blocking.  Move the home out of its place (one atomic rename) and return where to.

        ``None`` when the site has no home.  The moved tree is removed with :meth:`purge`.
        """
        root = self._root_of(domain)
        if not os.path.lexists(root):
            return None
        trash = os.path.join(self.sites_root, f"{_TRASH_PREFIX}{domain}-{time.time_ns()}")
        os.rename(root, trash)  # renames a link itself, never its target
        return trash

    @staticmethod
    def purge(path: str) -> None:
        """Blocking.  Remove a detached home without following any link in it."""
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux has the fd-based rmtree
            raise ServerError("this platform cannot remove a tree without following links")
        shutil.rmtree(path)


def _walk_up(path: str, root: str):
    """``path`` and each of its parents up to and including ``root``."""
    while True:
        yield path
        if path == root:
            return
        path = os.path.dirname(path)
