"""POSIX ACLs, read and written in process as the kernel keeps them: extended attributes.

A file's access ACL is the attribute ``system.posix_acl_access``, a folder's default ACL (what
new entries inherit) ``system.posix_acl_default``, both in the kernel's format
(``include/uapi/linux/posix_acl_xattr.h``: a version word, then sorted ``(tag, perm, id)``
entries).  A file without the attribute has only the entries its mode bits give.  The changes
follow ``setfacl``'s rules, a few syscalls per file instead of a process per batch:

- :func:`grant_folder` is ``setfacl -m u:UID:rwx,d:u:UID:rwx`` (the mask recalculated; a folder
  without a default ACL gets one from its access ACL's owner, group and other entries);
- :func:`grant_file` is ``setfacl -m u:UID:rwX`` (execute only where some entry has it);
- :func:`revoke` is ``setfacl -n -x u:UID,d:u:UID`` (everyone else's effective rights stay as
  they are), and more tidy: the mask is narrowed to what the remaining entries use, and an ACL
  left without named entries becomes plain mode bits again (``ls -l`` no longer shows the
  group a write right the mask kept from the web user's entry).

A *target* is what :func:`os.getxattr` takes: an open descriptor (not ``O_PATH``), or a path.
For an ``O_PATH`` descriptor pass :func:`handle` (``/proc/self/fd/N``): the ACL then lands on
exactly the file that was opened and checked, whatever happens to the names on its path.
Nothing is written when the result equals what is there.  Everything here is blocking.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pwd
import struct
from typing import Optional, Union

from twisted.logger import Logger

from apiserver.errors import ServerError

_log = Logger(namespace="apiserver.sites.acl")

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"

#: Entry tags of the kernel's format, in the order it requires.
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_VERSION = 2
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_ID = struct.Struct("<I")
_HEADER_BYTES = _HEADER.pack(_VERSION)
_USER_TAG = struct.pack("<H", USER)

READ, WRITE, EXECUTE = 4, 2, 1
RWX = READ | WRITE | EXECUTE

Target = Union[int, str]


def handle(fd: int) -> str:
    """The path that names the file open at ``fd`` itself (also an ``O_PATH`` descriptor)."""
    return f"/proc/self/fd/{fd}"


@dataclasses.dataclass
class Acl:
    """One ACL: the owner, owning group and other entries, named users and groups (id -> perm
    bits, 4 r, 2 w, 1 x) and the mask (None when there are no named entries)."""

    user_obj: int
    group_obj: int
    other: int
    mask: Optional[int] = None
    users: dict = dataclasses.field(default_factory=dict)
    groups: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_mode(cls, mode: int) -> "Acl":
        """The ACL that mode bits alone give (what a file without the attribute has)."""
        return cls((mode >> 6) & 7, (mode >> 3) & 7, mode & 7)

    @classmethod
    def decode(cls, data: bytes) -> "Acl":
        """Parse the kernel's format; ValueError when it is not one."""
        if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
            raise ValueError("not a POSIX ACL attribute")
        if _HEADER.unpack_from(data)[0] != _VERSION:
            raise ValueError("unknown POSIX ACL version")
        acl = cls(0, 0, 0)
        for tag, perm, qualifier in _ENTRY.iter_unpack(memoryview(data)[_HEADER.size:]):
            perm &= 7
            if tag == USER:
                acl.users[qualifier] = perm
            elif tag == GROUP:
                acl.groups[qualifier] = perm
            elif tag == USER_OBJ:
                acl.user_obj = perm
            elif tag == GROUP_OBJ:
                acl.group_obj = perm
            elif tag == MASK:
                acl.mask = perm
            elif tag == OTHER:
                acl.other = perm
            else:
                raise ValueError(f"unknown POSIX ACL tag {tag:#x}")
        return acl

    def allows(self, st: os.stat_result, uid: int, gids: frozenset, bit: int) -> bool:
        """Whether the user ``uid`` (in groups ``gids``) has ``bit`` on the file ``st`` describes,
        by the POSIX ACL algorithm (the kernel's ``posix_acl_permission``); root always has."""
        if uid == 0:
            return True
        if st.st_uid == uid:
            return bool(self.user_obj & bit)
        mask = RWX if self.mask is None else self.mask
        if uid in self.users:
            return bool(self.users[uid] & mask & bit)
        matched = False
        if st.st_gid in gids:
            if self.group_obj & mask & bit:
                return True
            matched = True
        for gid, perm in self.groups.items():
            if gid in gids:
                if perm & mask & bit:
                    return True
                matched = True
        return False if matched else bool(self.other & bit)


