"""The accounts service (``app.accounts``): sites, accounts, passwords, API keys, sessions, logins.

Methods documented as *blocking* touch the database and run on the blocking pool (module
functions call them directly; they already run there).  ``authenticate`` returns a Deferred
and the ``async def`` methods are coroutines (``await`` them in an async module function, or
wrap them in ``defer.ensureDeferred``); both run on the reactor thread, hand database work to
``app.run_blocking`` and hashing to ``app.run_hashing``, and fire the event hooks on the
reactor thread when done.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Optional

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.accounts import passwords, validation
from apiserver.accounts.identities import identity_from_row, identity_select, login_row
from apiserver.accounts.keys import ApiKeys, KeyCipher
from apiserver.accounts.records import IpRestriction, LoginRecord, NewSite, UserInfo
from apiserver.accounts.sessions import make_session_store
from apiserver.accounts.state import load_secret
from apiserver.accounts.ui_password import UIPasswordCipher
from apiserver.accounts.verified import VerifiedPasswords
from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import AuthenticationFailed, Denied, Exists, InvalidArgument, NotFound
from apiserver.module import Role
from apiserver.storage import schema, utcnow
from apiserver.storage.cache import ReadThroughCache

log = Logger(namespace="apiserver.accounts")

_users, _sites, _restrictions, _history = schema.users, schema.sites, schema.ip_restrictions, schema.login_history

#: Root's uid: a cpcmd caller with it acts as the appliance administrator.
ROOT_UID = 0
#: Gates whose clients send the password with every request: a verified one is remembered
#: (:mod:`apiserver.accounts.verified`) instead of hashed again.
REMEMBERED_GATES = (Gate.DAV,)

#: Most accounts whose email address is cached at once.
MAX_CACHED_ACCOUNTS = 10_000

# Statements of the hot paths, built once (SQLAlchemy then finds their compiled form in its cache
# without building a new statement object per call).
_EMAIL_OF = sa.select(_users.c.email).where(_users.c.id == sa.bindparam("user_id"))
_RESTRICTIONS_OF = (sa.select(_restrictions.c.network, _restrictions.c.gate)
                    .where(_restrictions.c.user_id == sa.bindparam("user_id")).order_by(_restrictions.c.id))
_RESTRICTION_GENERATION_OF = (sa.select(_users.c.ip_restriction_generation)
                              .where(_users.c.id == sa.bindparam("user_id")))
_RESTRICTION_COUNT = (sa.select(sa.func.count()).select_from(_restrictions)
                      .where(_restrictions.c.user_id == sa.bindparam("user_id")))


def _new_generation() -> int:
    """A fresh ``users.ip_restriction_generation``: random, never 0 (the column's default)."""
    return secrets.randbits(62) + 1


class Accounts:
    """Everything about who may call: see the module docstring for which methods block."""

    def __init__(self, app):
        self.app = app
        self.keys = ApiKeys(app, self._cipher)
        self.sessions = make_session_store(app)
        self._lock = threading.Lock()
        self._dummy_lock = threading.Lock()  # held while hashing: never taken on the reactor thread
        self._key_cipher: Optional[KeyCipher] = None
        self._ui_cipher: Optional[UIPasswordCipher] = None
        self._dummy_hash: Optional[str] = None
        # Email addresses by account id: answered without a thread when cached, invalidated by
        # this node's writes, other nodes' writes show within [auth] account_cache_ttl.
        self._emails = ReadThroughCache(app.clock, lambda fn, *a: app.run_blocking(fn, *a), self._load_email,
                                        lambda: app.config.get("auth", "account_cache_ttl"), MAX_CACHED_ACCOUNTS)
        self._verifying: dict = {}  # HMAC of credentials being verified -> Deferreds waiting for it
        self.verified_passwords = VerifiedPasswords(app.clock, lambda: app.config.get("dav", "verified_password_ttl"))

    def prepare(self) -> None:
        """Blocking (hashing pool, at start-up): read the secret and make the dummy password hash,
        so the first requests pay for neither and an unknown account never costs two hashes."""
        self._cipher()
        self._dummy()

    # The secret is read on first use, so building the application needs no initialised state.
    def _ciphers(self) -> tuple[KeyCipher, UIPasswordCipher]:
        with self._lock:
            if self._key_cipher is None:
                secret = load_secret(self.app.config)
                self._key_cipher, self._ui_cipher = KeyCipher(secret), UIPasswordCipher(secret)
            return self._key_cipher, self._ui_cipher

    def _cipher(self) -> KeyCipher:
        return self._ciphers()[0]

    def ui_password_cipher(self) -> UIPasswordCipher:
        """The cipher of UI passwords kept in sessions (its key derives from ``[auth] secret``)."""
        return self._ciphers()[1]

    # --- authentication (reactor thread) ----------------------------------------------------
    def authenticate(self, credentials: Credentials, gate: Gate, address: str) -> defer.Deferred:
        """The identity ``credentials`` prove, or a failure with ``AuthenticationFailed(reason)``.

        One kind of credential is used, in this order: API key, session, password, peer uid.
        """
        if credentials.api_key is not None:
            return self.keys.verify(credentials.api_key, gate, address)
        if credentials.session_id is not None:
            return self._session_login(credentials.session_id, gate)
        if credentials.password is not None:
            return defer.ensureDeferred(self._password_login(credentials, gate, address))
        if credentials.peer_uid is not None:
            d = self.app.run_blocking(self.identity_for_uid, credentials.peer_uid)
            return d.addCallback(_or_fail, "uid")
        return defer.fail(AuthenticationFailed("key"))

    def _session_login(self, sid, gate: Gate) -> defer.Deferred:
        if not isinstance(sid, str) or not sid or len(sid) > 128:
            return defer.fail(AuthenticationFailed("session"))
        d = self._on_store(self.sessions.lookup, sid)

        def check(session):
            if session is None or (session.gate is not None and session.gate != gate):
                raise AuthenticationFailed("session")
            return session.identity

        return d.addCallback(check)

    async def _password_login(self, credentials: Credentials, gate: Gate, address: str) -> Identity:
        app = self.app
        username, site, password = credentials.username or "", credentials.site, credentials.password
        decided = await app.run_blocking(app.hook.apiserver_authenticate, app=app, api=app.api, username=username, site=site,
                                         password=password, gate=gate, address=address)
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
        app = self.app
        generation = self.verified_passwords.generation  # before the row: a change meanwhile voids it
        found = await app.run_blocking(self._password_row, site, username)
        stored = found[1] if found else None
        ok = await app.run_hashing(self._verify_or_dummy, password, stored)
        identity = found[0] if found else None
        if identity is not None:
            # Queued, not written while the client waits: a known account must cost no more
            # time than an unknown one.
            admitted = ok and await self.address_admitted(identity, gate, address)
            self.keys.note_login(login_row(identity, utcnow(app.clock), address, gate, "password", admitted), identity)
        if not ok or identity is None:
            raise AuthenticationFailed("password")
        iterations = app.config.get("auth", "pbkdf2_iterations")
        if passwords.needs_rehash(stored, iterations):
            upgraded = await app.run_hashing(passwords.hash_password, password, iterations)
            await app.run_blocking(self._replace_hash, identity.user_id, stored, upgraded)
            stored = upgraded
        if remembered:
            self.verified_passwords.remember(gate.value, site, username, password, identity, stored, generation)
        return identity

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
        found = await self.app.run_blocking(self._password_row, site, username)
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
        if not ok and passwords.needs_rehash(stored, self.app.config.get("auth", "pbkdf2_iterations")):
            passwords.verify_password(password, self._dummy())
        return ok

    def _dummy(self) -> str:
        with self._dummy_lock:
            if self._dummy_hash is None:
                iterations = self.app.config.get("auth", "pbkdf2_iterations")
                self._dummy_hash = passwords.hash_password(passwords.generate_password(), iterations)
            return self._dummy_hash

    def _password_row(self, site: Optional[str], username: str):
        query = identity_select().add_columns(_users.c.password_hash).where(_users.c.username == username)
        if site:
            query = query.where(_sites.c.domain == site.strip().lower().rstrip("."))
        else:
            query = query.where(_users.c.site_id.is_(None))
        with self.app.storage.read() as conn:
            row = conn.execute(query).first()
        return (identity_from_row(row), row.password_hash) if row else None

    async def address_admitted(self, identity: Identity, gate: Gate, address: str) -> bool:
        """Whether ``identity``'s IP restrictions admit ``address`` at ``gate``.

        The gatekeeper enforces them after authentication; this only decides how a login is
        recorded, as one they refuse is a failed login, not a successful one.
        """
        try:
            await self.app.gatekeeper.ip_restrictions.check(identity, gate, address)
        except AuthenticationFailed:
            return False
        return True

    def _replace_hash(self, user_id: int, old: str, new: str) -> None:
        with self.app.storage.write() as conn:  # only if no one changed the password meanwhile
            conn.execute(_users.update().where(_users.c.id == user_id, _users.c.password_hash == old)
                         .values(password_hash=new))

    def _on_store(self, fn, *args) -> defer.Deferred:
        """Call a session store method where it may run (blocking stores on the pool)."""
        if self.sessions.blocking:
            return self.app.run_blocking(fn, *args)
        return defer.maybeDeferred(fn, *args)

    # --- identities (blocking) --------------------------------------------------------------
    def identity_for_uid(self, uid: int) -> Optional[Identity]:
        """Blocking.  The identity a local CLI caller with ``uid`` acts as: root is the appliance administrator."""
        if uid != ROOT_UID:
            return None
        with self.app.storage.read() as conn:
            row = conn.execute(identity_select().where(_users.c.role == "admin").order_by(_users.c.id)).first()
        return identity_from_row(row) if row else None

    def identity_for(self, site: Optional[str], user: Optional[str]) -> Identity:
        """Blocking.  The appliance administrator (no site), a site's administrator (no user) or a
        user of a site; NotFound naming what is missing."""
        if site is None:
            admin = self.identity_for_uid(ROOT_UID)
            if admin is None or (user is not None and user != admin.username):
                raise NotFound(f"no appliance account {user!r}" if user else "no appliance administrator")
            return admin
        domain = validation.normalize_domain(site)
        query = identity_select().where(_sites.c.domain == domain)
        query = query.where(_users.c.role == "site") if user is None else query.where(_users.c.username == user)
        with self.app.storage.read() as conn:
            row = conn.execute(query).first()
            if row is None:
                if conn.execute(sa.select(_sites.c.id).where(_sites.c.domain == domain)).first() is None:
                    raise NotFound(f"no site {domain!r}")
                raise NotFound(f"no user {user!r} in site {domain!r}")
        return identity_from_row(row)

    def resolve_target(self, actor: Identity, user: Optional[str], domain: Optional[str]) -> Identity:
        """Blocking.  The account ``actor`` means by ``user``/``domain``, if it may act on it.

        The appliance administrator may name any site and user; a site administrator only its
        own site's accounts; a user only itself.
        """
        if actor.role is Role.ADMIN:
            if domain is None:
                if user is None or user == actor.username:
                    return actor
                raise InvalidArgument(f"name the domain of user {user!r}: the appliance has no other accounts")
            return self.identity_for(domain, user)
        if domain is not None and validation.normalize_domain(domain) != actor.site:
            raise Denied("you may only act on accounts of your own site")
        if user is None or user == actor.username:
            return actor
        if actor.role is not Role.SITE:
            raise Denied("a user may only act on their own account")
        return self.identity_for(actor.site, user)

    def load_ip_restrictions(self, user_id: int) -> list:
        """Blocking.  ``[(network, gate or None), ...]`` of account ``user_id``, read from the database."""
        with self.app.storage.read() as conn:
            rows = conn.execute(_RESTRICTIONS_OF, {"user_id": user_id}).all()
        return [(row.network, row.gate) for row in rows]

    def mark_ip_restrictions_changed(self, user_id: int) -> None:
        """Blocking.  Draw a new ``users.ip_restriction_generation`` for ``user_id`` after its rows
        were changed behind this service, so every node reads them again within its ttl."""
        with self.app.storage.write() as conn:
            conn.execute(_users.update().where(_users.c.id == user_id)
                         .values(ip_restriction_generation=_new_generation()))

    def ip_restriction_generation(self, user_id: int) -> Optional[int]:
        """Blocking.  The number drawn by the last change of ``user_id``'s IP restrictions (one
        row read; None when there is no such account).  Read it before the entries: they then
        hold at least every change up to it."""
        with self.app.storage.read() as conn:
            return conn.execute(_RESTRICTION_GENERATION_OF, {"user_id": user_id}).scalar()

    # --- email ------------------------------------------------------------------------------
    def get_email(self, identity: Identity) -> Optional[str]:
        """Blocking.  The email address on record for ``identity``, or None (cached, see :meth:`fetch_email`)."""
        return self._emails.get_blocking(identity.user_id)

    def fetch_email(self, identity: Identity) -> defer.Deferred:
        """Reactor thread: a Deferred firing with :meth:`get_email`'s answer.  Cached per account
        (no thread when cached; read on the blocking pool otherwise); this node's changes show
        at once, other nodes' within ``[auth] account_cache_ttl`` seconds."""
        return self._emails.get(identity.user_id)

    def _load_email(self, user_id: int) -> Optional[str]:
        with self.app.storage.read() as conn:
            return conn.execute(_EMAIL_OF, {"user_id": user_id}).scalar()

    def set_email(self, identity: Identity, email: Optional[str]) -> None:
        """Blocking.  Set (or with None, clear) ``identity``'s email address."""
        value = validation.normalize_email(email) if email else None
        with self.app.storage.write() as conn:
            conn.execute(_users.update().where(_users.c.id == identity.user_id).values(email=value))
        self._emails.invalidate(identity.user_id)

    # --- sites and users --------------------------------------------------------------------
    def list_sites(self) -> list[str]:
        """Blocking.  Every site's domain, sorted."""
        with self.app.storage.read() as conn:
            return list(conn.execute(sa.select(_sites.c.domain).order_by(_sites.c.domain)).scalars())

    def list_users(self, site_id: int) -> list[UserInfo]:
        """Blocking.  The accounts of a site, its administrator first."""
        with self.app.storage.read() as conn:
            rows = conn.execute(sa.select(_users.c.username, _users.c.role, _users.c.email)
                                .where(_users.c.site_id == site_id)
                                .order_by(_users.c.role != "site", _users.c.username)).all()
        return [UserInfo(username=r.username, role=r.role, email=r.email) for r in rows]

    async def add_site(self, domain: str, admin_user: str, email: Optional[str], password: Optional[str],
                       actor: Identity) -> NewSite:
        """Create a site and its administrator; a password is generated when none is given.

        Fires ``apiserver_site_added``.  Exists if the domain is taken.
        """
        domain = validation.normalize_domain(domain)
        admin_user = validation.normalize_username(admin_user)
        email = validation.normalize_email(email) if email else None
        generated = password is None
        if generated:
            password = passwords.generate_password()
        target = Identity(Role.SITE, user_id=0, username=admin_user, site=domain)
        password_hash = await self._hash_new_password(target, password)
        await self.app.run_blocking(self._insert_site, domain, admin_user, email, password_hash)
        self.app.fire("apiserver_site_added", site=domain, actor=actor)
        return NewSite(domain=domain, admin_user=admin_user, password=password if generated else None)

    def _insert_site(self, domain: str, admin_user: str, email: Optional[str], password_hash: str) -> None:
        now = utcnow(self.app.clock)
        home = None
        try:
            with self.app.storage.write() as conn:  # the site, its administrator and its home, or none
                try:
                    site_id = conn.execute(_sites.insert().values(domain=domain, created_at=now)).inserted_primary_key[0]
                except sa.exc.IntegrityError:  # only the domain is unique: any other failure is no "exists"
                    raise Exists(f"site {domain!r} exists already") from None
                user_id = conn.execute(_users.insert().values(
                    site_id=site_id, username=admin_user, role="site", password_hash=password_hash, email=email,
                    created_at=now)).inserted_primary_key[0]
                home = self.app.site_homes.create(domain)  # before the commit: a failure rolls the rows back
        except BaseException:
            if home is not None:  # the commit failed after the home was made
                self.app.site_homes.purge(self.app.site_homes.detach(domain))
            raise
        self._emails.invalidate(user_id)  # SQLite may reuse the id of an account deleted on another node

    async def delete_site(self, domain: str, actor: Identity) -> None:
        """Delete a site with all its accounts, keys, restrictions and sessions; NotFound if absent.

        Fires ``apiserver_site_deleted``.
        """
        domain = validation.normalize_domain(domain)
        user_ids = await self.app.run_blocking(self._delete_site_rows, domain)
        await self._forget_users(user_ids)
        self.app.fire("apiserver_site_deleted", site=domain, actor=actor)

    def _delete_site_rows(self, domain: str) -> list:
        homes = self.app.site_homes
        detached = None
        try:
            with self.app.storage.write() as conn:
                site_id = conn.execute(sa.select(_sites.c.id).where(_sites.c.domain == domain)).scalar()
                if site_id is None:
                    raise NotFound(f"no site {domain!r}")
                user_ids = list(conn.execute(sa.select(_users.c.id).where(_users.c.site_id == site_id)).scalars())
                conn.execute(_sites.delete().where(_sites.c.id == site_id))
                detached = homes.detach(domain)  # one rename: the home leaves its place with the rows
        except BaseException:
            if detached is not None:  # the commit failed: put the home back
                os.rename(detached, os.path.join(homes.sites_root, domain))
            raise
        if detached is not None:
            try:
                homes.purge(detached)
            except OSError as exc:  # the site is gone; what is left on disk is named, not fatal
                log.error("could not remove the deleted site's files at {path}: {error}", path=detached, error=exc)
        return user_ids

    async def add_user(self, site_admin: Identity, username: str, password: str, email: Optional[str]) -> None:
        """Add a user to ``site_admin``'s site; Exists if the name is taken there."""
        username = validation.normalize_username(username)
        email = validation.normalize_email(email) if email else None
        target = Identity(Role.USER, user_id=0, username=username, site_id=site_admin.site_id, site=site_admin.site)
        password_hash = await self._hash_new_password(target, password)
        await self.app.run_blocking(self._insert_user, site_admin.site_id, username, password_hash, email)

    def _insert_user(self, site_id: int, username: str, password_hash: str, email: Optional[str]) -> None:
        try:
            with self.app.storage.write() as conn:
                user_id = conn.execute(_users.insert().values(
                    site_id=site_id, username=username, role="user", password_hash=password_hash, email=email,
                    created_at=utcnow(self.app.clock))).inserted_primary_key[0]
        except sa.exc.IntegrityError:
            raise Exists(f"user {username!r} exists already") from None
        self._emails.invalidate(user_id)  # SQLite may reuse the id of an account deleted on another node

    async def delete_user(self, site_admin: Identity, username: str) -> None:
        """Delete a user of ``site_admin``'s site (not the administrator); NotFound if absent."""
        user_id = await self.app.run_blocking(self._delete_user_row, site_admin, username)
        await self._forget_users([user_id])

    def _delete_user_row(self, site_admin: Identity, username: str) -> int:
        with self.app.storage.write() as conn:
            row = conn.execute(sa.select(_users.c.id, _users.c.role)
                               .where(_users.c.site_id == site_admin.site_id, _users.c.username == username)).first()
            if row is None:
                raise NotFound(f"no user {username!r} in site {site_admin.site!r}")
            if row.role != "user":
                raise Denied("the site administrator cannot be deleted; delete the site instead")
            conn.execute(_users.delete().where(_users.c.id == row.id))
        return row.id

    async def _forget_users(self, user_ids: list) -> None:
        """After accounts are deleted: drop their cached keys, queued logins, known devices, sessions and cached restrictions."""
        self.keys.forget_users(user_ids)
        self.verified_passwords.forget_users(user_ids)
        devices = getattr(self.app.notices, "devices", None)
        if devices is not None:
            devices.forget_users(user_ids)
        await self._on_store(self.sessions.forget_users, user_ids)
        gatekeeper = self.app.gatekeeper
        for user_id in user_ids:
            gatekeeper.ip_restrictions.invalidate(user_id)
            self._emails.invalidate(user_id)

    # --- passwords ------------------------------------------------------------------------
    async def set_password(self, target: Identity, password: str, actor: Identity, reset: bool = False,
                           address: Optional[str] = None) -> None:
        """Store a new password for ``target`` and queue its notice in the same transaction; fires
        ``apiserver_password_changed``.

        ``address`` is the client address of the request (None when unknown), for the notice.
        """
        notices = self.app.notices
        # The notice is stored with the password, so the place of the address is needed first:
        # looked up while the password is hashed (neither step fails the other).
        placing = defer.ensureDeferred(notices.password_notice(target, actor, reset, address)) \
            if notices is not None else defer.succeed(None)
        try:
            password_hash = await self._hash_new_password(target, password)
        finally:
            notice = await placing
        await self.app.run_blocking(self._store_hash, target.user_id, password_hash, notice)
        if notice is not None:
            notices.queued()
        self.verified_passwords.forget_user(target.user_id)
        self.app.fire("apiserver_password_changed", target=target, actor=actor, reset=reset, address=address)

    async def reset_password(self, target: Identity, actor: Identity, address: Optional[str] = None) -> str:
        """Give ``target`` a generated password and return it; fires the event with ``reset=True``.

        A reset locks a possibly compromised account out, so every session acting as ``target``
        or opened by it ends too (the caller's own included when it is one of them).
        """
        password = passwords.generate_password()
        await self.set_password(target, password, actor, reset=True, address=address)
        await self._on_store(self.sessions.forget_users, [target.user_id])
        return password

    def _store_hash(self, user_id: int, password_hash: str, also=None) -> None:
        """The new hash and, through ``also(conn)``, its notice in the outbox: both or neither."""
        with self.app.storage.write() as conn:
            if not conn.execute(_users.update().where(_users.c.id == user_id)
                                .values(password_hash=password_hash)).rowcount:
                raise NotFound("the account no longer exists")
            if also is not None:
                also(conn)

    async def _hash_new_password(self, target: Identity, password: str) -> str:
        """Check ``[auth] min_pw_length`` then the ``apiserver_validate_password`` hook; hash."""
        if not isinstance(password, str):
            raise InvalidArgument("password must be a string")
        problem = passwords.policy_violation(password, self.app.config.get("auth", "min_pw_length"))
        if problem is None:
            problem = await self.app.run_blocking(self.app.hook.apiserver_validate_password, app=self.app, api=self.app.api,
                                                  identity=target, password=password)
        if problem:
            raise InvalidArgument(str(problem))
        iterations = self.app.config.get("auth", "pbkdf2_iterations")
        return await self.app.run_hashing(passwords.hash_password, password, iterations)

    # --- API keys -------------------------------------------------------------------------
    async def create_api_key(self, owner: Identity, comment: str, actor: Identity) -> str:
        """A new key acting as ``owner``; fires ``apiserver_api_key_created``."""
        key = await self.app.run_blocking(self.keys.create, owner, comment or "")
        self.app.fire("apiserver_api_key_created", owner=owner, actor=actor, comment=comment or "")
        return key

    async def delete_api_key(self, owner: Identity, key: str, actor: Identity) -> None:
        """Delete ``owner``'s key; fires ``apiserver_api_key_deleted``.  NotFound if it has no such key."""
        await self.app.run_blocking(self.keys.delete, owner, key)
        self.app.fire("apiserver_api_key_deleted", owner=owner, actor=actor)

    # --- IP restrictions (blocking) ---------------------------------------------------------
    def add_ip_restriction(self, identity: Identity, network: str, gate: Optional[str]) -> None:
        """Blocking.  Store an entry validated by the gatekeeper; enforces ``[auth] ip_restriction_limit``.

        The gatekeeper's cached entries of the account gain it at once.
        """
        limit = self.app.config.get("auth", "ip_restriction_limit")
        gate_match = _restrictions.c.gate.is_(None) if gate is None else _restrictions.c.gate == gate
        generation = _new_generation()
        with self.app.storage.write() as conn:
            # Concurrent adds for one account queue on its row (SQLite's BEGIN IMMEDIATE already
            # does), so neither the limit nor an entry for every gate (NULL: no unique index
            # catches it) can be doubled by a race.
            row = conn.execute(sa.select(_users.c.ip_restriction_count, _users.c.ip_restriction_generation)
                               .where(_users.c.id == identity.user_id).with_for_update()).first()
            count, previous = (row.ip_restriction_count, row.ip_restriction_generation) if row else (None, None)
            # One indexed probe (uq_ip_restrictions_entry) and the account's counter: the same
            # cost however many entries it has.
            if conn.execute(sa.select(_restrictions.c.id).where(
                    _restrictions.c.user_id == identity.user_id, _restrictions.c.network == network, gate_match)
                    .limit(1)).first() is not None:
                raise Exists(f"{network} is already allowed{_at(gate)}")
            if count is not None and count >= limit:
                # The counter may be off after rows were edited by hand: count them before refusing.
                count = conn.execute(_RESTRICTION_COUNT, {"user_id": identity.user_id}).scalar()
                conn.execute(_users.update().where(_users.c.id == identity.user_id)
                             .values(ip_restriction_count=count))
                if count >= limit:
                    raise InvalidArgument(f"an account may have at most {limit} IP restrictions "
                                          "([auth] ip_restriction_limit); remove one first")
            conn.execute(_restrictions.insert().values(user_id=identity.user_id, network=network, gate=gate))
            conn.execute(_users.update().where(_users.c.id == identity.user_id)
                         .values(ip_restriction_count=_users.c.ip_restriction_count + 1,
                                 ip_restriction_generation=generation))
        self.app.gatekeeper.ip_restrictions.added(identity.user_id, network, gate, (previous, generation))

    def remove_ip_restriction(self, identity: Identity, network: str, gate: Optional[str]) -> None:
        """Blocking.  Remove one entry; NotFound if there is none.  The cached entries lose it at once."""
        gate_match = _restrictions.c.gate.is_(None) if gate is None else _restrictions.c.gate == gate
        generation = _new_generation()
        with self.app.storage.write() as conn:
            # Queued on the account's row like adds, so each generation follows exactly one change.
            previous = conn.execute(sa.select(_users.c.ip_restriction_generation)
                                    .where(_users.c.id == identity.user_id).with_for_update()).scalar()
            removed = conn.execute(_restrictions.delete().where(
                _restrictions.c.user_id == identity.user_id, _restrictions.c.network == network, gate_match)).rowcount
            if removed:
                conn.execute(_users.update().where(_users.c.id == identity.user_id)
                             .values(ip_restriction_count=sa.case((_users.c.ip_restriction_count > removed,
                                                                    _users.c.ip_restriction_count - removed), else_=0),
                                     ip_restriction_generation=generation))
        if not removed:
            raise NotFound(f"no IP restriction {network}{_at(gate)}")
        self.app.gatekeeper.ip_restrictions.removed(identity.user_id, network, gate, (previous, generation))

    def fetch_ip_restrictions(self, identity: Identity, gate: Optional[str]) -> defer.Deferred:
        """Reactor thread: a Deferred firing with :meth:`ip_restrictions`'s answer, from the
        entries the gatekeeper caches for its checks (no thread when cached)."""
        d = self.app.gatekeeper.ip_restrictions.entries(identity.user_id)
        return d.addCallback(_listed, gate)

    # --- login history (blocking) -----------------------------------------------------------
    def login_history(self, identity: Identity, limit: Optional[int]) -> list[LoginRecord]:
        """Blocking.  ``identity``'s logins, newest first (at most ``limit``)."""
        self.keys.write_pending()
        query = (sa.select(_history).where(_history.c.user_id == identity.user_id)
                 .order_by(_history.c.at.desc(), _history.c.id.desc()))
        if limit is not None:
            query = query.limit(limit)
        with self.app.storage.read() as conn:
            rows = conn.execute(query).all()
        return [LoginRecord(at=r.at, address=r.address, gate=r.gate, method=r.method, success=r.success) for r in rows]

    def last_login(self, identity: Identity) -> Optional[LoginRecord]:
        """Blocking.  ``identity``'s most recent successful login, or None."""
        self.keys.write_pending()
        with self.app.storage.read() as conn:
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
        if self.app.config.get("auth", "retain_ui_password"):
            sealed, tag = self.ui_password_cipher().seal(password, identity.user_id)
            data = sealed.encode()
        d = self._on_store(self.sessions.create, identity, Gate.UI.value, data)
        return d.addCallback(lambda sid: (sid, tag))

    def end_session(self, sid: str) -> defer.Deferred:
        """End session ``sid`` (nothing happens if there is none)."""
        return self._on_store(self.sessions.delete, sid)

    def hijack(self, actor: Identity, site: str, user: Optional[str], gate: Optional[str]) -> tuple[Identity, str]:
        """Blocking.  ``(target, session id)``: a session acting as ``site``'s administrator (or
        ``user``) on behalf of ``actor``."""
        target = self.identity_for(site, user)
        impersonated = Identity(target.role, target.user_id, target.username, target.site_id, target.site,
                                impersonator=actor)
        return target, self.sessions.create(impersonated, gate)


def _listed(entries, gate: Optional[str]) -> list[IpRestriction]:
    return [IpRestriction(ip=network, gate=entry_gate) for network, entry_gate in entries
            if gate is None or entry_gate in (None, gate)]


def _at(gate: Optional[str]) -> str:
    return f" at gate {gate}" if gate else " at every gate"


def _or_fail(identity: Optional[Identity], reason: str) -> Identity:
    if identity is None:
        raise AuthenticationFailed(reason)
    return identity
