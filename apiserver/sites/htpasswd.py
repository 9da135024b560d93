"""Apache password files, as ``htpasswd`` (apache2-utils) and mod_authn_file read and write them.

New entries are bcrypt with cost 5 written as ``$2y$05$...`` (Apache's prefix; the bcrypt
library says ``$2b$``, the same algorithm).  Verifying also knows what ``htpasswd`` writes with
``-m`` (``$apr1$``, Apache's MD5-crypt), ``-s`` (``{SHA}``) and ``-d`` (crypt(3)); a plaintext
entry never matches, as with Apache on Unix.  A change rewrites the file atomically (a
temporary file in the same folder, fsync, rename) as mode 0640, owned by the site's owner and
the web server's group; every other line stays byte for byte.  Everything here blocks.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import hmac
import os
import pwd
import re
import secrets
import stat
from typing import Optional

import bcrypt

from apiserver.errors import InvalidArgument, NotFound, ServerError
from apiserver.sites.actas import server_step
from apiserver.sites.home import display_path, open_inside, printable, web_server_user

BCRYPT_COST = 5
FILE_MODE = 0o640
#: crypt_blowfish (Apache's and everyone's bcrypt) reads at most 72 bytes of a password.
BCRYPT_MAX_PASSWORD = 72
MAX_USER_BYTES = 255
MAX_FILE_BYTES = 16 << 20

_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


# --- names and passwords ----------------------------------------------------------------------

def check_user(user) -> bytes:
    """The user name as stored; InvalidArgument for what would break or hide the file's line."""
    if not isinstance(user, str) or user == "":
        raise InvalidArgument("a user name must be a non-empty string")
    if ":" in user:
        raise InvalidArgument("a user name may not contain ':'")
    if any(c in "\r\n" for c in user):
        raise InvalidArgument("a user name may not contain a newline")
    if any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise InvalidArgument("a user name may not contain control characters")
    if user != user.strip():
        raise InvalidArgument("a user name may not begin or end with white space (Apache trims lines)")
    if user.startswith("#"):
        raise InvalidArgument("a user name may not begin with '#' (Apache reads the line as a comment)")
    encoded = user.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_USER_BYTES:
        raise InvalidArgument(f"a user name may have at most {MAX_USER_BYTES} bytes")
    return encoded


def _check_new_password(password) -> bytes:
    if not isinstance(password, str) or password == "":
        raise InvalidArgument("a password must be a non-empty string")
    encoded = password.encode("utf-8")
    if b"\x00" in encoded:
        raise InvalidArgument("a password may not contain NUL")
    if len(encoded) > BCRYPT_MAX_PASSWORD:
        raise InvalidArgument(f"bcrypt uses only the first {BCRYPT_MAX_PASSWORD} bytes of a password: "
                              f"use at most {BCRYPT_MAX_PASSWORD}")
    return encoded


def hash_password(password: str) -> str:
    """Blocking.  A new ``$2y$05$`` bcrypt entry for ``password``."""
    hashed = bcrypt.hashpw(_check_new_password(password), bcrypt.gensalt(rounds=BCRYPT_COST, prefix=b"2b"))
    return "$2y$" + hashed[4:].decode("ascii")


def check_password(password: str, stored: str) -> bool:
    """Blocking.  Whether ``password`` matches the entry ``stored`` (bcrypt, $apr1$, {SHA}, crypt)."""
    if not isinstance(password, str):
        raise InvalidArgument("a password must be a string")
    secret = password.encode("utf-8")
    if b"\x00" in secret or not stored:
        return False
    if stored[:4] in ("$2y$", "$2a$", "$2b$"):
        try:
            return bcrypt.checkpw(secret[:BCRYPT_MAX_PASSWORD], ("$2b$" + stored[4:]).encode("ascii"))
        except ValueError:  # not a well-formed bcrypt entry
            return False
    if stored.startswith("$apr1$"):
        salt = stored[len("$apr1$"):].split("$", 1)[0][:8]
        return hmac.compare_digest(apr1_md5(secret, salt.encode("ascii", "replace")), stored)
    if stored.startswith("{SHA}"):
        expected = "{SHA}" + base64.b64encode(hashlib.sha1(secret).digest()).decode("ascii")
        return hmac.compare_digest(expected, stored)
    computed = crypt(secret, stored.encode("utf-8", "surrogateescape"))
    return computed is not None and hmac.compare_digest(computed, stored)


