"""The accounts service: authentication, passwords, API keys, sessions and login history.

Methods documented as *blocking* touch the database and run on the blocking pool (module
functions call them directly; they already run there).  ``authenticate`` returns a Deferred
and the ``async def`` methods are coroutines (``await`` them in an async module function, or
wrap them in ``defer.ensureDeferred``); both run on the reactor thread, hand database work to
the blocking pool and hashing to the hashing pool, and fire the event hooks on the reactor
thread when done.  Who the accounts are (look-ups, email) is :mod:`apiserver.accounts.directory`;
creating and deleting sites and users is :mod:`apiserver.accounts.sites`.
"""

from __future__ import annotations

import threading
from typing import Optional

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.accounts import passwords
from apiserver.accounts.identities import identity_from_row, identity_select, login_row
from apiserver.accounts.records import LoginRecord
from apiserver.accounts.verified import VerifiedPasswords
from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import AuthenticationFailed, InvalidArgument, NotFound
from apiserver.storage import schema, utcnow

log = Logger(namespace="apiserver.accounts")

_users, _sites, _history = schema.users, schema.sites, schema.login_history

#: Gates whose clients send the password with every request: a verified one is remembered
#: (:mod:`apiserver.accounts.verified`) instead of hashed again.
REMEMBERED_GATES = (Gate.DAV,)


