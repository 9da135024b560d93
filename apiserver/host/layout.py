"""A site's folders on disk, as ApisCP lays out /home/virtual.

``<sites_root>/site<N>/fst/`` is what the site sees as ``/``: its document root is
``var/www/html``, its users' homes ``home/<user>``, its own ``etc/passwd``, ``etc/group`` and
``etc/shadow`` are in ``etc``.  ``<sites_root>/<domain>`` and ``<sites_root>/admin<N>`` are
relative links to ``site<N>``.

Who may enter what (the seed's "group is any member of the account, world means only the web
server"):

==========================  ===============  ======  ===================================
folder                      owner:group      mode    ACL for the web server user
==========================  ===============  ======  ===================================
``site<N>``, ``fst``        root:admin<N>    0750    ``--x``: may pass, not list
``fst/var``                 root:admin<N>    0750    ``--x``
``fst/var/www``             admin:admin<N>   0750    ``--x`` (``.htpasswd`` files live here)
``fst/var/www/html``        admin:admin<N>   0775    ``r-x``: reads what is served
``fst/etc``                 root:admin<N>    0750    none (``shadow`` is 0600 root)
``fst/home``                root:admin<N>    0750    none
``fst/home/<user>``         user:admin<N>    0700    none
==========================  ===============  ======  ===================================

Another site's users and every other local account stop at ``site<N>``; the web server reaches
the document root and nothing else.  The folders owned by root cannot be renamed or replaced by
the site, so the server's writes into ``etc`` never follow a link the site planted.  All blocking.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Optional

from apiserver.errors import Exists, ServerError
from apiserver.host import names
from apiserver.sites import acl

#: The document root as the site sees it.
DOCUMENT_ROOT = "/var/www/html"

#: Modes of the folders of the layout (see the module docstring).
ACCOUNT_ONLY = 0o750
# No setgid bit: every user of the site has the site's group as its primary group already, and
# systemd's RestrictSUIDSGID refuses setting one.
DOCUMENT_ROOT_MODE = 0o775
USER_HOME_MODE = 0o700


def site_home_of(username: str) -> str:
    """A user's home as the site sees it: ``/home/<user>``."""
    return f"/home/{username}"


class SiteLayout:
    """The paths of site ``site_id`` under ``sites_root`` (host paths; nothing is touched)."""

    def __init__(self, sites_root: str, site_id: int):
        self.sites_root = sites_root
        self.site_id = site_id
        self.site_dir = os.path.join(sites_root, names.site_dir_name(site_id))
        self.fst = os.path.join(self.site_dir, "fst")
        self.etc = os.path.join(self.fst, "etc")
        self.homes = os.path.join(self.fst, "home")
        self.document_root = os.path.join(self.fst, DOCUMENT_ROOT.lstrip("/"))

    def home_of(self, username: str) -> str:
        if not username or "/" in username or username in (".", ".."):
            raise ValueError(f"invalid user name {username!r}")
        return os.path.join(self.homes, username)

    def link_path(self, name: str) -> str:
        return os.path.join(self.sites_root, name)

    # --- making and removing (blocking) ---------------------------------------------------------
    def create(self, admin_uid: int, gid: int, web_uid: Optional[int], shared: bool = False) -> None:
        """Blocking.  Make ``site<N>`` and its tree with the owners, modes and ACLs above.

        ``shared``: the server has no system accounts (not root): everything belongs to
        ``admin_uid``/``gid`` (the single sites' owner) with the old open modes.  Exists when
        ``site<N>`` is there already; a failure removes what was made.
        """
        try:
            os.mkdir(self.site_dir, 0o700)
        except FileExistsError:
            raise Exists(f"a folder for site{self.site_id} already exists in [web] sites_root") from None
        try:
            self.ensure(admin_uid, gid, web_uid, shared)
        except BaseException:
            self.remove()
            raise

    def ensure(self, admin_uid: int, gid: int, web_uid: Optional[int], shared: bool = False) -> list:
        """Blocking.  Make missing folders of the tree and set every owner, mode and ACL above;
        the folders that changed (nothing on a tree that is as it should be)."""
        root_uid = admin_uid if shared else 0
        closed = 0o755 if shared else ACCOUNT_ONLY
        www = os.path.join(self.fst, "var", "www")
        plan = [(self.site_dir, root_uid, closed, acl.EXECUTE), (self.fst, root_uid, closed, acl.EXECUTE),
                (os.path.join(self.fst, "var"), root_uid, closed, acl.EXECUTE), (www, admin_uid, closed, acl.EXECUTE),
                (self.document_root, admin_uid, 0o755 if shared else DOCUMENT_ROOT_MODE, acl.READ | acl.EXECUTE),
                (self.etc, root_uid, closed, 0), (self.homes, root_uid, closed, 0)]
        return [path for path, uid, mode, web_perm in plan
                if self._folder(path, uid, gid, mode, web_uid if web_perm else None, web_perm)]

    @staticmethod
    def _folder(path: str, uid: int, gid: int, mode: int, web_uid: Optional[int], web_perm: int) -> bool:
        changed = False
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
            info, changed = os.lstat(path), True
        if not stat.S_ISDIR(info.st_mode):  # a link or file where a folder belongs is never followed
            raise ServerError(f"{path} should be a folder")
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.chown(path, uid, gid, follow_symlinks=False)
            changed = True
        if stat.S_IMODE(info.st_mode) != mode or changed:
            os.chmod(path, mode)  # explicit: whatever the umask (chown clears setgid)
            changed = changed or stat.S_IMODE(info.st_mode) != mode
        if web_uid is not None and web_perm:
            changed = acl.set_user_entry(path, web_uid, web_perm) or changed
        return changed

    def make_home(self, username: str, uid: int, gid: int) -> bool:
        """Blocking.  The user's home ``fst/home/<user>`` (0700, the user's); whether it changed."""
        return self._folder(self.home_of(username), uid, gid, USER_HOME_MODE, None, 0)

    def remove_home(self, username: str) -> None:
        """Blocking.  Remove a user's home without following any link in it."""
        _remove_tree(self.home_of(username))

    def link(self, domain: str) -> bool:
        """Blocking.  ``<domain>`` and ``admin<N>`` -> ``site<N>`` (relative links); Exists when
        the domain's place is taken by something else; whether a link was made."""
        target = names.site_dir_name(self.site_id)
        made = False
        for name in (domain, names.admin_link_name(self.site_id)):
            path = self.link_path(name)
            try:
                os.symlink(target, path)
                made = True
            except FileExistsError:
                if not (os.path.islink(path) and os.readlink(path) == target):
                    raise Exists(f"a file or folder named {name!r} exists already in [web] sites_root; move it "
                                 f"away first") from None
        return made

    def unlink(self, domain: Optional[str]) -> None:
        """Blocking.  Remove the links to ``site<N>`` (only links that point at it)."""
        target = names.site_dir_name(self.site_id)
        for name in filter(None, (domain, names.admin_link_name(self.site_id))):
            path = self.link_path(name)
            if os.path.islink(path) and os.readlink(path) == target:
                os.unlink(path)

    def remove(self) -> None:
        """Blocking.  Remove ``site<N>`` and everything in it, never following a link."""
        _remove_tree(self.site_dir)


def _remove_tree(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux has the fd-based rmtree
        raise ServerError("this platform cannot remove a tree without following links")
    shutil.rmtree(path)