def read(target: Target, kind: str = ACCESS, follow_symlinks: bool = True) -> Optional[Acl]:
    """Blocking.  The ACL ``kind`` of ``target``; None when it has none (its mode bits are its ACL).

    ``follow_symlinks=False`` reads a link's own (never its target's): links have none.
    """
    data = read_attribute(target, kind, follow_symlinks)
    return None if data is None else _decoded(data)


def access_of(target: Target, st: os.stat_result, follow_symlinks: bool = True, expected: bool = False) -> Acl:
    """Blocking.  The access ACL of ``target`` (whose lstat is ``st``), from its mode bits when it has
    none.  Shared between files with the same ACL: never change what it returns.

    Asks ``listxattr`` first (most files have no ACL, and that answer costs one call and no
    exception), or, when an ACL is ``expected``, ``getxattr`` straight away.
    """
    if not expected:
        try:
            names = os.listxattr(target, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            names = ()
        if ACCESS not in names:
            return of_mode(st.st_mode)
    data = read_attribute(target, ACCESS, follow_symlinks)
    return of_mode(st.st_mode) if data is None else _decoded(data)


def of_mode(mode: int) -> Acl:
    """The ACL mode bits alone give (shared: never change it)."""
    mode &= 0o777
    found = _FROM_MODE.get(mode)
    if found is None:
        found = _FROM_MODE[mode] = Acl.from_mode(mode)
    return found


#: Decoded ACLs by their attribute's bytes, and by mode: a site's files share a handful of each.
_DECODED: dict = {}
_FROM_MODE: dict = {}
_DECODED_MAX = 4096


def _decoded(data: bytes) -> Acl:
    found = _DECODED.get(data)
    if found is None:
        try:
            found = Acl.decode(data)
        except ValueError as exc:
            raise ServerError(f"unreadable POSIX ACL: {exc}") from None
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[data] = found
    return found


def read_attribute(target: Target, kind: str, follow_symlinks: bool = True) -> Optional[bytes]:
    """Blocking.  The raw attribute ``kind`` of ``target``; None when it has none."""
    try:
        return os.getxattr(target, kind, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None
        raise


def folder_access(target: Target, st: os.stat_result) -> tuple:
    """Blocking.  (access ACL, default ACL or None) of the folder ``target`` (whose stat is ``st``):
    one ``listxattr`` says which there are, a ``getxattr`` reads each that is."""
    try:
        names = os.listxattr(target)
    except OSError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise
        names = ()
    access = read_attribute(target, ACCESS) if ACCESS in names else None
    default = read_attribute(target, DEFAULT) if DEFAULT in names else None
    return (of_mode(st.st_mode) if access is None else _decoded(access),
            None if default is None else _decoded(default))


def decoded(data: Optional[bytes], mode: int) -> Acl:
    """The ACL of the attribute bytes ``data`` (None: the mode bits ``mode``); shared: never change it."""
    return of_mode(mode) if data is None else _decoded(data)


def _stored(target: Target) -> tuple:
    """Blocking.  (access attribute, default attribute) of ``target``, each bytes or None; one
    ``listxattr``, and a ``getxattr`` only for what is there."""
    try:
        names = os.listxattr(target)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return None, None
        raise
    if not names:
        return None, None  # the common case: no attribute at all
    return (read_attribute(target, ACCESS) if ACCESS in names else None,
            read_attribute(target, DEFAULT) if DEFAULT in names else None)


def _write(target: Target, kind: str, data: bytes) -> None:
    try:
        os.setxattr(target, kind, data)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            raise ServerError("this filesystem does not support POSIX ACLs (mount it with acl)") from None
        raise


# The changes work on the attribute's entries as (tag, perm, id) tuples: the hot path of a walk
# over a site, so no object is built per file.

def _entries(data: Optional[bytes], mode: int) -> list:
    """The entries of an attribute, or those the mode bits give when there is none."""
    if data is None:
        return [(USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID), (GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID),
                (OTHER, mode & 7, _UNDEFINED_ID)]
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size or data[:4] != _HEADER_BYTES:
        raise ServerError("unreadable POSIX ACL: not a version 2 attribute")
    return list(_ENTRY.iter_unpack(memoryview(data)[_HEADER.size:]))


def _with_user(entries: list, uid: int, perm: int) -> bytes:
    """The attribute of ``entries`` with ``uid``'s entry set to ``perm`` and the mask recalculated
    (setfacl -m), in the kernel's order."""
    kept = [e for e in entries if e[0] != MASK and not (e[0] == USER and e[2] == uid)]
    kept.append((USER, perm, uid))
    mask = 0
    for tag, bits, _id in kept:
        if tag & (USER | GROUP_OBJ | GROUP):
            mask |= bits
    kept.append((MASK, mask, _UNDEFINED_ID))
    kept.sort(key=_order)
    return _HEADER_BYTES + b"".join([_ENTRY.pack(*e) for e in kept])


def _order(entry: tuple) -> tuple:
    return entry[0], entry[2]


def _without_user(data: bytes, uid: int) -> Optional[bytes]:
    """The attribute without ``uid``'s entry; None when it has none.

    The mask is narrowed to what the remaining entries use, never widened (recalculating it as
    setfacl does without ``-n`` would give back to the owning group what a chmod took away), so
    everyone keeps exactly the rights they had.  Without named entries left the mask goes, folded
    into the owning group's entry: the ACL is then what mode bits say, and the kernel keeps it as
    just those (the attribute goes, the mode shows the real group rights again).
    """
    entries = _entries(data, 0)
    kept = [e for e in entries if not (e[0] == USER and e[2] == uid)]
    if len(kept) == len(entries):
        return None
    mask = next((bits for tag, bits, _id in kept if tag == MASK), RWX)
    if any(tag & (USER | GROUP) for tag, _bits, _id in kept):
        used = 0
        for tag, bits, _id in kept:
            if tag & (USER | GROUP_OBJ | GROUP):
                used |= bits
        kept = [(MASK, mask & used, i) if tag == MASK else (tag, bits, i) for tag, bits, i in kept]
    else:
        kept = [(GROUP_OBJ, bits & mask, i) if tag == GROUP_OBJ else (tag, bits, i)
                for tag, bits, i in kept if tag != MASK]
    return _HEADER_BYTES + b"".join([_ENTRY.pack(*e) for e in kept])


#: New attributes by (change, old attribute or mode, user): a site's files share a handful of
#: ACLs, so most changes are a look-up.
_CHANGES: dict = {}
_CHANGES_MAX = 4096
_MISSING = object()


def _changed(key: tuple, compute) -> Optional[bytes]:
    found = _CHANGES.get(key, _MISSING)
    if found is _MISSING:
        if len(_CHANGES) >= _CHANGES_MAX:
            _CHANGES.clear()
        found = _CHANGES[key] = compute()
    return found


def _granted(access: Optional[bytes], mode: int, uid: int, folder: bool) -> bytes:
    def compute() -> bytes:
        entries = _entries(access, mode)
        execute = folder or any(bits & EXECUTE for tag, bits, _id in entries if tag != MASK)
        return _with_user(entries, uid, READ | WRITE | (EXECUTE if execute else 0))

    return _changed(("grant", access or mode & 0o777, uid, folder), compute)


def _inherited(default: Optional[bytes], access: Optional[bytes], mode: int, uid: int) -> bytes:
    def compute() -> bytes:
        if default is not None:
            base = _entries(default, mode)
        else:  # setfacl starts a default ACL from the access ACL's base entries
            base = [e for e in _entries(access, mode) if e[0] in (USER_OBJ, GROUP_OBJ, OTHER)]
        return _with_user(base, uid, RWX)

    return _changed(("inherit", default, access or mode & 0o777, uid), compute)


def grant_folder(target: Target, st: os.stat_result, uid: int, inherit: bool = True) -> bool:
    """Blocking.  ``uid`` may list, enter, create and remove entries in the folder; with ``inherit``
    new entries inherit that (``setfacl -m u:UID:rwx,d:u:UID:rwx``).  True when something changed."""
    access, default = _stored(target)
    changed = False
    granted = _granted(access, st.st_mode, uid, folder=True)
    if granted != access:
        _write(target, ACCESS, granted)
        changed = True
    if inherit:
        inherited = _inherited(default, access, st.st_mode, uid)
        if inherited != default:
            _write(target, DEFAULT, inherited)
            changed = True
    return changed


def grant_file(target: Target, st: os.stat_result, uid: int) -> bool:
    """Blocking.  ``uid`` may read and write the file, and execute it where some entry other than the
    mask has execute (``setfacl -m u:UID:rwX``).  True when something changed."""
    access, _default = _stored(target)
    granted = _granted(access, st.st_mode, uid, folder=False)
    if granted == access:
        return False
    _write(target, ACCESS, granted)
    return True


def revoke(target: Target, st: os.stat_result, uid: int) -> bool:
    """Blocking.  Remove ``uid``'s entries, access and (on folders) default; everyone else keeps the
    rights they had (``setfacl -n -x u:UID,d:u:UID``, with the mask narrowed to what is left: see
    :func:`_without_user`).  True when something changed."""
    changed = False
    access, default = _stored(target)
    for kind, data in ((ACCESS, access), (DEFAULT, default)):
        if data is not None:
            without = _changed(("revoke", data, uid), lambda data=data: _without_user(data, uid))
            if without is not None:
                _write(target, kind, without)
                changed = True
    return changed


# --- search on the folders above the sites (state_dir) ------------------------------------------

def can_search(path: str, user: str) -> bool:
    """Blocking.  Whether ``user`` may pass through the folder ``path`` by its mode bits or ACL."""
    entry = pwd.getpwnam(user)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        return access_of(fd, st).allows(st, entry.pw_uid, user_groups(entry.pw_name, entry.pw_gid), EXECUTE)
    finally:
        os.close(fd)


def grant_search(path: str, user: str) -> None:
    """Blocking.  Let ``user`` pass through the folder ``path`` (execute added to its ACL entry; it
    lists nothing).  ServerError without the host path when the ACL cannot be set."""
    uid = pwd.getpwnam(user).pw_uid
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            access, _default = _stored(fd)
            entries = _entries(access, st.st_mode)
            current = next((bits for tag, bits, qualifier in entries if tag == USER and qualifier == uid), 0)
            granted = _with_user(entries, uid, current | EXECUTE)
            if granted != access:
                _write(fd, ACCESS, granted)
        finally:
            os.close(fd)
    except (OSError, ServerError) as exc:
        # The host path goes to the log only: a fault never names the server's layout.
        _log.error("cannot let {user} reach {path}: {error}", user=user, path=path, error=exc)
        raise ServerError(f"cannot let {user} reach the sites' folders through state_dir "
                          f"(see the server log)") from None


def user_groups(name: str, gid: int) -> frozenset:
    """Blocking.  Every group id of the user ``name`` (primary ``gid``)."""
    return frozenset(os.getgrouplist(name, gid))


def deny(target: Target, st: os.stat_result, uid: int) -> bool:
    """Blocking.  ``uid`` may neither read, write nor execute the entry (``setfacl -m u:UID:---``);
    everyone else keeps what the mode gives them.  True when something changed."""
    access, _default = _stored(target)
    denied = _with_user(_entries(access, st.st_mode), uid, 0)
    if denied == access:
        return False
    _write(target, ACCESS, denied)
    return True


def set_user_entry(path: str, uid: int, perm: int) -> bool:
    """Blocking.  Set the ACL entry of ``uid`` on ``path`` (not following a link) to exactly
    ``perm`` (``setfacl -m u:<uid>:<perm>``; the mask recalculated); whether it changed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        access, _default = _stored(fd)
        granted = _with_user(_entries(access, st.st_mode), uid, perm)
        if granted == access:
            return False
        _write(fd, ACCESS, granted)
        return True
    finally:
        os.close(fd)
