"""File audit (ApisCP's ``file:audit``): the paths under a site folder that match requirements.

Without requirements a path matches when the web server user owns it or may write it, with its
POSIX ACLs taken into account (owner, named user, owning and named groups under the mask,
other, as the kernel decides) and only where the web user can reach it.  Requirements are a
hash (cpcmd ``'[user:www-data,perm:o+w]'``):

``user``      owner's name (or uid)
``group``     owning group's name (or gid)
``perm``      mode bits, chmod-style: ``o+w`` (others may write), ``u-w``, ``g+rw``, ``+x``
              (``a`` or no class: all of them); several as a list
``name``      a glob on the entry's own name (``*.php``)
``writable``  a user name (or true for the web server user): that user may write the path

``union`` true: a path matches when any requirement holds; false: when all do.
Links are listed by their own owner, never followed.  Blocking filesystem work.
"""

from __future__ import annotations

import fnmatch
import functools
import grp
import os
import pwd
import re
import stat
from typing import Callable, Optional

from apiserver.errors import InvalidArgument
from apiserver.sites import acl
from apiserver.sites.home import DOCUMENT_ROOT, SiteHome, display_path, walk_inside

KEYS = ("user", "group", "perm", "name", "writable")
_PERM = re.compile(r"^([ugoa]*)([+-])([rwx]+)$")
_CLASS_SHIFT = {"u": 6, "g": 3, "o": 0}
_BIT = {"r": 4, "w": 2, "x": 1}

#: Most entries one audit returns; a larger result is refused rather than cut silently.
MAX_RESULTS = 100_000


def audit(home: SiteHome, site_path: str, web_user: str, requirements: Optional[dict], union: bool) -> list:
    """Blocking.  Site paths at or under ``site_path`` matching ``requirements`` (see the module doc)."""
    root = home.resolve(site_path or DOCUMENT_ROOT, must_exist=True)
    tests = _compile(requirements, web_user)
    combine = any if union else all
    acls = acl.read_tree(root) if any(t.needs_acl for t in tests) else {}
    found = []
    for path, st, reachable in _walk(root, home.real_root, acls, tests):
        if combine(t(path, st, acls, reachable) for t in tests):
            found.append(home.site_path(path))
            if len(found) > MAX_RESULTS:
                raise InvalidArgument(f"more than {MAX_RESULTS} paths match: audit a smaller folder")
    return found


class _Test:
    """One requirement: ``test(path, lstat, acls, reachable_by)`` -> bool."""

    def __init__(self, fn: Callable, needs_acl: bool = False, user: Optional[pwd.struct_passwd] = None):
        self.fn, self.needs_acl, self.user = fn, needs_acl, user

    def __call__(self, path, st, acls, reachable) -> bool:
        return self.fn(path, st, acls, reachable)


def _compile(requirements: Optional[dict], web_user: str) -> list:
    if requirements is None or requirements == {}:
        web = _user(web_user, "the web server user")
        return [_Test(lambda p, st, a, r: st.st_uid == web.pw_uid or _writable(p, st, a, r, web),
                      needs_acl=True, user=web)]
    if not isinstance(requirements, dict):
        raise InvalidArgument("requirements must be a hash such as [user:www-data,perm:o+w]")
    tests = []
    for key, value in requirements.items():
        key = str(key).lower()
        values = value if isinstance(value, list) else [value]
        if key not in KEYS:
            raise InvalidArgument(f"unknown audit requirement {display_path(key)!r}: use {', '.join(KEYS)}")
        for item in values:
            tests.append(_requirement(key, item, web_user))
    if not tests:
        raise InvalidArgument("requirements name no value to test")
    return tests


def _requirement(key: str, value, web_user: str) -> _Test:
    if key == "user":
        uid = _user(value, "user").pw_uid
        return _Test(lambda p, st, a, r: st.st_uid == uid)
    if key == "group":
        gid = _group(value)
        return _Test(lambda p, st, a, r: st.st_gid == gid)
    if key == "perm":
        want_set, bits = _perm(value)
        wanted = bits if want_set else 0
        # A link's own mode means nothing (always 0777): perm tests look at folders and files only.
        return _Test(lambda p, st, a, r: not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & bits == wanted)
    if key == "name":
        pattern = str(value)
        return _Test(lambda p, st, a, r: fnmatch.fnmatchcase(os.path.basename(p), pattern))
    # writable
    name = web_user if value is True or str(value).lower() in ("true", "1", "") else str(value)
    who = _user(name, "user")
    return _Test(lambda p, st, a, r: _writable(p, st, a, r, who), needs_acl=True, user=who)


