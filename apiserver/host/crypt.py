"""crypt(3) hashes for /etc/shadow: yescrypt (``$y$``), made by the system's own libcrypt.

PAM (pam_unix) verifies a password against /etc/shadow with the same library, so whatever it
makes here PAM accepts.  Python's ``crypt`` module is deprecated (removed in 3.13); the library
is called directly through ctypes with its re-entrant functions (``crypt_rn``,
``crypt_gensalt_rn``), so threads never share a buffer.  CPU-bound and blocking.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hmac

from apiserver.errors import ServerError

#: The hash method of new system passwords.
YESCRYPT = b"$y$"

# Bigger than libxcrypt's struct crypt_data (about 32.8 KiB): crypt_rn checks the size it is given.
_DATA_SIZE = 65536
_SETTING_SIZE = 256


@functools.lru_cache(maxsize=1)
def _library():
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise ServerError(f"the system's libcrypt cannot be loaded: {exc}") from None
    lib.crypt_rn.restype = ctypes.c_char_p
    lib.crypt_rn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)
    lib.crypt_gensalt_rn.restype = ctypes.c_char_p
    lib.crypt_gensalt_rn.argtypes = (ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_char_p, ctypes.c_int)
    return lib


def _crypt(password: str, setting: bytes) -> str:
    data = ctypes.create_string_buffer(_DATA_SIZE)
    out = _library().crypt_rn(password.encode("utf-8"), setting, data, _DATA_SIZE)
    if not out or out.startswith(b"*"):
        raise ServerError(f"libcrypt could not hash with the setting {setting[:4]!r}")
    return out.decode("ascii")


def hash_password(password: str, method: bytes = YESCRYPT) -> str:
    """Blocking.  A crypt(3) hash of ``password`` with a fresh random salt (yescrypt by default)."""
    if "\x00" in password:
        raise ValueError("a password for the system may not contain NUL")
    setting = ctypes.create_string_buffer(_SETTING_SIZE)
    if not _library().crypt_gensalt_rn(method, 0, None, 0, setting, _SETTING_SIZE):
        raise ServerError(f"libcrypt cannot make a salt for {method!r}")
    return _crypt(password, setting.value)


def verify(password: str, hashed: str) -> bool:
    """Blocking.  Whether ``password`` matches the crypt(3) hash ``hashed`` (locked ``!`` hashes never do)."""
    if not hashed.startswith("$") or "\x00" in password:
        return False
    try:
        return hmac.compare_digest(_crypt(password, hashed.encode("ascii")), hashed)
    except ServerError:
        return False


def is_crypt_hash(value: str) -> bool:
    """Whether ``value`` is a hash /etc/shadow can hold as it is (yescrypt, SHA-512 or bcrypt crypt)."""
    return isinstance(value, str) and value.startswith(("$y$", "$6$", "$2b$", "$2y$")) and ":" not in value \
        and "\n" not in value