_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def apr1_md5(password: bytes, salt: bytes) -> str:
    """Apache's ``$apr1$`` MD5-crypt (Poul-Henning Kamp's md5crypt with Apache's magic)."""
    magic = b"$apr1$"
    salt = salt[:8]
    alternate = hashlib.md5(password + salt + password).digest()
    ctx = hashlib.md5(password + magic + salt)
    for remaining in range(len(password), 0, -16):
        ctx.update(alternate[:min(16, remaining)])
    length = len(password)
    while length:
        ctx.update(b"\x00" if length & 1 else password[:1])
        length >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5(password if i & 1 else final)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(password)
        step.update(final if i & 1 else password)
        final = step.digest()
    out = []
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        out.append(_to64((final[a] << 16) | (final[b] << 8) | final[c], 4))
    out.append(_to64(final[11], 2))
    return "$apr1$" + salt.decode("ascii", "replace") + "$" + "".join(out)


def _to64(value: int, count: int) -> str:
    chars = []
    for _ in range(count):
        chars.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(chars)


_libcrypt = None
#: Big enough for glibc's and libxcrypt's struct crypt_data; zeroed means "not initialised".
_CRYPT_DATA_SIZE = 1 << 18


def crypt(password: bytes, setting: bytes) -> Optional[str]:
    """crypt(3) through the system's libcrypt (crypt_r: thread-safe); None when it refuses."""
    global _libcrypt
    if _libcrypt is None:
        name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
        try:
            library = ctypes.CDLL(name)
        except OSError:
            raise ServerError("libcrypt is missing: crypt(3) entries cannot be checked") from None
        library.crypt_r.restype = ctypes.c_char_p
        library.crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        _libcrypt = library
    if b"\x00" in setting:
        return None
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = _libcrypt.crypt_r(password, setting, data)
    if not result or result.startswith(b"*"):  # NULL or libxcrypt's failure token
        return None
    return result.decode("utf-8", "surrogateescape")


# --- the file -----------------------------------------------------------------------------------

def _entry(line: bytes) -> Optional[tuple[bytes, str]]:
    """``(user, stored hash)`` of a line as mod_authn_file reads it, None for comments and others."""
    text = line.strip()
    if not text or text.startswith(b"#"):
        return None
    user, colon, rest = text.partition(b":")
    if not colon:
        return None
    return user, rest.split(b":", 1)[0].decode("utf-8", "surrogateescape")


def _read_fd(fd: int, shown: str) -> bytes:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise InvalidArgument(f"{shown!r} is a folder, not a password file")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidArgument(f"{shown!r} is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise InvalidArgument(f"{shown!r} is larger than {MAX_FILE_BYTES} bytes: not a password file")
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise InvalidArgument(f"{shown!r} is larger than {MAX_FILE_BYTES} bytes: not a password file")
        chunks.append(chunk)


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read(name: str, dir_fd: int) -> Optional[bytes]:
    """The bytes of the file ``name`` in the folder open at ``dir_fd`` (never through a link, never
    blocking on a FIFO); None when it is missing."""
    shown = display_path(name)  # never the host path: it names the server's layout
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"{shown!r} is a symbolic link") from None
        raise InvalidArgument(f"{shown!r} cannot be read: {exc.strerror}") from None
    try:
        return _read_fd(fd, shown)
    finally:
        os.close(fd)


def _entries_of(data: bytes):
    for line in _LINE.findall(data):
        yield line, _entry(line)


