"""A site's own ``etc/passwd``, ``etc/group`` and ``etc/shadow`` in its synthetic root.

They list the relevant system users (root, nobody and the web server's user) and the site's own
users only, by their plain names and with the homes the site sees (``/home/<user>``); ``shadow``
holds the same crypt(3) hashes as the host's /etc/shadow (copied from it, so every change,
reset, lock and deletion there is written here too) and is 0600 root.  Each file is written to
a temporary name beside it and renamed over the old one: a reader sees the old or the new
file, never half of one.  All blocking.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
import tempfile
from typing import Optional

#: System accounts every site's passwd lists (those that exist here).
SYSTEM_USERS = ("root", "nobody")



@dataclasses.dataclass(frozen=True)
class Member:
    """One user of the site in its synthetic root."""

    username: str     # the plain name inside the site
    uid: int
    gid: int
    shell: str
    password: str     # the host's /etc/shadow password field (a crypt(3) hash, '!...' when locked)


def write(etc: str, group_name: str, gid: int, members: list, web_user: Optional[str]) -> bool:
    """Blocking.  Write ``etc/passwd``, ``etc/group`` and ``etc/shadow`` for ``members``; whether
    any of them changed (a file already as it should be is left alone)."""
    system = []
    for name in SYSTEM_USERS + ((web_user,) if web_user else ()):
        try:
            system.append(pwd.getpwnam(name))
        except KeyError:
            continue
    passwd_lines = [_passwd_line(e.pw_name, e.pw_uid, e.pw_gid, e.pw_gecos, e.pw_dir, e.pw_shell) for e in system]
    passwd_lines += [_passwd_line(m.username, m.uid, m.gid, "", f"/home/{m.username}", m.shell) for m in members]
    group_lines = []
    for entry in system:
        try:
            own = grp.getgrgid(entry.pw_gid)
        except KeyError:
            continue
        line = f"{own.gr_name}:x:{own.gr_gid}:\n"
        if line not in group_lines:
            group_lines.append(line)
    group_lines.append(f"{group_name}:x:{gid}:{','.join(m.username for m in members)}\n")
    # No password ageing: the server, not the site, decides when a password changes.
    shadow_lines = [f"{e.pw_name}:*:::::::\n" for e in system]
    shadow_lines += [f"{m.username}:{m.password}:::::::\n" for m in members]
    changed = [_replace(os.path.join(etc, "passwd"), "".join(passwd_lines), 0o644, gid),
               _replace(os.path.join(etc, "group"), "".join(group_lines), 0o644, gid),
               _replace(os.path.join(etc, "shadow"), "".join(shadow_lines), 0o600, 0)]
    return any(changed)


def read_passwd(etc: str) -> list:
    """Blocking.  ``[(name, uid, gid, shell)]`` of the site's passwd (empty when it has none)."""
    try:
        with open(os.path.join(etc, "passwd"), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        fields = line.split(":")
        if len(fields) == 7 and fields[2].isdigit() and fields[3].isdigit():
            found.append((fields[0], int(fields[2]), int(fields[3]), fields[6]))
    return found


def read_shadow(etc: str) -> dict:
    """Blocking.  ``{name: password field}`` of the site's shadow."""
    try:
        with open(os.path.join(etc, "shadow"), encoding="utf-8") as handle:
            return {f[0]: f[1] for f in (line.split(":") for line in handle.read().splitlines()) if len(f) > 1}
    except FileNotFoundError:
        return {}


def _passwd_line(name: str, uid: int, gid: int, gecos: str, home: str, shell: str) -> str:
    for field in (name, gecos, home, shell):
        if ":" in field or "\n" in field:
            raise ValueError(f"a passwd field may not contain ':' or a newline: {field!r}")
    return f"{name}:x:{uid}:{gid}:{gecos}:{home}:{shell}\n"


def _replace(path: str, text: str, mode: int, gid: int) -> bool:
    owner = (0, 0 if mode == 0o600 else gid) if os.geteuid() == 0 else None
    try:
        info = os.lstat(path)
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text and stat.S_IMODE(info.st_mode) == mode and stat.S_ISREG(info.st_mode) \
                    and (owner is None or (info.st_uid, info.st_gid) == owner):
                return False
    except FileNotFoundError:
        pass
    folder = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, mode)  # before a byte is written: a hash is never readable by others
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, path)
        return True
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
