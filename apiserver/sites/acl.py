"""POSIX ACLs, read and written in process as the kernel keeps them: extended attributes.

A file's access ACL is the attribute ``system.posix_acl_access``, a folder's default ACL (what
new entries inherit) ``system.posix_acl_default``, both in the kernel's format
(``include/uapi/linux/posix_acl_xattr.h``: a version word, then sorted ``(tag, perm, id)``
entries).  A file without the attribute has only the entries its mode bits give.  The changes
follow ``setfacl``'s rules exactly, so Fortification and the DAV endpoint give the web server
user access as before, one syscall pair per file instead of a process per batch:

- :func:`grant_folder` is ``setfacl -m u:UID:rwx,d:u:UID:rwx`` (the mask recalculated; a folder
  without a default ACL gets one from its access ACL's owner, group and other entries);
- :func:`grant_file` is ``setfacl -m u:UID:rwX`` (execute only where some entry has it);
- :func:`revoke` is ``setfacl -n -x u:UID,d:u:UID``: the mask stays, since recalculating it
  would widen the owning group's effective rights.

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
import stat
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

    def encode(self) -> bytes:
        entries = [(USER_OBJ, self.user_obj, _UNDEFINED_ID)]
        entries += [(USER, perm, uid) for uid, perm in sorted(self.users.items())]
        entries.append((GROUP_OBJ, self.group_obj, _UNDEFINED_ID))
        entries += [(GROUP, perm, gid) for gid, perm in sorted(self.groups.items())]
        if self.mask is not None:
            entries.append((MASK, self.mask, _UNDEFINED_ID))
        entries.append((OTHER, self.other, _UNDEFINED_ID))
        return _HEADER.pack(_VERSION) + b"".join(_ENTRY.pack(*entry) for entry in entries)

    def copy(self) -> "Acl":
        return dataclasses.replace(self, users=dict(self.users), groups=dict(self.groups))

    def recalculate_mask(self) -> None:
        """The mask as setfacl sets it: the union of the group class (named users, owning and named groups)."""
        mask = self.group_obj
        for perm in self.users.values():
            mask |= perm
        for perm in self.groups.values():
            mask |= perm
        self.mask = mask

    def any_execute(self) -> bool:
        """Whether some entry other than the mask grants execute (setfacl's ``X``)."""
        return bool((self.user_obj | self.group_obj | self.other | _union(self.users) | _union(self.groups))
                    & EXECUTE)

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


def _union(perms: dict) -> int:
    result = 0
    for perm in perms.values():
        result |= perm
    return result


def read(target: Target, kind: str = ACCESS, follow_symlinks: bool = True) -> Optional[Acl]:
    """Blocking.  The ACL ``kind`` of ``target``; None when it has none (its mode bits are its ACL).

    ``follow_symlinks=False`` reads a link's own (never its target's): links have none.
    """
    try:
        data = os.getxattr(target, kind, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None
        raise
    try:
        return Acl.decode(data)
    except ValueError as exc:
        raise ServerError(f"unreadable POSIX ACL: {exc}") from None


def access_of(target: Target, st: os.stat_result, follow_symlinks: bool = True) -> Acl:
    """Blocking.  The access ACL of ``target`` (whose lstat is ``st``), from its mode bits when it has none.

    Asks ``listxattr`` first: most files have no ACL, and that answer costs one call and no exception.
    """
    found = read(target, ACCESS, follow_symlinks) if _listed(target, ACCESS, follow_symlinks) else None
    return found if found is not None else Acl.from_mode(st.st_mode)


def _listed(target: Target, kind: str, follow_symlinks: bool = True) -> bool:
    try:
        return kind in os.listxattr(target, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return False
        raise


def _write(target: Target, kind: str, acl: Acl) -> None:
    try:
        os.setxattr(target, kind, acl.encode())
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            raise ServerError("this filesystem does not support POSIX ACLs (mount it with acl)") from None
        raise


def _set_user(acl: Acl, uid: int, perm: int) -> Acl:
    changed = acl.copy()
    changed.users[uid] = perm
    changed.recalculate_mask()
    return changed


def grant_folder(target: Target, st: os.stat_result, uid: int, inherit: bool = True) -> bool:
    """Blocking.  ``uid`` may list, enter, create and remove entries in the folder; with ``inherit``
    new entries inherit that (``setfacl -m u:UID:rwx,d:u:UID:rwx``).  True when something changed."""
    access = access_of(target, st)
    changed = False
    granted = _set_user(access, uid, RWX)
    if granted != access:
        _write(target, ACCESS, granted)
        changed = True
    if inherit:
        default = read(target, DEFAULT)
        # No default ACL yet: setfacl starts one from the access ACL's base entries.
        base = default if default is not None else Acl(access.user_obj, access.group_obj, access.other)
        inherited = _set_user(base, uid, RWX)
        if inherited != default:
            _write(target, DEFAULT, inherited)
            changed = True
    return changed


def grant_file(target: Target, st: os.stat_result, uid: int) -> bool:
    """Blocking.  ``uid`` may read and write the file, and execute it where some entry can
    (``setfacl -m u:UID:rwX``).  True when something changed."""
    access = access_of(target, st)
    perm = READ | WRITE | (EXECUTE if stat.S_ISDIR(st.st_mode) or access.any_execute() else 0)
    granted = _set_user(access, uid, perm)
    if granted == access:
        return False
    _write(target, ACCESS, granted)
    return True


def revoke(target: Target, st: os.stat_result, uid: int) -> bool:
    """Blocking.  Remove ``uid``'s entries, access and (on folders) default; the mask and every
    other entry stay (``setfacl -n -x u:UID,d:u:UID``).  True when something changed."""
    changed = False
    kinds = (ACCESS, DEFAULT) if stat.S_ISDIR(st.st_mode) else (ACCESS,)
    for kind in kinds:
        acl = read(target, kind)
        if acl is not None and uid in acl.users:
            del acl.users[uid]
            _write(target, kind, acl)
            changed = True
    return changed


def has_acl(target: Target, follow_symlinks: bool = True) -> bool:
    """Blocking.  Whether ``target`` carries an access ACL (one listxattr, no exception on the
    common answer "no"; a file has no default ACL)."""
    return _listed(target, ACCESS, follow_symlinks)


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
            access = access_of(fd, st)
            granted = _set_user(access, uid, access.users.get(uid, 0) | EXECUTE)
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
