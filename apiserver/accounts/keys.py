"""API keys: 64 lower-case hex characters, found by a keyed hash, kept encrypted, cached once verified.

The database holds ``HMAC-SHA256(lookup key, API key)`` for look-up (equality on a keyed hash
leaks nothing useful through timing) and the key AES-256-GCM encrypted for ``get_api_keys``;
both keys derive from ``[auth] secret``, so a copy of the database alone yields no working key.
A verified key is trusted for ``[auth] key_cache_ttl`` seconds of the clock without a
database look-up; ``last_used`` and login records (of passwords too) are written behind,
batched, on the blocking pool, so no login waits for a write.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import re
import secrets
import threading
from typing import Optional

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.accounts.identities import identity_from_row, identity_select, login_row, record_logins
from apiserver.accounts.records import ApiKeyInfo
from apiserver.context import Identity
from apiserver.errors import AuthenticationFailed, InvalidArgument, NotFound
from apiserver.storage import schema, utcnow
from apiserver.timers import WorkTimer

log = Logger(namespace="apiserver.accounts.keys")

_KEY = re.compile(r"[0-9a-f]{64}")
_IGNORED = re.compile(r"[\s-]+")

#: Seconds between a use of a key and the batched write of ``last_used``.
USAGE_FLUSH_DELAY = 5.0
#: Most verified keys cached at once.
CACHE_LIMIT = 10_000
#: Longest comment stored with a key.
COMMENT_LIMIT = 255


def generate_key() -> str:
    """A new key: 256 random bits as 64 lower-case hex characters."""
    return secrets.token_hex(32)


def normalize_key(raw) -> Optional[str]:
    """The key without dashes or spaces, lower-cased; None if it is not 64 hex characters."""
    if not isinstance(raw, str) or len(raw) > 256:
        return None
    key = _IGNORED.sub("", raw).lower()
    return key if _KEY.fullmatch(key) else None


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 256-bit key for ``purpose`` derived from ``[auth] secret`` (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"apiserver {purpose}".encode()).derive(secret)


class KeyCipher:
    """The look-up hash and the encryption of API keys, both keyed by the secret."""

    _AAD = b"apiserver api key v1"

    def __init__(self, secret: bytes):
        self._lookup_key = derive_key(secret, "api-key lookup v1")
        self._aead = AESGCM(derive_key(secret, "api-key encryption v1"))

    def lookup_hash(self, key: str) -> str:
        """HMAC-SHA256 of a normalised key, hex: what the database is searched by."""
        return hmac.new(self._lookup_key, key.encode("ascii"), hashlib.sha256).hexdigest()

    def encrypt(self, key: str) -> str:
        """Base64 of a fresh 96-bit nonce and the AES-256-GCM ciphertext of a normalised key."""
        nonce = secrets.token_bytes(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, bytes.fromhex(key), self._AAD)).decode("ascii")

    def decrypt(self, blob: str) -> str:
        """The key :meth:`encrypt` sealed in ``blob``."""
        raw = base64.b64decode(blob)
        return self._aead.decrypt(raw[:12], raw[12:], self._AAD).hex()


def _check_comment(comment: Optional[str]) -> Optional[str]:
    if comment is not None and len(comment) > COMMENT_LIMIT:
        raise InvalidArgument(f"comment too long: at most {COMMENT_LIMIT} characters")
    return comment


def insert_key(conn: sa.Connection, cipher: KeyCipher, user_id: int, comment: Optional[str], now) -> str:
    """Store a new key of account ``user_id`` in ``conn``'s transaction and return it."""
    comment = _check_comment(comment)
    key = generate_key()
    conn.execute(schema.api_keys.insert().values(
        user_id=user_id, lookup_hash=cipher.lookup_hash(key), key_encrypted=cipher.encrypt(key),
        comment=comment or None, created_at=now))
    return key


@dataclasses.dataclass(frozen=True)
class _Cached:
    identity: Identity
    key_id: int
    expires: float


