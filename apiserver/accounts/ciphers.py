"""The keys derived from ``[auth] secret``: the API keys' look-up hash and encryption, and the UI
passwords kept in sessions.

The secret is read on first use (``[auth] secret``, else ``state_dir/secret``), so building the
application needs no initialised state; ``apiserver init`` writes it.
"""

from __future__ import annotations

import threading
from typing import Optional

from apiserver.accounts.keys import KeyCipher
from apiserver.accounts.state import load_secret
from apiserver.accounts.ui_password import UIPasswordCipher


class AccountCiphers:
    """Both ciphers, made once from the secret (``settings``: the config, for where it is)."""

    def __init__(self, settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._key_cipher: Optional[KeyCipher] = None
        self._ui_cipher: Optional[UIPasswordCipher] = None

    def _load(self) -> tuple[KeyCipher, UIPasswordCipher]:
        with self._lock:
            if self._key_cipher is None:
                secret = load_secret(self._settings)
                self._key_cipher, self._ui_cipher = KeyCipher(secret), UIPasswordCipher(secret)
            return self._key_cipher, self._ui_cipher

    def key_cipher(self) -> KeyCipher:
        """The look-up hash and encryption of API keys.  Blocking the first time (reads the secret)."""
        return self._load()[0]

    def ui_cipher(self) -> UIPasswordCipher:
        """The cipher of UI passwords kept in sessions.  Blocking the first time (reads the secret)."""
        return self._load()[1]
