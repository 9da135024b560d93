"""Passwords verified recently, so a client that sends Basic credentials on every request (DAV)
is not hashed 210,000 PBKDF2 rounds each time.

An entry is keyed by an HMAC (a random key made per process) of gate, site, user name and
password: the password itself is never kept, and a stolen memory image yields no key a
password can be tested against without that process key.  An entry holds the identity and
the stored hash it was verified against.  A password change, reset or deletion on this node
drops the account's entries at once (:meth:`forget_user`); one made on another node is seen
when the caller reads the account's row again, at most :data:`RECHECK_AFTER` seconds after
the last read (the hit counts only while that hash is still the row's).  Entries live
``ttl`` seconds and at most ``max_entries`` are kept (the oldest go first).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import threading
from typing import Callable, Optional

from apiserver.context import Identity

#: Most verified passwords remembered at once (about 300 bytes each).
MAX_ENTRIES = 10_000
#: Seconds a hit is trusted without reading the account's row again (changes made on other nodes).
RECHECK_AFTER = 10


class VerifiedPasswords:
    """``remember``/``lookup``/``forget_user``; ``ttl`` is read on every use (a live config value)."""

    def __init__(self, clock, ttl: Callable[[], int], max_entries: int = MAX_ENTRIES):
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        # Bumped by every forget: a verification that read the row before one must not be kept.
        self.generation = 0

    def key_of(self, gate: str, site: Optional[str], username: str, password: str) -> bytes:
        """The keyed digest that stands for these credentials (never the password itself)."""
        return self._digest(gate, site, username, password)

    def _digest(self, gate: str, site: Optional[str], username: str, password: str) -> bytes:
        message = "\0".join((gate, (site or "").strip().lower().rstrip("."), username, password))
        return hmac.new(self._key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def lookup(self, gate: str, site: Optional[str], username: str, password: str) -> Optional[tuple]:
        """``(identity, stored_hash, recheck)`` verified for exactly these credentials within ``ttl``,
        or None; ``recheck`` is True when the row was last read :data:`RECHECK_AFTER` seconds ago or more."""
        if self.ttl() <= 0:
            return None
        digest = self._digest(gate, site, username, password)
        now = self.clock.seconds()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            identity, stored, until, checked = entry
            if until <= now:
                del self._entries[digest]
                return None
            return identity, stored, now - checked >= RECHECK_AFTER

    def remember(self, gate: str, site: Optional[str], username: str, password: str,
                 identity: Identity, stored: str, generation: Optional[int] = None) -> None:
        """Note that ``password`` verified against ``stored`` for ``identity``.

        ``generation``: :attr:`generation` read before the account's row was; when a forget came
        since (a password change while the hash was computed), nothing is kept.
        """
        ttl = self.ttl()
        if ttl <= 0:
            return
        digest = self._digest(gate, site, username, password)
        now = self.clock.seconds()
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._entries.pop(digest, None)
            self._entries[digest] = (identity, stored, now + ttl, now)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def checked(self, digest_of: tuple) -> None:
        """The row of ``(gate, site, username, password)``'s account was read and still matches."""
        digest = self._digest(*digest_of)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries[digest] = (*entry[:3], self.clock.seconds())

    def forget(self, digest_of: tuple) -> None:
        """Drop the entry of ``(gate, site, username, password)`` (a hit whose hash no longer matches)."""
        digest = self._digest(*digest_of)
        with self._lock:
            self._entries.pop(digest, None)

    def forget_user(self, user_id: int) -> None:
        """Drop every entry of account ``user_id`` (its password changed, it was reset or deleted)."""
        self.forget_users([user_id])

    def forget_users(self, user_ids) -> None:
        """Drop every entry of these accounts, in one pass over the entries."""
        gone = set(user_ids)
        with self._lock:
            self.generation += 1
            for digest in [d for d, entry in self._entries.items() if entry[0].user_id in gone]:
                del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)
