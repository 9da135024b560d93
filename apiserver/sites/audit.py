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
Links are listed by their own owner, never followed.  Without requirements a file with more
than one hard link is listed too, whoever owns it: its other names may be outside the home
(Fortification never changes such a file).  Blocking filesystem work.
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import os
import pwd
import re
import stat
from typing import Callable, Optional

from apiserver.errors import InvalidArgument
from apiserver.sites import acl
from apiserver.sites.home import DOCUMENT_ROOT, SiteHome, display_path
from apiserver.sites.walk import FILE_FLAGS, open_file, walk_inside

KEYS = ("user", "group", "perm", "name", "writable")
_PERM = re.compile(r"^([ugoa]*)([+-])([rwx]+)$")
_CLASS_SHIFT = {"u": 6, "g": 3, "o": 0}
_BIT = {"r": 4, "w": 2, "x": 1}

#: Most entries one audit returns; a larger result is refused rather than cut silently.
MAX_RESULTS = 100_000


def audit(home: SiteHome, site_path: str, web_user: str, requirements: Optional[dict], union: bool) -> list:
    """Blocking.  Site paths at or under ``site_path`` matching ``requirements`` (see the module doc), sorted."""
    root = home.resolve(site_path or DOCUMENT_ROOT, must_exist=True)
    tests = _compile(requirements, web_user)
    if requirements is None:
        web_writable = tests[0]

        def matches(name, st, access, reachable) -> bool:
            return (stat.S_ISREG(st.st_mode) and st.st_nlink > 1) or web_writable(name, st, access, reachable)
    elif len(tests) == 1:
        matches = tests[0]
    else:
        combine = any if union else all

        def matches(name, st, access, reachable) -> bool:
            return combine(t(name, st, access, reachable) for t in tests)

    shown = home.site_path(root)
    if len(tests) == 1 and tests[0].fn is _web_default and tests[0].user.pw_uid != 0 \
            and stat.S_ISDIR(os.lstat(root).st_mode):
        found = _audit_web(root, home, shown, tests[0])  # the default audit, the one run most
    else:
        found = []
        for rel, name, st, access, reachable in _walk(root, home, shown, tests):
            if matches(name, st, access, reachable):
                found.append(rel)
                if len(found) > MAX_RESULTS:
                    raise InvalidArgument(f"more than {MAX_RESULTS} paths match: audit a smaller folder")
    base = shown.rstrip("/")
    return sorted(f"{base}/{rel}" if rel else shown for rel in found)


class _Test:
    """One requirement: ``test(name, lstat, access ACL or None, reachable_by)`` -> bool.

    A test that needs the ACL names its ``user`` and the right it asks about (``bit``); the walk
    reads a file's ACL only where it can matter: the mode's group bits (the mask, when there is an
    ACL) or other bits have that right and the user does not own the file.
    """

    def __init__(self, fn: Callable, needs_acl: bool = False, user: Optional[pwd.struct_passwd] = None,
                 bit: int = 0):
        self.fn, self.needs_acl, self.user, self.bit = fn, needs_acl, user, bit
        self.memo: dict = {}  # (id of an ACL, uid, gid) -> (that ACL, whether ``user`` may write)
        self.gids = acl.user_groups(user.pw_name, user.pw_gid) if user is not None else frozenset()

    def __call__(self, name, st, access, reachable) -> bool:
        if self.fn is _web_default:
            return st.st_uid == self.user.pw_uid or _writable(st, access, reachable, self)
        return self.fn(name, st, access, reachable)


def _compile(requirements: Optional[dict], web_user: str) -> list:
    if requirements is None or requirements == {}:
        web = _user(web_user, "the web server user")
        return [_Test(_web_default, needs_acl=True, user=web, bit=acl.WRITE)]
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
        return _Test(lambda n, st, a, r: st.st_uid == uid)
    if key == "group":
        gid = _group(value)
        return _Test(lambda n, st, a, r: st.st_gid == gid)
    if key == "perm":
        want_set, bits = _perm(value)
        wanted = bits if want_set else 0
        # A link's own mode means nothing (always 0777): perm tests look at folders and files only.
        return _Test(lambda n, st, a, r: not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & bits == wanted)
    if key == "name":
        pattern = str(value)
        return _Test(lambda n, st, a, r: fnmatch.fnmatchcase(n, pattern))
    # writable
    name = web_user if value is True or str(value).lower() in ("true", "1", "") else str(value)
    who = _user(name, "user")
    test = _Test(lambda n, st, a, r: _writable(st, a, r, test), needs_acl=True, user=who, bit=acl.WRITE)
    return test


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


