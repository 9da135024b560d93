"""Sites and their users: created and deleted with their accounts, homes and everything cached.

:class:`Sites` is what the ``admin`` and ``user`` modules call to add and delete sites and the
users of a site.  A site's rows and its home on disk are made (and removed) together: a failure
part-way leaves neither.  Deleting ends everything of the accounts this node holds (keys,
sessions, remembered passwords, cached restrictions, known devices).
"""

from __future__ import annotations

import os
import pwd
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.logger import Logger

from apiserver.accounts import passwords, validation
from apiserver.accounts.records import NewSite
from apiserver.context import Identity
from apiserver.errors import Denied, Exists, NotFound
from apiserver.host.upgrade import SiteToUpgrade, upgrade_site
from apiserver.module import Role
from apiserver.storage import schema, utcnow
from apiserver.storage.counters import next_number

log = Logger(namespace="apiserver.accounts.sites")

_users, _sites, _host = schema.users, schema.sites, schema.host_accounts


class Sites:
    """Adding and deleting sites and users.

    ``storage``: the rows; ``clock``: their dates; ``run_blocking``: database and disk work off
    the reactor; ``accounts``: hashes new passwords (with the plugins' veto) and forgets what a
    deleted account leaves; ``site_homes``: the sites' homes on disk (homes from before the
    ``site<N>`` layout); ``site_accounts``: :class:`apiserver.host.accounts.SiteAccounts`, every
    site's system accounts and folders; ``fire(event, **kwargs)``: ``apiserver_site_added`` and
    ``apiserver_site_deleted``; ``new_user_shell(conn, site_id)``: blocking, the login shell a new
    user of the site gets (:func:`apiserver.lifecycle.system_accounts.new_user_shell`: it knows
    ``ssh.enabled``'s plan and built-in defaults).
    """

    def __init__(self, storage, clock, run_blocking: Callable, accounts, site_homes, fire: Callable,
                 site_accounts, new_user_shell: Callable):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._accounts = accounts
        self._site_homes = site_homes
        self._fire = fire
        self._site_accounts = site_accounts
        self._new_user_shell = new_user_shell

    async def add_site(self, domain: str, admin_user: str, email: Optional[str], password: Optional[str],
                       actor: Identity, *, password_hash: Optional[str] = None,
                       also: Optional[Callable] = None) -> NewSite:
        """Create a site and its administrator; a password is generated when none is given.

        ``password_hash``: a hash to store as it is instead of hashing ``password``; ``also(conn,
        site_id)``: more rows to write in the same transaction (the site's services).  Fires
        ``apiserver_site_added``.  Exists if the domain is taken.
        """
        domain = validation.normalize_domain(domain)
        admin_user = validation.normalize_username(admin_user)
        email = validation.normalize_email(email) if email else None
        generated = password is None and password_hash is None
        if generated:
            password = passwords.generate_password()
        if password_hash is None:
            target = Identity(Role.SITE, user_id=0, username=admin_user, site=domain)
            password_hash = await self._accounts.hash_new_password(target, password)
        site_id = await self._run_blocking(self._insert_site, domain, admin_user, email, password_hash, also, password)
        self._fire("apiserver_site_added", site=domain, actor=actor)
        return NewSite(domain=domain, admin_user=admin_user, password=password if generated else None,
                       site_id=site_id)

    def _insert_site(self, domain: str, admin_user: str, email: Optional[str], password_hash: str,
                     also: Optional[Callable] = None, password: Optional[str] = None) -> int:
        now = utcnow(self._clock)
        made = None
        try:
            with self._storage.write() as conn:  # the site, its administrator and its accounts and home, or none
                try:
                    site_id = conn.execute(_sites.insert().values(
                        id=next_number(conn, "sites"), domain=domain, created_at=now)).inserted_primary_key[0]
                except sa.exc.IntegrityError:  # only the domain is unique: any other failure is no "exists"
                    raise Exists(f"site {domain!r} exists already") from None
                user_id = conn.execute(_users.insert().values(
                    site_id=site_id, username=admin_user, role="site", password_hash=password_hash, email=email,
                    created_at=now)).inserted_primary_key[0]
                if also is not None:
                    also(conn, site_id)
                # before the commit: a failure rolls the rows back
                self._site_homes.ensure_reachable()
                identity = self._site_accounts.create_site(site_id, domain, admin_user, password=password,
                                                           password_hash=None if password else password_hash)
                made = site_id
                self._record_host_account(conn, user_id, identity)
        except BaseException:
            if made is not None:  # the commit failed after the accounts and home were made
                self._site_accounts.remove_site(made, domain)
            raise
        self._accounts.directory.forget(user_id)  # SQLite may reuse the id of an account deleted on another node
        return site_id

    def _record_host_account(self, conn, user_id: int, identity) -> None:
        if self._site_accounts.enabled:
            conn.execute(_host.insert().values(user_id=user_id, site_id=identity.site_id, host_name=identity.host_name,
                                               uid=identity.uid, gid=identity.gid))

    async def delete_site(self, domain: str, actor: Identity) -> None:
        """Delete a site with all its accounts, keys, restrictions and sessions; NotFound if absent.

        Fires ``apiserver_site_deleted``.
        """
        domain = validation.normalize_domain(domain)
        user_ids = await self._run_blocking(self._delete_site_rows, domain)
        await self._accounts.forget_users(user_ids)
        self._fire("apiserver_site_deleted", site=domain, actor=actor)

    def _delete_site_rows(self, domain: str) -> list:
        homes = self._site_homes
        detached = None
        legacy = os.path.isdir(os.path.join(homes.sites_root, domain)) and not os.path.islink(
            os.path.join(homes.sites_root, domain))
        try:
            with self._storage.write() as conn:
                site_id = conn.execute(sa.select(_sites.c.id).where(_sites.c.domain == domain)).scalar()
                if site_id is None:
                    raise NotFound(f"no site {domain!r}")
                user_ids = list(conn.execute(sa.select(_users.c.id).where(_users.c.site_id == site_id)).scalars())
                conn.execute(_sites.delete().where(_sites.c.id == site_id))
                if legacy:  # a home from before site<N>: one rename, it leaves its place with the rows
                    detached = homes.detach(domain)
        except BaseException:
            if detached is not None:  # the commit failed: put the home back
                os.rename(detached, os.path.join(homes.sites_root, domain))
            raise
        try:
            if detached is not None:
                homes.purge(detached)
            self._site_accounts.remove_site(site_id, domain)  # accounts, group, folders and links
        except Exception as exc:  # the site is gone; what is left on the host is named, not fatal
            log.error("could not remove all of the deleted site {domain} (site{site_id}) from the host: {error}",
                      domain=domain, site_id=site_id, error=exc)
        return user_ids

    async def add_user(self, site_admin: Identity, username: str, password: str, email: Optional[str]) -> None:
        """Add a user to ``site_admin``'s site; Exists if the name is taken there."""
        username = validation.normalize_username(username)
        email = validation.normalize_email(email) if email else None
        target = Identity(Role.USER, user_id=0, username=username, site_id=site_admin.site_id, site=site_admin.site)
        password_hash = await self._accounts.hash_new_password(target, password)
        await self._run_blocking(self._insert_user, site_admin.site_id, username, password_hash, email, password)

    def _insert_user(self, site_id: int, username: str, password_hash: str, email: Optional[str],
                     password: Optional[str] = None) -> None:
        made = False
        try:
            with self._storage.write() as conn:  # the row and the system account, or neither
                try:
                    user_id = conn.execute(_users.insert().values(
                        site_id=site_id, username=username, role="user", password_hash=password_hash, email=email,
                        created_at=utcnow(self._clock))).inserted_primary_key[0]
                except sa.exc.IntegrityError:
                    raise Exists(f"user {username!r} exists already") from None
                identity = self._site_accounts.add_user(site_id, username, password=password,
                                                        shell=self._new_user_shell(conn, site_id))
                made = True
                self._record_host_account(conn, user_id, identity)
        except BaseException:
            if made:
                self._site_accounts.remove_user(site_id, username)
            raise
        self._accounts.directory.forget(user_id)  # SQLite may reuse the id of an account deleted on another node

    async def delete_user(self, site_admin: Identity, username: str) -> None:
        """Delete a user of ``site_admin``'s site (not the administrator); NotFound if absent."""
        user_id = await self._run_blocking(self._delete_user_row, site_admin, username)
        await self._accounts.forget_users([user_id])

    def _delete_user_row(self, site_admin: Identity, username: str) -> int:
        with self._storage.write() as conn:
            row = conn.execute(sa.select(_users.c.id, _users.c.role)
                               .where(_users.c.site_id == site_admin.site_id, _users.c.username == username)).first()
            if row is None:
                raise NotFound(f"no user {username!r} in site {site_admin.site!r}")
            if row.role != "user":
                raise Denied("the site administrator cannot be deleted; delete the site instead")
            conn.execute(_users.delete().where(_users.c.id == row.id))
        self._site_accounts.remove_user(site_admin.site_id, username)
        return row.id

    def upgrade_homes(self) -> list:
        """Blocking.  Bring every site on disk to the ``site<N>/fst`` layout and, when the server
        has system accounts, give it its group and users (``apiserver migrate-sites``, and at
        start-up); what changed, one line each (nothing on a second run)."""
        with self._storage.read() as conn:
            sites = conn.execute(sa.select(_sites.c.id, _sites.c.domain).order_by(_sites.c.id)).all()
            rows = conn.execute(sa.select(_users.c.site_id, _users.c.id, _users.c.username, _users.c.role,
                                          _users.c.password_hash).where(_users.c.site_id.isnot(None))
                                .order_by(_users.c.id)).all()
            recorded = set(conn.execute(sa.select(_host.c.user_id)).scalars())
        accounts = self._site_accounts
        try:
            shared_uid = pwd.getpwnam(accounts.shared_owner).pw_uid
        except KeyError:
            shared_uid = None
        changes = []
        if sites:
            self._site_homes.ensure_reachable()
        for site_id, domain in sites:
            mine = [r for r in rows if r.site_id == site_id]
            admin = next((r.username for r in mine if r.role == "site"), None)
            if admin is None:
                changes.append(f"{domain} (site{site_id}): has no administrator; left as it is")
                continue
            changes += upgrade_site(accounts, SiteToUpgrade(
                site_id, domain, admin, tuple(r.username for r in mine if r.role == "user"),
                {r.username: r.password_hash for r in mine if r.password_hash}), shared_uid)
            missing = [r for r in mine if r.id not in recorded] if accounts.enabled else []
            if missing:
                with self._storage.write() as conn:
                    for row in missing:
                        self._record_host_account(conn, row.id, accounts.identity(site_id, row.username))
                changes.append(f"{domain} (site{site_id}): recorded {len(missing)} system accounts")
        return changes

