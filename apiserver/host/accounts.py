"""SiteAccounts: a site's system group and users, its synthetic root and its ``etc`` files.

Every site gets the group ``admin<N>`` and every user of it (its administrator first) a system
user ``<user>.<N>`` (see :mod:`apiserver.host.names`) with its own uid, the site's gid, its home
``fst/home/<user>`` and the login shell of ``ssh.enabled`` (nologin otherwise), made with the
system's own tools.  The site's synthetic ``etc`` files are rewritten after every change.

When the server is not root, or ``[web] system_accounts`` is off, SiteAccounts is *shared*:
no account is made, every site's files belong to the one sites' owner (``[web] site_owner``)
and :meth:`identity` answers that owner for everyone.  All methods block.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import threading
from typing import Callable, Optional

from apiserver.errors import NotFound, ServerError
from apiserver.host import crypt, names, synthetic, tools
from apiserver.host.layout import SiteLayout, site_home_of
from apiserver.sites.home import lookup_owner


@dataclasses.dataclass(frozen=True)
class HostIdentity:
    """Who a site's user is on the host: the file-system identity its work runs with."""

    site_id: int
    username: str     # the plain name inside the site
    host_name: str    # the system user's name on the host
    uid: int
    gid: int          # the site's group
    group: str        # the site's group name on the host (admin<N>)
    home: str         # the home's host path (<sites_root>/site<N>/fst/home/<user>)
    is_admin: bool = False

    @property
    def site_home(self) -> str:
        """The home as the site sees it: ``/home/<user>``."""
        return site_home_of(self.username)


