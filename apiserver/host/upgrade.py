"""Upgrading sites on disk to the ``site<N>/fst`` layout and to system accounts (``apiserver
migrate-sites``, and at every start-up).

A site from before (``<sites_root>/<domain>/``, every file the one shared owner's) is moved into
``site<N>/fst`` by one rename (no file is copied, so none can be lost), its group and users are
made when the server has system accounts, the files the shared owner had go to the site's
administrator, the database client files (``.my.cnf``, ``.pgpass``) that earlier versions wrote
in ``fst/`` move into the administrator's own home, and the links and ``etc`` files are
written.  Every step looks before it changes anything, so an interrupted upgrade is finished by
the next run and a run with nothing to do changes nothing.  All blocking.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
from typing import Optional

from apiserver.errors import ServerError
from apiserver.host import tools
from apiserver.host.accounts import SiteAccounts


@dataclasses.dataclass(frozen=True)
class SiteToUpgrade:
    """A site as the database knows it: number, domain, administrator, other users and the
    stored password hashes (``{user: hash}``; a crypt(3) one becomes the system password)."""

    site_id: int
    domain: str
    admin: str
    users: tuple = ()
    hashes: Optional[dict] = None


def upgrade_site(accounts: SiteAccounts, site: SiteToUpgrade, shared_uid: Optional[int]) -> list:
    """Blocking.  Bring one site to the current layout; what was changed (one line each)."""
    layout = accounts.layout(site.site_id)
    label = f"{site.domain} (site{site.site_id})"
    changes = []
    place = layout.link_path(site.domain)
    if os.path.isdir(place) and not os.path.islink(place):
        if os.path.lexists(layout.fst):
            raise ServerError(f"{label}: both {place} and {layout.fst} exist; move one of them away")
        if not os.path.lexists(layout.site_dir):
            os.mkdir(layout.site_dir, 0o700)
        os.rename(place, layout.fst)  # one rename on one file system: every file moves or none
        changes.append(f"{label}: moved {place} to {layout.fst}")
    elif not os.path.lexists(layout.site_dir):
        os.mkdir(layout.site_dir, 0o700)
        changes.append(f"{label}: had no home; made {layout.site_dir}")
    everyone = (site.admin,) + tuple(u for u in site.users if u != site.admin)
    hashes = site.hashes or {}
    if accounts.enabled:
        gid, admin_uid = _ensure_accounts(accounts, site, everyone, hashes, changes, label)
    else:
        owner = pwd.getpwnam(accounts.shared_owner)
        gid, admin_uid = owner.pw_gid, owner.pw_uid
    for path in layout.ensure(admin_uid, gid, accounts.web_uid(), shared=not accounts.enabled):
        changes.append(f"{label}: set owner, mode or web server access of {path}")
    for username in everyone:
        uid = pwd.getpwnam(accounts.host_user_name(site.site_id, username)).pw_uid if accounts.enabled else admin_uid
        if layout.make_home(username, uid, gid):
            changes.append(f"{label}: made or fixed the home of {username}")
    if accounts.enabled and shared_uid is not None and shared_uid != admin_uid:
        given = _give_files(layout.fst, shared_uid, admin_uid, gid)
        if given:
            changes.append(f"{label}: gave {given} files of the shared owner to {site.admin}")
    for name in move_database_files(layout.fst, layout.home_of(site.admin), admin_uid, gid):
        changes.append(f"{label}: moved {name} into the home of {site.admin}")
    if layout.link(site.domain):
        changes.append(f"{label}: linked {site.domain} and admin{site.site_id} to site{site.site_id}")
    if accounts.enabled and accounts.rewrite_etc(site.site_id, everyone):
        changes.append(f"{label}: wrote etc/passwd, etc/group, etc/shadow")
    return changes


#: The database client files an earlier version wrote in the site's ``fst/`` root.
DATABASE_FILES = (".my.cnf", ".pgpass")


def move_database_files(fst: str, home: str, uid: int, gid: int) -> list:
    """Blocking.  Move ``.my.cnf``/``.pgpass`` from ``fst`` into ``home`` (one rename each: the
    password is never lost), owned by ``uid:gid``, mode 0600; the names moved.  A file already
    in the home is newer and stays (the old one too); a link in ``fst`` is never followed, and a
    file with other hard links is left where it is (its owner unchanged)."""
    moved = []
    fst_fd = os.open(fst, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for name in DATABASE_FILES:
                try:
                    info = os.lstat(name, dir_fd=fst_fd)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(info.st_mode) or _exists(name, home_fd):
                    continue
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fst_fd)
                try:  # owner and mode first: the file is never readable by others in the home
                    opened = os.fstat(fd)
                    if not stat.S_ISREG(opened.st_mode) or opened.st_nlink != 1:
                        continue  # a hard link planted there: giving it away would give another file
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, 0o600)
                finally:
                    os.close(fd)
                os.rename(name, name, src_dir_fd=fst_fd, dst_dir_fd=home_fd)
                moved.append(name)
        finally:
            os.close(home_fd)
    finally:
        os.close(fst_fd)
    return moved


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def _ensure_accounts(accounts: SiteAccounts, site: SiteToUpgrade, everyone: tuple, hashes: dict, changes: list,
                     label: str) -> tuple:
    group = accounts.group_name(site.site_id)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = tools.add_group(group)
        changes.append(f"{label}: made the group {group}")
    layout = accounts.layout(site.site_id)
    admin_uid = None
    for username in everyone:
        name = accounts.host_user_name(site.site_id, username)
        try:
            entry = pwd.getpwnam(name)
            uid = entry.pw_uid
            if entry.pw_gid != gid:
                raise ServerError(f"{label}: the system user {name!r} exists in another group; move it away")
        except KeyError:
            comment = f"{username}@{site.domain}" if username == site.admin else ""
            uid = tools.add_user(name, gid, layout.home_of(username), tools.NOLOGIN, comment=comment)
            accounts.store_password(name, None, hashes.get(username))
            changes.append(f"{label}: made the system user {name}")
        if username == site.admin:
            admin_uid = uid
    return gid, admin_uid


def _give_files(top: str, old_uid: int, uid: int, gid: int) -> int:
    """Every file and folder under ``top`` that ``old_uid`` owns goes to ``uid``:``gid`` (links
    themselves, never their targets); how many."""
    given = 0
    for folder, dirs, files in os.walk(top):  # os.walk never descends into a link to a folder
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.lstat(path).st_uid == old_uid:
                os.chown(path, uid, gid, follow_symlinks=False)
                given += 1
    return given
