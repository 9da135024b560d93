"""The password of a UI login, kept for single sign-on to webmail-like plugins (``[auth] retain_ui_password``).

As the seed describes: AES-256-GCM under a key derived from ``[auth] secret``, a fresh 96-bit
nonce per login.  The session keeps the nonce and the ciphertext without its tag; the 16-byte
authentication tag goes to the browser only, as the ``esprit_tag`` cookie.  Decrypting takes
both the server's state (secret and session) and the client's browser (tag), and no ``repr``
of what holds the pieces shows them.  The account id is authenticated data, so a sealed
password moved into another account's session does not open.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apiserver.accounts.keys import derive_key
from apiserver.context import Gate

__all__ = ["SealedPassword", "UIPasswordCipher", "UIPasswords"]

NONCE_SIZE = 12
TAG_SIZE = 16


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> Optional[bytes]:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class SealedPassword:
    """Nonce and ciphertext (without tag) of a UI password, as the session keeps them."""

    __slots__ = ("nonce", "ciphertext")

    def __init__(self, nonce: bytes, ciphertext: bytes):
        self.nonce = nonce
        self.ciphertext = ciphertext

    def __repr__(self) -> str:
        # The seed's __debugInfo() point: no dump shows the nonce or the ciphertext.
        return "<SealedPassword (hidden)>"

    __str__ = __repr__

    def encode(self) -> str:
        """The session's ``data``: base64url of nonce and ciphertext."""
        return _b64encode(self.nonce + self.ciphertext)

    @classmethod
    def decode(cls, data: str) -> Optional["SealedPassword"]:
        """What :meth:`encode` made, or None for anything else."""
        raw = _b64decode(data) if isinstance(data, str) else None
        if raw is None or len(raw) < NONCE_SIZE:
            return None
        return cls(raw[:NONCE_SIZE], raw[NONCE_SIZE:])


class UIPasswordCipher:
    """Seals UI passwords into (session part, tag for the cookie) and opens them again."""

    _AAD = b"apiserver ui password v1 user "

    def __init__(self, secret: bytes):
        self._aead = AESGCM(derive_key(secret, "ui password v1"))

    def __repr__(self) -> str:
        return "<UIPasswordCipher (key hidden)>"

    def seal(self, password: str, user_id: int) -> tuple[SealedPassword, str]:
        """Encrypt ``password`` of account ``user_id``: the sealed part and the tag as cookie text."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        out = self._aead.encrypt(nonce, password.encode("utf-8"), self._aad(user_id))
        return SealedPassword(nonce, out[:-TAG_SIZE]), _b64encode(out[-TAG_SIZE:])

    def open(self, sealed: SealedPassword, tag: str, user_id: int) -> Optional[str]:
        """The password, or None when the tag (or anything else) does not match."""
        raw_tag = _b64decode(tag) if isinstance(tag, str) else None
        if raw_tag is None or len(raw_tag) != TAG_SIZE:
            return None
        try:
            plain = self._aead.decrypt(sealed.nonce, sealed.ciphertext + raw_tag, self._aad(user_id))
        except InvalidTag:
            return None
        return plain.decode("utf-8")

    def _aad(self, user_id: int) -> bytes:
        return self._AAD + str(user_id).encode("ascii")


class UIPasswords:
    """The UI passwords kept in sessions for single sign-on (``[auth] retain_ui_password``).

    ``sessions``: the session store; ``ciphers``: :class:`apiserver.accounts.ciphers.AccountCiphers`.
    """

    def __init__(self, sessions, ciphers):
        self._sessions = sessions
        self._ciphers = ciphers

    def seal(self, password: str, user_id: int) -> tuple["SealedPassword", str]:
        """Blocking the first time (reads the secret).  :meth:`UIPasswordCipher.seal`."""
        return self._ciphers.ui_cipher().seal(password, user_id)

    def recover(self, session_id, tag_cookie) -> Optional[str]:
        """The password of the UI login that opened session ``session_id``, given its ``esprit_tag``
        cookie; None when the session is not a live UI session with a kept password or the tag
        does not open it.

        Blocking with the ``db`` and ``redis`` session backends: call it on the blocking pool (a
        module function runs there unless declared otherwise).  The look-up slides the session's
        idle time like any use.
        """
        if not (isinstance(session_id, str) and session_id and isinstance(tag_cookie, str) and tag_cookie):
            return None
        session = self._sessions.lookup(session_id)
        if session is None or session.gate != Gate.UI or session.data is None:
            return None
        sealed = SealedPassword.decode(session.data)
        if sealed is None:
            return None
        return self._ciphers.ui_cipher().open(sealed, tag_cookie, session.identity.user_id)