class _Folder:
    """The password file's folder, opened once and locked: every step names the file relative to
    it, so a folder swapped for a link meanwhile cannot send a write elsewhere."""

    def __init__(self, host_path: str, home, lock: int = fcntl.LOCK_EX):
        folder, self.name = os.path.split(host_path)
        if self.name in ("", ".", ".."):
            raise InvalidArgument("a password file needs a file name")
        try:
            self.fd = open_inside(folder, home.real_root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise NotFound(f"no folder {display_path(home.site_path(folder))!r} for the password file") from None
        except NotADirectoryError:
            raise InvalidArgument(f"{display_path(home.site_path(folder))!r} is not a folder") from None
        # One writer at a time, readers alongside each other (advisory, among ourselves).
        fcntl.flock(self.fd, lock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # also releases the lock

    def read(self) -> Optional[bytes]:
        return _read(self.name, self.fd)

    def replace(self, data: bytes, uid: Optional[int], gid: Optional[int]) -> None:
        """Write ``data`` as the file: temporary file, chown, chmod 0640, fsync, rename, fsync folder."""
        temporary = f".{self.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self.fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                _chown(fd, uid, gid)
                os.fchmod(fd, FILE_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, self.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise
        os.fsync(self.fd)


def _chown(fd: int, uid: Optional[int], gid: Optional[int]) -> None:
    """Owner and group when permitted (as the server, root, when the thread acts as the site's
    account: the descriptor is already open); as an unprivileged server, the group alone when it
    may, else neither."""
    for owner in (uid, -1):
        try:
            with server_step():
                os.fchown(fd, -1 if owner is None else owner, -1 if gid is None else gid)
            return
        except PermissionError:
            continue


def web_group(web_user: str = "") -> Optional[int]:
    """The web server user's group id, None when there is no such user here."""
    try:
        return pwd.getpwnam(web_server_user(web_user)).pw_gid
    except (KeyError, ServerError):
        return None


def add(host_path: str, user: str, password: str, home, web_user: str = "") -> bool:
    """Blocking.  Add ``user`` to the password file (made when missing) or replace its entry in place."""
    check_user(user)
    return write_entry(host_path, user, hash_password(password), home, web_user)


def write_entry(host_path: str, user: str, hashed: str, home, web_user: str = "") -> bool:
    """Blocking.  :func:`add` with the entry already hashed (by :func:`hash_password`), so the
    hashing can run elsewhere than the locked rewrite of the file."""
    name = check_user(user)
    line = name + b":" + hashed.encode("ascii")
    with _Folder(host_path, home) as folder:
        data = folder.read() or b""
        out, replaced = [], False
        for raw, entry in _entries_of(data):
            if entry is None or entry[0] != name:
                out.append(raw)
            elif not replaced:  # the line mod_authn_file uses; later duplicates were dead and go
                out.append(line + raw[len(raw.rstrip(b"\r\n")):])
                replaced = True
        if not replaced:
            if out and not out[-1].endswith(b"\n"):
                out[-1] += b"\n"
            out.append(line + b"\n")
        folder.replace(b"".join(out), home.owner.uid, web_group(web_user))
    return True


def delete(host_path: str, user: str, home, web_user: str = "") -> bool:
    """Blocking.  Remove ``user``'s lines; False (file unchanged) when it has none."""
    name = check_user(user)
    with _Folder(host_path, home) as folder:
        data = folder.read()
        if data is None:
            raise NotFound(f"no password file {display_path(home.site_path(host_path))!r}")
        kept = [raw for raw, entry in _entries_of(data) if entry is None or entry[0] != name]
        if len(kept) == len(_LINE.findall(data)):
            return False
        folder.replace(b"".join(kept), home.owner.uid, web_group(web_user))
    return True


def _read_file(host_path: str, home) -> bytes:
    """Blocking.  The password file's bytes, read through its folder opened inside ``home``."""
    with _Folder(host_path, home, fcntl.LOCK_SH) as folder:
        data = folder.read()
    if data is None:
        raise NotFound(f"no password file {display_path(home.site_path(host_path))!r}")
    return data


def verify(host_path: str, user: str, password: str, home) -> bool:
    """Blocking.  Whether ``password`` is ``user``'s: the first line for the user decides, as in Apache."""
    return matches(password, stored_hash(host_path, user, home))


def stored_hash(host_path: str, user: str, home) -> Optional[str]:
    """Blocking.  The hash of ``user``'s first line (the one Apache uses); None when it has no line."""
    name = check_user(user)
    for _, entry in _entries_of(_read_file(host_path, home)):
        if entry is not None and entry[0] == name:
            return entry[1]
    return None


def matches(password: str, stored: Optional[str]) -> bool:
    """Blocking.  :func:`check_password` against :func:`stored_hash`'s answer; False (no hashing)
    for None, a user without a line."""
    if stored is not None:
        return check_password(password, stored)
    if not isinstance(password, str):
        raise InvalidArgument("a password must be a string")
    return False


def users(host_path: str, home) -> list[str]:
    """Blocking.  The user names of the password file in file order, each once."""
    seen, out = set(), []
    for _, entry in _entries_of(_read_file(host_path, home)):
        if entry is None or entry[0] in seen:
            continue
        seen.add(entry[0])
        out.append(printable(entry[0].decode("utf-8", "replace")))
    return out