class SiteAccounts:
    """The system accounts of every site under ``sites_root``.

    ``web_user``: the web server's user (reaches document roots); ``prefix``: ``[web]
    account_prefix``; ``shared_owner``: the sites' single owner's name, used when ``enabled``
    is False.
    """

    def __init__(self, sites_root: str, web_user: str, prefix: str, enabled: bool, shared_owner: str):
        self.sites_root = sites_root
        self.web_user = web_user
        self.prefix = prefix
        self.enabled = enabled
        self.shared_owner = shared_owner
        self._site_locks: dict = {}
        self._locks_lock = threading.Lock()

    def layout(self, site_id: int) -> SiteLayout:
        return SiteLayout(self.sites_root, site_id)

    def group_name(self, site_id: int) -> str:
        return names.group_name(site_id, self.prefix)

    def host_user_name(self, site_id: int, username: str) -> str:
        return names.host_user_name(site_id, username, self.prefix)

    def _lock(self, site_id: int) -> threading.Lock:
        with self._locks_lock:
            return self._site_locks.setdefault(site_id, threading.Lock())

    def web_uid(self) -> Optional[int]:
        """Blocking.  The web server user's uid (None when there is none)."""
        if not self.web_user:
            return None
        try:
            return pwd.getpwnam(self.web_user).pw_uid
        except KeyError:
            return None

    # --- a site ---------------------------------------------------------------------------------
    def create_site(self, site_id: int, domain: str, admin: str, password: Optional[str] = None,
                    password_hash: Optional[str] = None, shell: str = tools.NOLOGIN) -> HostIdentity:
        """Blocking.  The site's group, administrator, tree, links and ``etc`` files; the
        administrator's identity.  ``password`` (hashed with yescrypt) or ``password_hash`` (a
        crypt(3) hash) becomes its system password; neither: locked.  A failure removes
        everything made; Exists when a name or folder is taken."""
        layout = self.layout(site_id)
        if not self.enabled:
            owner = lookup_owner(self.shared_owner)
            layout.create(owner.uid, owner.gid, self.web_uid(), shared=True)
            try:
                layout.make_home(admin, owner.uid, owner.gid)
                layout.link(domain)
            except BaseException:
                layout.unlink(domain)
                layout.remove()
                raise
            return self._shared_identity(site_id, admin, True, owner)
        group = self.group_name(site_id)
        gid = tools.add_group(group)
        made_user = None
        made_tree = False
        try:
            made_user = self.host_user_name(site_id, admin)
            uid = tools.add_user(made_user, gid, layout.home_of(admin), shell, comment=f"{admin}@{domain}")
            layout.create(uid, gid, self.web_uid())
            made_tree = True
            layout.make_home(admin, uid, gid)
            self.store_password(made_user, password, password_hash)
            layout.link(domain)
            with self._lock(site_id):
                self._write_etc(site_id, extra=(admin, uid))
        except BaseException:
            layout.unlink(domain)
            if made_tree:
                layout.remove()
            if made_user is not None:
                tools.delete_user(made_user)
            tools.delete_group(group)
            raise
        return HostIdentity(site_id, admin, made_user, uid, gid, group, layout.home_of(admin), True)

    def remove_site(self, site_id: int, domain: Optional[str]) -> None:
        """Blocking.  Remove the site's links, tree, users and group (whatever of them exists: a
        second call does nothing)."""
        layout = self.layout(site_id)
        layout.unlink(domain)
        layout.remove()
        if not self.enabled:
            return
        group = self.group_name(site_id)
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return
        for entry in pwd.getpwall():  # every user of the site's gid, listed in etc or not
            if entry.pw_gid == gid:
                tools.delete_user(entry.pw_name)
        tools.delete_group(group)

    def set_shell(self, site_id: int, shell: str) -> None:
        """Blocking.  Give every user of the site the login shell ``shell``."""
        if not self.enabled:
            return
        with self._lock(site_id):
            for member in self.identities_of(site_id):
                tools.set_shell(member.host_name, shell)
            self._write_etc(site_id)

    def lock_site(self, site_id: int) -> None:
        """Blocking.  Lock every user's password and shell (a suspended site)."""
        self._each_user(site_id, tools.lock_user, tools.NOLOGIN)

    def unlock_site(self, site_id: int, shell: str) -> None:
        """Blocking.  Undo :meth:`lock_site`; ``shell`` from ``ssh.enabled``."""
        self._each_user(site_id, tools.unlock_user, shell)

    def _each_user(self, site_id: int, change: Callable, shell: str) -> None:
        if not self.enabled:
            return
        with self._lock(site_id):
            for member in self.identities_of(site_id):
                passwords = tools.shadow_entries([member.host_name])
                # usermod -U refuses to unlock a password-less account: nothing to undo there
                if passwords.get(member.host_name, "!") not in ("!", "*", "!*", "!!"):
                    change(member.host_name)
                tools.set_shell(member.host_name, shell)
            self._write_etc(site_id)

    # --- a user ---------------------------------------------------------------------------------
    def add_user(self, site_id: int, username: str, password: Optional[str] = None,
                 password_hash: Optional[str] = None, shell: str = tools.NOLOGIN) -> HostIdentity:
        """Blocking.  A system user for ``username`` of the site, its home and its password."""
        layout = self.layout(site_id)
        if not self.enabled:
            owner = lookup_owner(self.shared_owner)
            layout.make_home(username, owner.uid, owner.gid)
            return self._shared_identity(site_id, username, False, owner)
        group = self.group_name(site_id)
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ServerError(f"site{site_id} has no system group {group!r}; run apiserver migrate-sites") from None
        name = self.host_user_name(site_id, username)
        with self._lock(site_id):
            uid = tools.add_user(name, gid, layout.home_of(username), shell)
            try:
                layout.make_home(username, uid, gid)
                self.store_password(name, password, password_hash)
                self._write_etc(site_id, extra=(username, uid))
            except BaseException:
                tools.delete_user(name)
                layout.remove_home(username)
                raise
        return HostIdentity(site_id, username, name, uid, gid, group, layout.home_of(username), False)

    def remove_user(self, site_id: int, username: str) -> None:
        """Blocking.  Remove the user's system account and home; nothing when it has none."""
        layout = self.layout(site_id)
        layout.remove_home(username)
        if not self.enabled:
            return
        with self._lock(site_id):
            tools.delete_user(self.host_user_name(site_id, username))
            self._write_etc(site_id, without=username)

    def set_password(self, site_id: int, username: str, password: Optional[str] = None,
                     password_hash: Optional[str] = None) -> None:
        """Blocking.  The user's new system password (host shadow and the site's), kept locked
        if the site is locked."""
        if not self.enabled:
            return
        name = self.host_user_name(site_id, username)
        with self._lock(site_id):
            was_locked = tools.shadow_entries([name]).get(name, "").startswith("!")
            value = self._hash_of(password, password_hash)
            tools.set_password_hashes({name: ("!" + value) if was_locked and value != "!" else value})
            self._write_etc(site_id)

    @staticmethod
    def _hash_of(password: Optional[str], password_hash: Optional[str]) -> str:
        if password is not None:
            return crypt.hash_password(password)
        if password_hash is not None and crypt.is_crypt_hash(password_hash):
            return password_hash
        return "!"  # no password PAM can check: locked

    def store_password(self, name: str, password: Optional[str], password_hash: Optional[str]) -> None:
        """Blocking.  The host password of the system user ``name``: ``password`` hashed, or a
        crypt(3) ``password_hash`` as it is; neither leaves it locked."""
        value = self._hash_of(password, password_hash)
        if value != "!":
            tools.set_password_hashes({name: value})

    # --- identities -------------------------------------------------------------------------------
    def identity(self, site_id: int, username: str) -> HostIdentity:
        """Blocking.  ``username`` of the site on the host; NotFound when it has no system user."""
        layout = self.layout(site_id)
        if not self.enabled:
            return self._shared_identity(site_id, username, False, lookup_owner(self.shared_owner))
        name = self.host_user_name(site_id, username)
        try:
            entry = pwd.getpwnam(name)
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            raise NotFound(f"user {username!r} of site{site_id} has no system account") from None
        if group != self.group_name(site_id):
            raise NotFound(f"the system user {name!r} is not in site{site_id}'s group")
        return HostIdentity(site_id, username, name, entry.pw_uid, entry.pw_gid, group, layout.home_of(username),
                            self._is_admin(layout, entry.pw_uid))

    def identity_for_uid(self, uid: int) -> Optional[HostIdentity]:
        """Blocking.  The site user whose system account has ``uid``; None for any other uid."""
        if not self.enabled:
            return None
        try:
            entry = pwd.getpwuid(uid)
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            return None
        site_id = self._site_of_group(group)
        if site_id is None:
            return None
        layout = self.layout(site_id)
        for username, member_uid, _gid, _shell in synthetic.read_passwd(layout.etc):
            if member_uid == uid and self.host_user_name(site_id, username) == entry.pw_name:
                return HostIdentity(site_id, username, entry.pw_name, uid, entry.pw_gid, group,
                                    layout.home_of(username), self._is_admin(layout, uid))
        return None

    def identities_of(self, site_id: int) -> list:
        """Blocking.  Every user of the site with a system account (administrator first)."""
        if not self.enabled:
            return []
        group = self.group_name(site_id)
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return []
        layout = self.layout(site_id)
        known = {username: (uid, shell) for username, uid, g, shell in synthetic.read_passwd(layout.etc) if g == gid}
        found = []
        for username in known:
            try:
                found.append(self.identity(site_id, username))
            except NotFound:
                continue
        found.sort(key=lambda each: (not each.is_admin, each.uid))
        return found

    def _site_of_group(self, group: str) -> Optional[int]:
        head = f"{self.prefix}-admin" if self.prefix else "admin"
        number = group[len(head):] if group.startswith(head) else ""
        return int(number) if number.isdigit() and not number.startswith("0") else None

    @staticmethod
    def _is_admin(layout: SiteLayout, uid: int) -> bool:
        try:
            return os.lstat(layout.document_root).st_uid == uid
        except FileNotFoundError:
            return False

    def _shared_identity(self, site_id: int, username: str, is_admin: bool, owner) -> HostIdentity:
        try:
            group = grp.getgrgid(owner.gid).gr_name
        except KeyError:
            group = str(owner.gid)
        return HostIdentity(site_id, username, owner.name, owner.uid, owner.gid, group,
                            self.layout(site_id).home_of(username), is_admin)

    # --- the synthetic etc files ----------------------------------------------------------------
    def write_etc(self, site_id: int) -> None:
        """Blocking.  Rewrite the site's ``etc`` files from the host's accounts."""
        if not self.enabled:
            return
        with self._lock(site_id):
            self._write_etc(site_id)

    def rewrite_etc(self, site_id: int, usernames) -> bool:
        """Blocking.  Write the site's ``etc`` files for exactly ``usernames`` (plain names, the
        administrator first); whether a file changed."""
        with self._lock(site_id):
            return self._write_etc(site_id, names=list(usernames))

    def _write_etc(self, site_id: int, extra: Optional[tuple] = None, without: Optional[str] = None,
                   names: Optional[list] = None) -> bool:
        layout = self.layout(site_id)
        group = self.group_name(site_id)
        gid = grp.getgrnam(group).gr_gid
        if names is not None:
            listed = [(u, None) for u in names]
        else:
            listed = [(u, uid) for u, uid, g, _s in synthetic.read_passwd(layout.etc) if g == gid and u != without]
        if extra is not None:
            listed.append(extra)
        entries = []
        for username, _uid in listed:
            try:
                entries.append(pwd.getpwnam(self.host_user_name(site_id, username)))
            except KeyError:
                continue  # removed from the host: dropped from the site
        hashes = tools.shadow_entries(e.pw_name for e in entries)
        by_name = {self.host_user_name(site_id, u): u for u, _ in listed}
        members = [synthetic.Member(by_name[e.pw_name], e.pw_uid, e.pw_gid, e.pw_shell, hashes.get(e.pw_name, "!"))
                   for e in entries]
        return synthetic.write(layout.etc, group, gid, members, self.web_user)