def _walk(root: str, home: SiteHome, shown: str, tests: list):
    """Blocking.  (path relative to root, name, lstat, access ACL, reachable) for root and everything
    under it, never leaving the home; the ACL (from the attribute, or the mode bits) only when a
    test needs it, else None; ``reachable`` says, per user an ACL test needs, whether it can reach
    the entry (search on every folder above it)."""
    users = {t.user.pw_uid: t for t in tests if t.user is not None}
    needs_acl = any(t.needs_acl for t in tests)
    acl_bits = 0  # mode bits (group, other) under which a file's ACL can change a test's answer
    for t in tests:
        if t.needs_acl:
            acl_bits |= t.bit << 3 | t.bit
    # With one test, of a user's right (the default audit), a file that user does not own and whose
    # mode gives neither group (the mask) nor other that right cannot match: not even yielded.
    only_uid = None
    if len(tests) == 1 and tests[0].needs_acl and tests[0].user.pw_uid != 0:
        only_uid = tests[0].user.pw_uid
    st = os.lstat(root)
    everyone = {uid: True for uid in users}
    if not stat.S_ISDIR(st.st_mode):
        access = None
        if needs_acl and not stat.S_ISLNK(st.st_mode):
            access = acl.access_of(root, st, follow_symlinks=False)
        yield "", os.path.basename(root), st, access, everyone
        return
    for folder in walk_inside(root, home.real_root, shown=shown):
        st = folder.stat
        above = folder.parent.data if folder.parent is not None else everyone
        access = acl.access_of(folder.fd, st) if needs_acl else None
        yield folder.rel, folder.name or os.path.basename(root), st, access, above
        # Tests that name a user always need the ACL, so ``access`` is there when ``users`` is not empty.
        folder.data = here = {uid: above[uid] and access.allows(st, uid, t.gids, acl.EXECUTE)
                              for uid, t in users.items()}
        for entry in folder.entries:
            if entry.is_dir(follow_symlinks=False):
                continue  # a folder is judged on its own descriptor when the walk enters it
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            if not mode & acl_bits:
                if only_uid is not None and st.st_uid != only_uid and st.st_nlink == 1:
                    continue
                yield folder.child_rel(entry.name), entry.name, st, None, here
                continue
            access = None
            if (st.st_uid not in users or len(users) > 1) and not stat.S_ISLNK(mode):
                # The mode lets the ACL decide: the group bits are the mask of an ACL, most likely.
                if entry.is_file(follow_symlinks=False):
                    read = _file_access(folder.fd, entry.name)
                    if read is None:
                        continue
                    st, access = read
                else:
                    access = acl.access_of(f"{acl.handle(folder.fd)}/{entry.name}", st, follow_symlinks=False)
            yield folder.child_rel(entry.name), entry.name, st, access, here


def _writable(st: os.stat_result, access: Optional[acl.Acl], reachable: dict, test: _Test) -> bool:
    user = test.user
    if stat.S_ISLNK(st.st_mode) or not reachable.get(user.pw_uid, False):
        return False
    # No ACL read: the mode alone decides (see _Test).
    return _may_write(test.memo, access or acl.of_mode(st.st_mode), st, user.pw_uid, test.gids)


def _may_write(memo: dict, rights: acl.Acl, st: os.stat_result, uid: int, gids) -> bool:
    """Whether ``uid`` (in the groups ``gids``) may write an entry with the ACL ``rights`` and the
    lstat ``st``.  A tree's files share a few ACLs and owners: each answer is worked out once per
    audit in ``memo`` (which holds the ACL, so its id is not reused while the key is there)."""
    key = (id(rights), st.st_uid, st.st_gid)
    known = memo.get(key)
    if known is None:
        known = memo[key] = (rights, rights.allows(st, uid, gids, acl.WRITE))
    return known[1]


def _web_default(name, st, access, reachable) -> bool:
    """The default requirement (the web user owns or may write the path): :class:`_Test` knows it."""
    raise AssertionError("called through _Test")


