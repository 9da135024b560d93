"""Who the accounts are: identities by name or uid, which account a caller may act on, email
addresses, and the lists of sites and users.

:class:`AccountDirectory` only reads and writes account rows: it fires no event and calls no
plugin, so the plugin API, the gates and the accounts service can all be handed it.  Methods
documented as *blocking* touch the database (call them on the blocking pool);
:meth:`AccountDirectory.fetch_email` answers cached addresses on the reactor thread.
"""

from __future__ import annotations

from typing import Callable, Optional

import sqlalchemy as sa
from twisted.internet import defer

from apiserver.accounts import validation
from apiserver.accounts.identities import identity_from_row, identity_select
from apiserver.accounts.records import UserInfo
from apiserver.context import Identity
from apiserver.errors import Denied, InvalidArgument, NotFound
from apiserver.module import Role
from apiserver.storage import schema
from apiserver.storage.cache import ReadThroughCache

_users, _sites = schema.users, schema.sites

#: Root's uid: a cpcmd caller with it acts as the appliance administrator.
ROOT_UID = 0

#: Most accounts whose email address is cached at once.
MAX_CACHED_ACCOUNTS = 10_000

_EMAIL_OF = sa.select(_users.c.email).where(_users.c.id == sa.bindparam("user_id"))


class AccountDirectory:
    """Account look-ups and email addresses.

    ``storage``: the database; ``clock`` and ``run_blocking``: for the email cache (a hit needs
    no thread); ``settings``: the config (``[auth] account_cache_ttl``, read per use);
    ``host_uids``: blocking, a system uid -> the site account it belongs to (an object with
    ``site_id`` and ``username``, such as the host's account record) or None; without it only
    root has a uid.
    """

    def __init__(self, storage, clock, run_blocking: Callable, settings, host_uids: Optional[Callable] = None):
        self._storage = storage
        self._host_uids = host_uids
        # Email addresses by account id: answered without a thread when cached, invalidated by
        # this node's writes, other nodes' writes show within [auth] account_cache_ttl.
        self._emails = ReadThroughCache(clock, run_blocking, self._load_email,
                                        lambda: settings.get("auth", "account_cache_ttl"), MAX_CACHED_ACCOUNTS)

    # --- identities (blocking) --------------------------------------------------------------
    def identity_for_uid(self, uid: int) -> Optional[Identity]:
        """Blocking.  The identity a local CLI caller with ``uid`` acts as: root is the appliance
        administrator, a site account's system uid that account; None for any other uid."""
        if uid == ROOT_UID:
            query = identity_select().where(_users.c.role == "admin").order_by(_users.c.id)
        else:
            owner = self._host_uids(uid) if self._host_uids is not None else None
            if owner is None:
                return None
            query = identity_select().where(_users.c.site_id == owner.site_id, _users.c.username == owner.username)
        with self._storage.read() as conn:
            row = conn.execute(query).first()
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
        if isinstance(user, str):
            user = user.strip().lower()  # names are stored in lower case; billing systems keep what was typed
        query = identity_select().where(_sites.c.domain == domain)
        query = query.where(_users.c.role == "site") if user is None else query.where(_users.c.username == user)
        with self._storage.read() as conn:
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
        with self._storage.read() as conn:
            return conn.execute(_EMAIL_OF, {"user_id": user_id}).scalar()

    def set_email(self, identity: Identity, email: Optional[str]) -> None:
        """Blocking.  Set (or with None, clear) ``identity``'s email address."""
        value = validation.normalize_email(email) if email else None
        with self._storage.write() as conn:
            conn.execute(_users.update().where(_users.c.id == identity.user_id).values(email=value))
        self._emails.invalidate(identity.user_id)

    def forget(self, user_id: int) -> None:
        """Drop what is cached of account ``user_id`` (deleted, or a new account SQLite gave a
        deleted one's id).  Any thread."""
        self._emails.invalidate(user_id)

    # --- sites and users (blocking) -----------------------------------------------------------
    def list_sites(self) -> list[str]:
        """Blocking.  Every site's domain, sorted."""
        with self._storage.read() as conn:
            return list(conn.execute(sa.select(_sites.c.domain).order_by(_sites.c.domain)).scalars())

    def list_users(self, site_id: int) -> list[UserInfo]:
        """Blocking.  The accounts of a site, its administrator first."""
        with self._storage.read() as conn:
            rows = conn.execute(sa.select(_users.c.username, _users.c.role, _users.c.email)
                                .where(_users.c.site_id == site_id)
                                .order_by(_users.c.role != "site", _users.c.username)).all()
        return [UserInfo(username=r.username, role=r.role, email=r.email) for r in rows]
