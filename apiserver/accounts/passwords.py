"""Password hashes: PBKDF2-HMAC-SHA512 for new ones, the seed's SHA512-crypt verified for old ones.

New hashes are ``$pbkdf2-sha512$ITERATIONS$SALT$HASH`` (passlib's format: adapted base64, 16
byte salt, 64 byte hash).  The seed stored ``$6$[rounds=N$]SALT$HASH`` (glibc SHA512-crypt,
5,000 rounds by default); those still verify and are replaced on the next successful login.
Everything here is CPU-bound and blocking: call it through ``app.run_hashing``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from typing import Optional

PBKDF2_PREFIX = "$pbkdf2-sha512$"
SHA512_CRYPT_PREFIX = "$6$"

#: Longest password accepted: SHA512-crypt's cost grows with the square of the length.
MAX_PASSWORD_LENGTH = 1024

GENERATED_ALPHABET = string.ascii_letters + string.digits


def generate_password(length: int = 16) -> str:
    """A random password from a-zA-Z0-9 (62 symbols, ~95 bits at 16 characters)."""
    return "".join(secrets.choice(GENERATED_ALPHABET) for _ in range(length))


def policy_violation(password: str, min_length: int) -> Optional[str]:
    """Why ``password`` may not be set, or None (length rules only; the hook comes after)."""
    if len(password) < min_length:
        return f"password too short: it must have at least {min_length} characters, it has {len(password)}"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password too long: at most {MAX_PASSWORD_LENGTH} characters"
    if "\x00" in password:
        return "password must not contain NUL characters"
    return None


# --- PBKDF2-HMAC-SHA512 -----------------------------------------------------------------------

def _ab64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, iterations: int) -> str:
    """A new ``$pbkdf2-sha512$`` hash of ``password`` with a random 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"{PBKDF2_PREFIX}{iterations}${_ab64_encode(salt)}${_ab64_encode(digest)}"


def _verify_pbkdf2(password: bytes, stored: str) -> bool:
    try:
        iterations_text, salt_text, digest_text = stored[len(PBKDF2_PREFIX):].split("$")
        iterations = int(iterations_text)
        salt, expected = _ab64_decode(salt_text), _ab64_decode(digest_text)
    except ValueError:
        return False
    if not 1 <= iterations <= 100_000_000 or not expected:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password, salt, iterations, len(expected)), expected)


# --- SHA512-crypt (glibc "$6$"), for the seed's stored hashes ---------------------------------

_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT, _ROUNDS_MIN, _ROUNDS_MAX = 5000, 1000, 999_999_999


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _crypt_b64(digest: bytes) -> str:
    out = []
    # Drepper's specification interleaves the 64 digest bytes in 21 triples plus one byte.
    for k in range(21):
        a, b, c = digest[k], digest[k + 21], digest[k + 42]
        triple = ((a, b, c), (b, c, a), (c, a, b))[k % 3]
        value = (triple[0] << 16) | (triple[1] << 8) | triple[2]
        for _ in range(4):
            out.append(_CRYPT_ALPHABET[value & 0x3F])
            value >>= 6
    value = digest[63]
    for _ in range(2):
        out.append(_CRYPT_ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(out)


def sha512_crypt(password: bytes, setting: str) -> str:
    """glibc's SHA512-crypt of ``password`` for ``setting`` (``$6$[rounds=N$]salt[$...]``).

    Implemented from Ulrich Drepper's specification, as Python's ``crypt`` module is gone in
    3.13; ``tests/accounts`` checks it against the specification's test vectors.
    """
    if not setting.startswith(SHA512_CRYPT_PREFIX):
        raise ValueError("not a SHA512-crypt setting")
    rest = setting[len(SHA512_CRYPT_PREFIX):]
    rounds, custom_rounds = _ROUNDS_DEFAULT, False
    if rest.startswith("rounds="):
        count, sep, rest = rest[len("rounds="):].partition("$")
        if not sep or not count.isdigit():
            raise ValueError("malformed rounds= in SHA512-crypt setting")
        rounds, custom_rounds = min(max(int(count), _ROUNDS_MIN), _ROUNDS_MAX), True
    salt = rest.split("$", 1)[0][:16].encode("ascii")
    key_len = len(password)

    alternate = hashlib.sha512(password + salt + password).digest()
    ctx = hashlib.sha512(password + salt + _repeat(alternate, key_len))
    bits = key_len
    while bits:
        ctx.update(alternate if bits & 1 else password)
        bits >>= 1
    digest_a = ctx.digest()
    p_bytes = _repeat(hashlib.sha512(password * key_len).digest(), key_len) if key_len else b""
    s_bytes = _repeat(hashlib.sha512(salt * (16 + digest_a[0])).digest(), len(salt)) if salt else b""

    current = digest_a
    for r in range(rounds):
        ctx = hashlib.sha512(p_bytes if r & 1 else current)
        if r % 3:
            ctx.update(s_bytes)
        if r % 7:
            ctx.update(p_bytes)
        ctx.update(current if r & 1 else p_bytes)
        current = ctx.digest()

    prefix = f"{SHA512_CRYPT_PREFIX}rounds={rounds}$" if custom_rounds else SHA512_CRYPT_PREFIX
    return f"{prefix}{salt.decode('ascii')}${_crypt_b64(current)}"


# --- either scheme --------------------------------------------------------------------------

def verify_password(password: str, stored: Optional[str]) -> bool:
    """True if ``password`` matches ``stored`` (either scheme); False for anything malformed."""
    if not stored or len(password) > MAX_PASSWORD_LENGTH:
        return False
    secret = password.encode("utf-8")
    if stored.startswith(PBKDF2_PREFIX):
        return _verify_pbkdf2(secret, stored)
    if stored.startswith(SHA512_CRYPT_PREFIX):
        try:
            computed = sha512_crypt(secret, stored)
        except (ValueError, UnicodeEncodeError):
            return False
        return hmac.compare_digest(computed.encode("ascii"), stored.encode("ascii", "replace"))
    return False


def needs_rehash(stored: str, iterations: int) -> bool:
    """True when ``stored`` is a legacy hash or has fewer PBKDF2 iterations than configured."""
    if not stored.startswith(PBKDF2_PREFIX):
        return True
    try:
        return int(stored[len(PBKDF2_PREFIX):].split("$", 1)[0]) < iterations
    except ValueError:
        return True