def _audit_web(root: str, home: SiteHome, shown: str, test: _Test) -> list:
    """Blocking.  The default audit of the folder ``root`` in one loop: what :func:`_walk` and the
    default requirement find together, without a tuple per entry, and without reading the ACL of a
    file the web user cannot reach (it cannot write there, whatever the ACL says).

    Per file one ``fstatat`` (as ``find`` does), except in a folder whose default ACL grants the
    web user write (a folder Fortification made writable: its files have such ACLs as a rule),
    where each file is opened straight away and its owner and ACL read on that descriptor.  Per
    folder one ``listxattr`` says which ACLs it has.  Verdicts are memoised by the ACL's bytes,
    owner and group."""
    uid, gids, memo = test.user.pw_uid, test.gids, test.memo
    verdicts: dict = {}  # (ACL bytes or mode bits, owner, group) -> whether the web user may write
    found = []
    add = found.append
    open_, fstat, close, getxattr = os.open, os.fstat, os.close, os.getxattr
    for folder in walk_inside(root, home.real_root, shown=shown):
        st = folder.stat
        reach = folder.parent.data if folder.parent is not None else True
        access, default = acl.folder_access(folder.fd, st)
        if st.st_uid == uid or (reach and access.allows(st, uid, gids, acl.WRITE)):
            add(folder.rel)
        folder.data = here = reach and access.allows(st, uid, gids, acl.EXECUTE)
        prefix = f"{folder.rel}/" if folder.rel else ""
        dir_fd = folder.fd
        # In a folder whose default ACL grants the web user write, files have ACLs as a rule: each is
        # opened straight away, its fstat standing for the lstat (one call fewer per file).  A default
        # ACL left without that entry (after a setfacl -x) does not count: its files rarely need one.
        inherits = here and default is not None and default.users.get(uid, 0) & acl.WRITE
        for entry in folder.entries:
            if entry.is_dir(follow_symlinks=False):
                continue  # judged on its own descriptor when the walk enters it
            if inherits and entry.is_file(follow_symlinks=False):
                try:
                    fd = open_(entry.name, FILE_FLAGS, dir_fd=dir_fd)
                except OSError:
                    fd = -1
                if fd >= 0:
                    try:
                        st = fstat(fd)
                        if st.st_uid == uid:
                            add(prefix + entry.name)
                            continue
                        mode = st.st_mode
                        if not mode & 0o022:
                            continue
                        try:
                            data = getxattr(fd, acl.ACCESS)
                        except OSError as exc:
                            if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                                raise
                            data = None
                    finally:
                        close(fd)
                    key = (data or mode & 0o777, st.st_uid, st.st_gid)
                    verdict = verdicts.get(key)
                    if verdict is None:
                        verdict = verdicts[key] = acl.decoded(data, mode).allows(st, uid, gids, acl.WRITE)
                    if verdict:
                        add(prefix + entry.name)
                    continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_uid == uid:
                add(prefix + entry.name)
                continue
            mode = st.st_mode
            if not here or not mode & 0o022 or stat.S_ISLNK(mode):
                continue  # unreachable, or neither the mask (group bits) nor other gives write
            if entry.is_file(follow_symlinks=False):
                read = _file_access(dir_fd, entry.name)
                if read is None:
                    continue
                st, rights = read
                if st.st_uid == uid:
                    add(prefix + entry.name)
                    continue
            else:
                rights = acl.access_of(f"{acl.handle(dir_fd)}/{entry.name}", st, follow_symlinks=False)
            if _may_write(memo, rights, st, uid, gids):
                add(prefix + entry.name)
        if len(found) > MAX_RESULTS:
            raise InvalidArgument(f"more than {MAX_RESULTS} paths match: audit a smaller folder")
    return found


def _file_access(folder_fd: int, name: str):
    """Blocking.  ``(stat, access ACL)`` of the file ``name`` in ``folder_fd``, both read on one
    descriptor of it so they belong together; None when it is gone (or became a link)."""
    try:
        fd = target = os.open(name, FILE_FLAGS, dir_fd=folder_fd)
    except OSError:
        fd, target = open_file(folder_fd, name)  # gone, a link, or only O_PATH
        if fd < 0:
            return None
    try:
        st = os.fstat(fd)
        return st, acl.access_of(target, st, expected=True)
    finally:
        os.close(fd)