class ApiKeys:
    """Creating, listing, deleting and verifying API keys of accounts.

    ``storage``: the ``api_keys`` and ``login_history`` tables; ``clock``: cache expiry and the
    write-behind delay; ``run_blocking``: database work off the reactor; ``settings``: the
    config (``[auth] key_cache_ttl``, read per use); ``cipher_factory()``: the
    :class:`KeyCipher` (made on first use); ``ip_restrictions``: whether a key's login is
    admitted, for its record; ``fire(event, **kwargs)``: calls ``apiserver_login_succeeded``.
    """

    def __init__(self, storage, clock, run_blocking, settings, cipher_factory, ip_restrictions, fire):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._settings = settings
        self._cipher_factory = cipher_factory
        self._ip_restrictions = ip_restrictions
        self._fire = fire
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._generation = 0           # bumped by every invalidation; stale look-ups are not cached
        self._pending_use: dict[int, object] = {}
        self._pending_logins: list[dict] = []
        #: Writes ``last_used`` values and key logins ``USAGE_FLUSH_DELAY`` after the first one queued.
        self.flush_timer = WorkTimer(clock, None, self.write_pending, run_blocking, name="API key usage",
                                     on_failure=lambda f: log.failure("writing API key usage failed", f))

    @property
    def _cipher(self) -> KeyCipher:
        return self._cipher_factory()

    # --- blocking: run on the blocking pool -------------------------------------------------
    def create(self, owner: Identity, comment: str = "") -> str:
        """Store a new key acting as ``owner`` and return it."""
        with self._storage.write() as conn:
            return insert_key(conn, self._cipher, owner.user_id, comment, utcnow(self._clock))

    def list(self, owner: Identity) -> list[ApiKeyInfo]:
        """``owner``'s keys, oldest first; pending ``last_used`` values are written first."""
        self.write_pending()
        t = schema.api_keys
        with self._storage.read() as conn:
            rows = conn.execute(sa.select(t.c.key_encrypted, t.c.last_used, t.c.comment)
                                .where(t.c.user_id == owner.user_id).order_by(t.c.id)).all()
        return [ApiKeyInfo(key=self._cipher.decrypt(row.key_encrypted), last_used=row.last_used, comment=row.comment)
                for row in rows]

    def delete(self, owner: Identity, raw_key: str) -> None:
        """Delete ``owner``'s key; NotFound if ``owner`` has no such key.  Its cache entry goes at once."""
        digest = self._owned_digest(raw_key)
        with self._storage.write() as conn:
            deleted = conn.execute(schema.api_keys.delete().where(
                schema.api_keys.c.user_id == owner.user_id, schema.api_keys.c.lookup_hash == digest)).rowcount
        self.invalidate(digest)
        if not deleted:
            raise NotFound("no such API key for this account")

    def set_comment(self, owner: Identity, raw_key: str, comment: Optional[str]) -> None:
        """Replace the comment of ``owner``'s key (None clears it); NotFound if there is no such key."""
        comment = _check_comment(comment)
        digest = self._owned_digest(raw_key)
        with self._storage.write() as conn:
            changed = conn.execute(schema.api_keys.update().where(
                schema.api_keys.c.user_id == owner.user_id, schema.api_keys.c.lookup_hash == digest)
                .values(comment=comment or None)).rowcount
        if not changed:
            raise NotFound("no such API key for this account")

    def _owned_digest(self, raw_key: str) -> str:
        key = normalize_key(raw_key)
        if key is None:
            raise InvalidArgument("invalid API key: expected 64 hexadecimal characters (dashes and spaces are ignored)")
        return self._cipher.lookup_hash(key)

    def _lookup(self, digest: str):
        t = schema.api_keys
        query = identity_select().add_columns(t.c.id.label("key_id")).join(t, t.c.user_id == schema.users.c.id)
        with self._storage.read() as conn:
            return conn.execute(query.where(t.c.lookup_hash == digest)).first()

    # --- reactor thread ---------------------------------------------------------------------
    def verify(self, raw_key, gate, address: str) -> defer.Deferred:
        """The identity ``raw_key`` acts as, or a failure with ``AuthenticationFailed("key")``."""
        key = normalize_key(raw_key)
        if key is None:
            return defer.fail(AuthenticationFailed("key"))
        digest = self._cipher.lookup_hash(key)
        now = self._clock.seconds()
        with self._lock:
            cached = self._cache.get(digest)
            generation = self._generation
        if cached is not None and cached.expires > now:
            self._note_use(cached.key_id)
            return defer.succeed(cached.identity)

        def found(row):
            if row is None:
                raise AuthenticationFailed("key")
            identity = identity_from_row(row)
            ttl = self._settings.get("auth", "key_cache_ttl")
            with self._lock:
                if ttl > 0 and generation == self._generation:
                    self._cache[digest] = _Cached(identity, row.key_id, self._clock.seconds() + ttl)
                    self._cache.move_to_end(digest)
                    self._trim_cache()
            self._note_use(row.key_id)
            admitted = self._ip_restrictions.admits(identity, gate, address)
            admitted.addCallback(lambda ok: self.note_login(
                login_row(identity, utcnow(self._clock), address, gate, "key", ok), identity))
            return admitted.addCallback(lambda _: identity)

        return self._run_blocking(self._lookup, digest).addCallback(found)

    def _trim_cache(self) -> None:
        # Entries are (re)inserted at the end with the same ttl, so the front expires first:
        # dropping from the front removes expired entries, then the oldest, in O(1) each
        # (not a scan of all CACHE_LIMIT entries for every key verified once the cache is full).
        while len(self._cache) > CACHE_LIMIT:
            self._cache.popitem(last=False)

    def invalidate(self, digest: Optional[str] = None) -> None:
        """Forget one cached key (by look-up hash), or every cached key when ``digest`` is None."""
        with self._lock:
            self._generation += 1
            if digest is None:
                self._cache.clear()
            else:
                self._cache.pop(digest, None)

    def forget_users(self, user_ids) -> None:
        """After accounts are deleted: drop every cached key and the accounts' queued login
        records (SQLite may give a deleted account's id to the next account created)."""
        gone = set(user_ids)
        self.invalidate()
        with self._lock:
            self._pending_logins = [login for login in self._pending_logins if login["user_id"] not in gone]

    # --- write-behind of last_used and login records -----------------------------------------
    def _note_use(self, key_id: int) -> None:
        with self._lock:
            self._pending_use[key_id] = utcnow(self._clock)
        self._schedule_flush()

    def note_login(self, login: dict, identity: Optional[Identity] = None) -> None:
        """Queue a login record (of a key or a password), written with the next batch or before
        the history is read (:meth:`write_pending`).  With the ``identity`` of a successful one,
        fires ``apiserver_login_succeeded`` (reactor thread)."""
        with self._lock:
            if len(self._pending_logins) < CACHE_LIMIT:
                self._pending_logins.append(login)
        self._schedule_flush()
        if identity is not None and login["success"]:
            self._fire("apiserver_login_succeeded", identity=identity, address=login["address"],
                           gate=login["gate"], method=login["method"])

    def _schedule_flush(self) -> None:
        self.flush_timer.run_after(USAGE_FLUSH_DELAY)

    def flush(self) -> defer.Deferred:
        """Write pending ``last_used`` values and key logins on the blocking pool (fires when written)."""
        return self.flush_timer.run_now()

    def write_pending(self) -> None:
        """Blocking: write pending ``last_used`` values and key logins in one transaction."""
        with self._lock:
            uses, self._pending_use = self._pending_use, {}
            logins, self._pending_logins = self._pending_logins, []
        if not uses and not logins:
            return
        t = schema.api_keys
        with self._storage.write() as conn:
            if uses:
                conn.execute(t.update().where(t.c.id == sa.bindparam("kid")).values(last_used=sa.bindparam("at")),
                             [{"kid": kid, "at": at} for kid, at in uses.items()])
            record_logins(conn, logins)