class Accounts:
    """Everything about proving who calls: see the module docstring for which methods block.

    ``storage``: the account rows; ``clock``: dates and the verified-password ttl; ``pools``:
    ``run_blocking`` (database) and ``run_hashing`` (passwords); ``settings``: the config
    (``[auth]``, ``[dav] verified_password_ttl``, read per use); ``hooks``: the plugin hooks
    (``apiserver_authenticate``, ``apiserver_validate_password`` and the events);
    ``directory``: account look-ups; ``keys``: :class:`~apiserver.accounts.keys.ApiKeys`;
    ``sessions``: the session store; ``ciphers``: the keys derived from the secret;
    ``ui_passwords``: UI passwords sealed into sessions; ``ip_restrictions``: whether a
    password login is admitted (for its record) and what a deleted account leaves cached;
    ``notices``: the password notices and known devices; ``system_accounts``: the sites' system
    accounts (:class:`apiserver.host.accounts.SiteAccounts`), whose passwords follow every change.
    """

    def __init__(self, storage, clock, pools, settings, hooks, *, directory, keys, sessions, ciphers, ui_passwords,
                 ip_restrictions, notices, system_accounts=None, throttle=None):
        self._storage = storage
        self._clock = clock
        self._pools = pools
        self._settings = settings
        self._hooks = hooks
        self.directory = directory
        self.keys = keys
        self.sessions = sessions
        self._ciphers = ciphers
        self._ui_passwords = ui_passwords
        self._ip_restrictions = ip_restrictions
        self._notices = notices
        self._system_accounts = system_accounts
        self._throttle = throttle  # Anvil: hashing bounded per address and judged as failures count
        self._dummy_lock = threading.Lock()  # held while hashing: never taken on the reactor thread
        self._dummy_hash: Optional[str] = None
        self._verifying: dict = {}  # HMAC of credentials being verified -> Deferreds waiting for it
        self.verified_passwords = VerifiedPasswords(clock, lambda: settings.get("dav", "verified_password_ttl"))

    def prepare(self) -> None:
        """Blocking (hashing pool, at start-up): read the secret and make the dummy password hash,
        so the first requests pay for neither and an unknown account never costs two hashes."""
        self._ciphers.key_cipher()
        self._dummy()

    # --- authentication (reactor thread) ----------------------------------------------------
    def authenticate(self, credentials: Credentials, gate: Gate, address: str) -> defer.Deferred:
        """The identity ``credentials`` prove, or a failure with ``AuthenticationFailed(reason)``.

        One kind of credential is used: a single-sign-on id; a live session when a key comes with
        it (ApisCP's precedence: a billing system sends its key and the hijacked session), the key
        when the session is not live (no failure is counted for the session then: WHMCS sends its
        own PHP session id with every call); else the key, the session, a password, the peer
        uid.  The key or session not used is cleared from ``credentials``.
        """
        if credentials.sso_session_id is not None:
            return self._landing_login(credentials.sso_session_id, gate)
        if credentials.api_key is not None and credentials.session_id is not None:
            return self._session_else_key(credentials, gate, address)
        if credentials.api_key is not None:
            return self.keys.verify(credentials.api_key, gate, address)
        if credentials.session_id is not None:
            return self._session_login(credentials.session_id, gate)
        if credentials.password is not None:
            return defer.ensureDeferred(self._password_login(credentials, gate, address))
        if credentials.peer_uid is not None:
            d = self._pools.run_blocking(self.directory.identity_for_uid, credentials.peer_uid)
            return d.addCallback(_or_fail, "uid")
        return defer.fail(AuthenticationFailed("key"))

    def _session_login(self, sid, gate: Gate) -> defer.Deferred:
        return self._live_session(sid, gate).addCallback(_or_fail, "session")

    def _live_session(self, sid, gate: Gate) -> defer.Deferred:
        """The identity of live session ``sid`` usable at ``gate``, or None."""
        if not isinstance(sid, str) or not sid or len(sid) > 128:
            return defer.succeed(None)
        d = self._on_store(self.sessions.lookup, sid)

        def check(session):
            if session is None or (session.gate is not None and session.gate != gate):
                return None
            return session.identity

        return d.addCallback(check)

    def _session_else_key(self, credentials: Credentials, gate: Gate, address: str) -> defer.Deferred:
        def decide(identity: Optional[Identity]):
            if identity is not None:
                credentials.api_key = None
                return identity
            credentials.session_id = None
            return self.keys.verify(credentials.api_key, gate, address)

        return self._live_session(credentials.session_id, gate).addCallback(decide)

    def _landing_login(self, sid, gate: Gate) -> defer.Deferred:
        """A session ``admin_hijack(..., 'UI')`` made, taken (ended) so it serves once."""
        if not isinstance(sid, str) or not sid or len(sid) > 128:
            return defer.fail(AuthenticationFailed("session"))

        def check(session):
            if session is None or session.gate != Gate.UI.value or session.identity.impersonator is None \
                    or gate is not Gate.UI:
                raise AuthenticationFailed("session")
            return session.identity

        return self._on_store(self.sessions.take, sid).addCallback(check)

    async def _password_login(self, credentials: Credentials, gate: Gate, address: str) -> Identity:
        username, site, password = credentials.username or "", credentials.site, credentials.password
        decided = None
        if self._hooks.implemented("apiserver_authenticate"):  # no thread hop when no plugin decides
            decided = await self._pools.run_blocking(self._hooks.call, "apiserver_authenticate", username=username,
                                                     site=site, password=password, gate=gate, address=address)
        if decided is False:
            raise AuthenticationFailed("password")
        if isinstance(decided, Identity):
            return decided
        if gate not in REMEMBERED_GATES:
            return await self._verify_password(gate, site, username, password, address, False)
        known = await self._remembered_login(gate, site, username, password)
        if known is not None:
            return known
        # A client's parallel connections send the same credentials at once: one verification
        # runs, the others wait for it and use what it remembered.
        key = self.verified_passwords.key_of(gate.value, site, username, password)
        waiting = self._verifying.get(key)
        if waiting is not None:
            settled = defer.Deferred()
            waiting.append(settled)
            await settled
            known = await self._remembered_login(gate, site, username, password)
            if known is not None:
                return known
            if key in self._verifying:  # the first failed and another verification runs: no queue of queues
                return await self._verify_password(gate, site, username, password, address, True)
        self._verifying[key] = []
        try:
            return await self._verify_password(gate, site, username, password, address, True)
        finally:
            for settled in self._verifying.pop(key, []):
                settled.callback(None)

    async def _verify_password(self, gate: Gate, site, username: str, password: str, address: str,
                               remembered: bool) -> Identity:
        """Hash and check the password against the account's row; remember it when ``remembered``."""
        run_blocking, run_hashing = self._pools.run_blocking, self._pools.run_hashing
        generation = self.verified_passwords.generation  # before the row: a change meanwhile voids it
        found = await run_blocking(self._password_row, site, username)
        stored = found[1] if found else None
        ok = await self._hash_for(address, self._verify_or_dummy, password, stored)
        identity = found[0] if found else None
        if identity is not None:
            # Queued, not written while the client waits: a known account must cost no more
            # time than an unknown one.
            admitted = ok and await self._ip_restrictions.admits(identity, gate, address)
            record = login_row(identity, utcnow(self._clock), address, gate, "password", admitted)
            self.keys.note_login(record, identity)
        if not ok or identity is None:
            raise AuthenticationFailed("password")
        iterations = self._settings.get("auth", "pbkdf2_iterations")
        if passwords.needs_rehash(stored, iterations):
            upgraded = await run_hashing(passwords.hash_password, password, iterations)
            await run_blocking(self._replace_hash, identity.user_id, stored, upgraded)
            stored = upgraded
        if remembered:
            self.verified_passwords.remember(gate.value, site, username, password, identity, stored, generation)
        return identity

    def _hash_for(self, address: str, fn, *args) -> defer.Deferred:
        """``fn`` on the hashing pool within ``address``'s share (its Anvil key); once its turn
        comes, an address blocked (or to be delayed) meanwhile is answered by Anvil, unhashed."""
        throttle = self._throttle
        if throttle is None:
            return self._pools.run_hashing(fn, *args)
        return self._pools.run_hashing_for(throttle.key_for(address), fn, *args,
                                           ready=lambda: throttle.check_now(address))

    async def _remembered_login(self, gate: Gate, site, username: str, password: str) -> Optional[Identity]:
        """The identity of a password verified within ``[dav] verified_password_ttl``, else None.

        Changes on this node drop entries at once; the account's row is read again when the
        entry says so (``RECHECK_AFTER``), and the hit counts only while its hash is still the
        row's (a change made on another node).  No login is recorded for it: the verification
        that put it there was.
        """
        credentials = (gate.value, site, username, password)
        hit = self.verified_passwords.lookup(*credentials)
        if hit is None:
            return None
        identity, stored, recheck = hit
        if not recheck:
            return identity
        found = await self._pools.run_blocking(self._password_row, site, username)
        if found is not None and found[1] == stored and found[0].user_id == identity.user_id:
            self.verified_passwords.checked(credentials)
            return found[0]
        self.verified_passwords.forget(credentials)
        return None

    def _verify_or_dummy(self, password: str, stored: Optional[str]) -> bool:
        """Hashing pool: verify against ``stored``, or a dummy hash so an unknown account costs the same.

        A legacy or weaker hash is far cheaper than the dummy, so a wrong password for it pays
        for the dummy too: answering faster than for an unknown account would show the account.
        """
        if stored is None:
            passwords.verify_password(password, self._dummy())
            return False
        ok = passwords.verify_password(password, stored)
        if not ok and passwords.needs_rehash(stored, self._settings.get("auth", "pbkdf2_iterations")):
            passwords.verify_password(password, self._dummy())
        return ok

    def _dummy(self) -> str:
        with self._dummy_lock:
            if self._dummy_hash is None:
                iterations = self._settings.get("auth", "pbkdf2_iterations")
                self._dummy_hash = passwords.hash_password(passwords.generate_password(), iterations)
            return self._dummy_hash

    def _password_row(self, site: Optional[str], username: str):
        query = identity_select().add_columns(_users.c.password_hash).where(_users.c.username == username)
        if site:
            query = query.where(_sites.c.domain == site.strip().lower().rstrip("."))
        else:
            query = query.where(_users.c.site_id.is_(None))
        with self._storage.read() as conn:
            row = conn.execute(query).first()
        return (identity_from_row(row), row.password_hash) if row else None

    def _replace_hash(self, user_id: int, old: str, new: str) -> None:
        with self._storage.write() as conn:  # only if no one changed the password meanwhile
            conn.execute(_users.update().where(_users.c.id == user_id, _users.c.password_hash == old)
                         .values(password_hash=new))

    def _on_store(self, fn, *args) -> defer.Deferred:
        """Call a session store method where it may run (blocking stores on the pool)."""
        if self.sessions.blocking:
            return self._pools.run_blocking(fn, *args)
        return defer.maybeDeferred(fn, *args)

    async def forget_users(self, user_ids: list) -> None:
        """After accounts are deleted: drop their cached keys, queued logins, remembered passwords,
        known devices, sessions, cached restrictions and email addresses."""
        self.keys.forget_users(user_ids)
        self.verified_passwords.forget_users(user_ids)
        self._notices.forget_users(user_ids)
        await self._on_store(self.sessions.forget_users, user_ids)
        for user_id in user_ids:
            self._ip_restrictions.invalidate(user_id)
            self.directory.forget(user_id)

    # --- passwords ------------------------------------------------------------------------
    async def set_password(self, target: Identity, password: str, actor: Identity, reset: bool = False,
                           address: Optional[str] = None) -> None:
        """Store a new password for ``target`` and queue its notice in the same transaction; fires
        ``apiserver_password_changed``.

        ``address`` is the client address of the request (None when unknown), for the notice.
        """
        notices = self._notices
        # The notice is stored with the password, so the place of the address is needed first:
        # looked up while the password is hashed (neither step fails the other).
        placing = defer.ensureDeferred(notices.password_notice(target, actor, reset, address))
        try:
            password_hash = await self.hash_new_password(target, password)
        finally:
            notice = await placing
        await self._pools.run_blocking(self._store_hash, target.user_id, password_hash, notice)
        await self._system_password(target, password=password)
        if notice is not None:
            notices.queued()
        self.verified_passwords.forget_user(target.user_id)
        self._hooks.fire("apiserver_password_changed", target=target, actor=actor, reset=reset, address=address)

    async def reset_password(self, target: Identity, actor: Identity, address: Optional[str] = None) -> str:
        """Give ``target`` a generated password and return it; fires the event with ``reset=True``.

        A reset locks a possibly compromised account out, so every session acting as ``target``
        or opened by it ends too (the caller's own included when it is one of them).
        """
        password = passwords.generate_password()
        await self.set_password(target, password, actor, reset=True, address=address)
        await self._on_store(self.sessions.forget_users, [target.user_id])
        return password

    async def set_password_hash(self, target: Identity, password_hash: str, actor: Identity) -> None:
        """Store a hash made elsewhere (a billing system's ``auth.cpasswd``) as ``target``'s password;
        no notice is queued (nobody here knows the password); fires ``apiserver_password_changed``."""
        await self._pools.run_blocking(self._store_hash, target.user_id, password_hash)
        await self._system_password(target, password_hash=password_hash)
        self.verified_passwords.forget_user(target.user_id)
        self._hooks.fire("apiserver_password_changed", target=target, actor=actor, reset=False, address=None)

    async def _system_password(self, target: Identity, **new) -> None:
        """The site user's system password (/etc/shadow and the site's etc/shadow) follows the stored one."""
        if self._system_accounts is None or target.site_id is None or not self._system_accounts.enabled:
            return
        await self._pools.run_hashing(self._system_accounts.set_password, target.site_id, target.username, **new)

    async def end_sessions_of(self, user_ids: list) -> None:
        """End every session acting as, or opened by, one of ``user_ids``, and forget their verified
        passwords (a suspended site's accounts)."""
        self.verified_passwords.forget_users(user_ids)
        await self._on_store(self.sessions.forget_users, user_ids)

    def _store_hash(self, user_id: int, password_hash: str, also=None) -> None:
        """The new hash and, through ``also(conn)``, its notice in the outbox: both or neither."""
        with self._storage.write() as conn:
            if not conn.execute(_users.update().where(_users.c.id == user_id)
                                .values(password_hash=password_hash)).rowcount:
                raise NotFound("the account no longer exists")
            if also is not None:
                also(conn)

    async def hash_new_password(self, target: Identity, password: str) -> str:
        """Check ``[auth] min_pw_length`` then the ``apiserver_validate_password`` hook; hash."""
        if not isinstance(password, str):
            raise InvalidArgument("password must be a string")
        problem = passwords.policy_violation(password, self._settings.get("auth", "min_pw_length"))
        if problem is None:
            problem = await self._pools.run_blocking(self._hooks.call, "apiserver_validate_password",
                                                     identity=target, password=password)
        if problem:
            raise InvalidArgument(str(problem))
        iterations = self._settings.get("auth", "pbkdf2_iterations")
        return await self._pools.run_hashing(passwords.hash_password, password, iterations)

    # --- API keys -------------------------------------------------------------------------
    async def create_api_key(self, owner: Identity, comment: str, actor: Identity) -> str:
        """A new key acting as ``owner``; fires ``apiserver_api_key_created``."""
        key = await self._pools.run_blocking(self.keys.create, owner, comment or "")
        self._hooks.fire("apiserver_api_key_created", owner=owner, actor=actor, comment=comment or "")
        return key

    async def delete_api_key(self, owner: Identity, key: str, actor: Identity) -> None:
        """Delete ``owner``'s key; fires ``apiserver_api_key_deleted``.  NotFound if it has no such key."""
        await self._pools.run_blocking(self.keys.delete, owner, key)
        self._hooks.fire("apiserver_api_key_deleted", owner=owner, actor=actor)

    # --- login history (blocking) -----------------------------------------------------------
    def login_history(self, identity: Identity, limit: Optional[int]) -> list[LoginRecord]:
        """Blocking.  ``identity``'s logins, newest first (at most ``limit``)."""
        self.keys.write_pending()
        query = (sa.select(_history).where(_history.c.user_id == identity.user_id)
                 .order_by(_history.c.at.desc(), _history.c.id.desc()))
        if limit is not None:
            query = query.limit(limit)
        with self._storage.read() as conn:
            rows = conn.execute(query).all()
        return [LoginRecord(at=r.at, address=r.address, gate=r.gate, method=r.method, success=r.success) for r in rows]

    def last_login(self, identity: Identity) -> Optional[LoginRecord]:
        """Blocking.  ``identity``'s most recent successful login, or None."""
        self.keys.write_pending()
        with self._storage.read() as conn:
            r = conn.execute(sa.select(_history).where(_history.c.user_id == identity.user_id, _history.c.success)
                             .order_by(_history.c.at.desc(), _history.c.id.desc()).limit(1)).first()
        return LoginRecord(at=r.at, address=r.address, gate=r.gate, method=r.method, success=r.success) if r else None

    # --- sessions -------------------------------------------------------------------------
    def start_ui_session(self, identity: Identity, password: str) -> defer.Deferred:
        """A session bound to gate UI after a password login; fires with ``(session id, tag)``.

        With ``[auth] retain_ui_password`` the password is sealed into the session and ``tag`` is
        the value of the ``esprit_tag`` cookie that opens it; otherwise nothing of the password is
        kept and ``tag`` is None.
        """
        data = tag = None
        if self._settings.get("auth", "retain_ui_password"):
            sealed, tag = self._ui_passwords.seal(password, identity.user_id)
            data = sealed.encode()
        d = self._on_store(self.sessions.create, identity, Gate.UI.value, data)
        return d.addCallback(lambda sid: (sid, tag))

    def start_landed_session(self, identity: Identity) -> defer.Deferred:
        """A fresh UI session for ``identity`` after a single-sign-on landing; fires with its id
        (the id in the link is never the one the browser keeps: no session fixation)."""
        return self._on_store(self.sessions.create, identity, Gate.UI.value)

    def end_session(self, sid: str) -> defer.Deferred:
        """End session ``sid`` (nothing happens if there is none)."""
        return self._on_store(self.sessions.delete, sid)

    def hijack(self, actor: Identity, site: str, user: Optional[str], gate: Optional[str]) -> tuple[Identity, str]:
        """Blocking.  ``(target, session id)``: a session acting as ``site``'s administrator (or
        ``user``) on behalf of ``actor``."""
        target = self.directory.identity_for(site, user)
        impersonated = Identity(target.role, target.user_id, target.username, target.site_id, target.site,
                                impersonator=actor)
        return target, self.sessions.create(impersonated, gate)


def _or_fail(identity: Optional[Identity], reason: str) -> Identity:
    if identity is None:
        raise AuthenticationFailed(reason)
    return identity