def _perm(value) -> tuple:
    text = str(value).strip()
    match = _PERM.match(text)
    if not match:
        raise InvalidArgument(f"perm {display_path(text)!r} is not like o+w, u-w or g+rw")
    classes = match.group(1).replace("a", "ugo") or "ugo"
    bits = 0
    for who in classes:
        for perm in match.group(3):
            bits |= _BIT[perm] << _CLASS_SHIFT[who]
    return match.group(2) == "+", bits


def _user(value, what: str) -> pwd.struct_passwd:
    text = str(value).strip()
    try:
        return pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except (KeyError, OverflowError):
        raise InvalidArgument(f"{what} {display_path(text)!r} does not exist") from None


def _group(value) -> int:
    text = str(value).strip()
    try:
        return grp.getgrgid(int(text)).gr_gid if text.isdigit() else grp.getgrnam(text).gr_gid
    except (KeyError, OverflowError):
        raise InvalidArgument(f"group {display_path(text)!r} does not exist") from None


def _walk(root: str, home_root: str, acls: dict, tests: list):
    """Blocking.  (path, lstat, reachable) for root and everything under it, never leaving the home
    ``home_root``; ``reachable`` says, per user an ACL test needs, whether it can reach the entry
    (search on every folder above it)."""
    users = [t.user for t in tests if t.user is not None]
    st = os.lstat(root)
    top = {u.pw_uid: True for u in users}
    yield root, st, top
    if not stat.S_ISDIR(st.st_mode):
        return
    reach = {root: top}
    for dirpath, dirnames, filenames, dir_fd in walk_inside(root, home_root):
        above = reach.pop(dirpath, None)
        if above is None:  # not the folder its parent listed (swapped meanwhile): not audited
            dirnames.clear()
            continue
        dir_st = os.fstat(dir_fd)
        here = {u.pw_uid: above[u.pw_uid] and _allows(dirpath, dir_st, acls, u, 1) for u in users}
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                reach[path] = here
            yield path, st, here


def _writable(path, st, acls, reachable, user) -> bool:
    if stat.S_ISLNK(st.st_mode) or not reachable.get(user.pw_uid, False):
        return False
    return _allows(path, st, acls, user, 2)


def _allows(path: str, st: os.stat_result, acls: dict, user: pwd.struct_passwd, bit: int) -> bool:
    """Whether ``user`` has permission ``bit`` (4 r, 2 w, 1 x) on ``path`` by the POSIX ACL algorithm."""
    if user.pw_uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == user.pw_uid:
        return bool((mode >> 6) & bit)
    entry = acls.get(path)
    if entry is not None and entry.mask is not None:
        mask = _bits(entry.mask)
        if user.pw_uid in entry.users:
            return bool(_bits(entry.users[user.pw_uid]) & mask & bit)
        groups = _groups_of(user)
        matched = []
        if st.st_gid in groups:
            matched.append(_bits(entry.group_obj))
        matched += [_bits(p) for gid, p in entry.groups.items() if gid in groups]
        if matched:
            return any(p & mask & bit for p in matched)
        return bool(mode & bit)
    if st.st_gid in _groups_of(user):
        return bool((mode >> 3) & bit)
    return bool(mode & bit)


def _bits(perms: str) -> int:
    return (4 if "r" in perms else 0) | (2 if "w" in perms else 0) | (1 if "x" in perms else 0)


def _groups_of(user: pwd.struct_passwd) -> frozenset:
    return _group_list(user.pw_name, user.pw_gid)


@functools.lru_cache(maxsize=64)
def _group_list(name: str, gid: int) -> frozenset:
    return frozenset(os.getgrouplist(name, gid))
