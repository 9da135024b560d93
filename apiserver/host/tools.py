"""The system's own account tools, one at a time.

groupadd, useradd, usermod, chpasswd, userdel and groupdel take the shadow suite's lock
(``lckpwdf``) themselves, so other programs changing accounts at the same moment are safe; the
process-wide :data:`LOCK` also keeps this server's own threads in line (a burst of site
creations waits here instead of failing on the shadow lock).  Every function blocks.
"""

from __future__ import annotations

import grp
import pwd
import subprocess
import threading
from typing import Iterable, Optional

from apiserver.errors import Exists, ServerError

#: Held around every call of an account tool from this process.
LOCK = threading.Lock()

#: The shell of an account that may not log in.
NOLOGIN = "/usr/sbin/nologin"

#: The shell of an account allowed to log in (``ssh.enabled``).
LOGIN_SHELL = "/bin/bash"

_SHADOW = "/etc/shadow"
_TIMEOUT = 120

# Exit statuses of the shadow suite's tools.
_NAME_IN_USE = 9
_NO_SUCH_ACCOUNT = 6


def _run(argv: list, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    with LOCK:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)


def _fail(what: str, done: subprocess.CompletedProcess) -> ServerError:
    message = (done.stderr or done.stdout or "").strip().splitlines()
    return ServerError(f"{what} failed (exit {done.returncode}): {message[-1] if message else 'no message'}")


def add_group(name: str) -> int:
    """Blocking.  Make the group ``name``; its gid.  Exists when the name is taken."""
    done = _run(["groupadd", "--", name])
    if done.returncode == _NAME_IN_USE:
        raise Exists(f"the system group {name!r} exists already")
    if done.returncode:
        raise _fail(f"groupadd {name}", done)
    return grp.getgrnam(name).gr_gid


def add_user(name: str, gid: int, home: str, shell: str, comment: str = "") -> int:
    """Blocking.  Make the user ``name`` (primary group ``gid``, no home made, no own group,
    password locked); its uid.  Exists when the name is taken."""
    done = _run(["useradd", "--no-create-home", "--no-user-group", "--gid", str(gid), "--home-dir", home,
                 "--shell", shell, "--comment", comment, "--", name])
    if done.returncode == _NAME_IN_USE:
        raise Exists(f"the system user {name!r} exists already")
    if done.returncode:
        raise _fail(f"useradd {name}", done)
    return pwd.getpwnam(name).pw_uid


def set_shell(name: str, shell: str) -> None:
    """Blocking.  Give ``name`` the login shell ``shell``."""
    _usermod(name, "--shell", shell)


def lock_user(name: str) -> None:
    """Blocking.  Lock ``name``'s password (``usermod -L``: a ``!`` before the hash)."""
    _usermod(name, "--lock")


def unlock_user(name: str) -> None:
    """Blocking.  Undo :func:`lock_user`."""
    _usermod(name, "--unlock")


def _usermod(name: str, *options: str) -> None:
    done = _run(["usermod", *options, "--", name])
    if done.returncode:
        raise _fail(f"usermod {' '.join(options)} {name}", done)


def set_password_hashes(hashes: dict) -> None:
    """Blocking.  Store crypt(3) hashes ``{user: hash}`` in /etc/shadow (``chpasswd -e``, read
    from its standard input: no hash on a command line)."""
    if not hashes:
        return
    for name, value in hashes.items():
        if ":" in name or ":" in value or "\n" in name + value:
            raise ServerError(f"refusing a password entry for {name!r} with ':' or a newline")
    done = _run(["chpasswd", "--encrypted"], stdin="".join(f"{n}:{h}\n" for n, h in hashes.items()))
    if done.returncode:
        raise _fail("chpasswd", done)


def delete_user(name: str) -> bool:
    """Blocking.  Remove the user ``name`` (its files are removed by the caller); False when it did
    not exist."""
    return _delete("userdel", name)


def delete_group(name: str) -> bool:
    """Blocking.  Remove the group ``name``; False when it did not exist."""
    return _delete("groupdel", name)


def _delete(command: str, name: str) -> bool:
    """Blocking.  ``command -- name`` (userdel, groupdel); False when there was no such account."""
    done = _run([command, "--", name])
    if done.returncode == _NO_SUCH_ACCOUNT:
        return False
    if done.returncode:
        raise _fail(f"{command} {name}", done)
    return True


def shadow_entries(names: Iterable[str]) -> dict:
    """Blocking.  ``{name: password field}`` of /etc/shadow for those of ``names`` it lists."""
    wanted = set(names)
    found = {}
    with LOCK, open(_SHADOW, encoding="utf-8") as shadow:
        for line in shadow:
            fields = line.rstrip("\n").split(":")
            if len(fields) > 1 and fields[0] in wanted:
                found[fields[0]] = fields[1]
    return found
