"""The ``security`` module: .htaccess policy, Fortification, audit, htpasswd, binaries lockdown, setuid scan.

Thin on purpose: declarations, roles and which site a call acts on.  The filesystem work is in
:mod:`apiserver.sites`; every function here that touches the disk runs on the blocking pool,
and password hashing on the hashing pool.  The .htaccess check, the audit and the password files
are read and written as the site's administrator (``core.site_files``: the kernel checks every
access as that account); Fortification's ACL changes run as the server.
Paths are as the site sees them (``/var/www/html/...``) and never leave the site's home.
"""

from __future__ import annotations

from typing import Optional

from apiserver.accounts import validation
from apiserver.errors import InvalidArgument, NotFound
from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export
from apiserver.sites import DOCUMENT_ROOT, audit, htaccess, htpasswd, setuid
from apiserver.sites.records import FortificationInfo, HtaccessFinding, LockdownEntry, SetuidFile


class SecurityModule(BuiltinModule):
    """Keep a site's files safe from its own web applications and from the web server."""

    name = "security"

    # --- .htaccess policy ---------------------------------------------------------------------
    @export(roles=Role.SITE)
    def check_htaccess(self, ctx, path: str = DOCUMENT_ROOT) -> list[HtaccessFinding]:
        """Every .htaccess directive at or under PATH that re-enables symlink following or SSI, or that Apache refuses."""  # noqa: E501 - the first line is the summary clients see
        home = self._home(ctx)
        return self.core.site_files.run(home, htaccess.check_tree, home, path)

    @export(roles=Role.ADMIN, blocking=False)
    def apache_policy(self, ctx) -> str:
        """The directives for the sites' document-root <Directory> block under which Apache refuses what check_htaccess reports."""  # noqa: E501 - the first line is the summary clients see
        return htaccess.apache_policy()

    # --- Fortification and audit --------------------------------------------------------------
    # Both run on the reactor: the Fortifier does its disk work on the blocking pool and keeps
    # its window timers on the reactor.
    @export(roles=Role.SITE)
    async def fortify(self, ctx, hostname: str, path: str = "", mode: str = "max") -> bool:
        """Set what the web server may write in HOSTNAME's document root (or its folder PATH): max, min, learn, write, release or reset."""  # noqa: E501 - the first line is the summary clients see
        home = await ctx.api.run_blocking(self._home, ctx, hostname)
        return await self.core.fortifier.fortify(home, path, mode)

    @export(roles=Role.SITE)
    async def fortification_info(self, ctx, hostname: str, path: str = "") -> FortificationInfo:
        """The application, mode, writable paths and window end of HOSTNAME's document root (or its folder PATH)."""
        home = await ctx.api.run_blocking(self._home, ctx, hostname)
        return await self.core.fortifier.info(home, path)

    @export(roles=Role.SITE)
    async def manifest_create(self, ctx, hostname: str, path: str = "") -> str:
        """Write a Web App Manifest (.webapp.yml) for HOSTNAME's document root (or its folder PATH) from its profile and what learning added; returns its path."""  # noqa: E501 - the first line is the summary clients see
        home = await ctx.api.run_blocking(self._home, ctx, hostname)
        return await self.core.fortifier.write_manifest(home, path)

    @export(roles=Role.SITE)
    def audit(self, ctx, path: str = DOCUMENT_ROOT, requirements: Optional[dict] = None,
              union: bool = True) -> list[str]:
        """Paths at or under PATH that the web server user owns or may write; REQUIREMENTS as file:audit ('[user:www-data,perm:o+w]'), UNION false needs all."""  # noqa: E501 - the first line is the summary clients see
        home = self._home(ctx)
        return self.core.site_files.run(home, audit.audit, home, path, self.core.site_homes.web_user,
                                        requirements, union)

    # --- htpasswd -------------------------------------------------------------------------------
    # The two that hash run on the reactor: the file work goes to the blocking pool, the hashing
    # to the hashing pool (low priority, one per CPU), so that a slow hash - the site owner picks
    # the cost of a stored bcrypt entry - never holds a database thread.
    @export(roles=Role.SITE)
    async def htpasswd_add(self, ctx, file: str, user: str, password: str) -> bool:
        """Add USER to the Apache password file FILE (or change its password); bcrypt cost 5."""
        home, host_path = await ctx.api.run_blocking(self._password_file_for, ctx, file, user)
        hashed = await self.core.run_hashing(htpasswd.hash_password, password)
        return await ctx.api.run_blocking(self.core.site_files.run, home, htpasswd.write_entry, host_path, user,
                                          hashed, home, self.core.site_homes.web_user)

    @export(roles=Role.SITE)
    async def htpasswd_verify(self, ctx, file: str, user: str, password: str) -> bool:
        """Whether PASSWORD is USER's in the Apache password file FILE (bcrypt, $apr1$, {SHA} or crypt)."""
        stored = await ctx.api.run_blocking(self._stored_hash, ctx, file, user)
        if stored is None:  # no line for USER: nothing to hash
            return htpasswd.matches(password, None)
        return await self.core.run_hashing(htpasswd.matches, password, stored)

    @export(roles=Role.SITE)
    def htpasswd_delete(self, ctx, file: str, user: str) -> bool:
        """Remove USER from the Apache password file FILE; other lines stay as they are."""
        home = self._home(ctx)
        with self.core.site_files.acting(home):
            return htpasswd.delete(home.resolve(file, must_exist=True), user, home, self.core.site_homes.web_user)

    @export(roles=Role.SITE)
    def htpasswd_users(self, ctx, file: str) -> list[str]:
        """The user names in the Apache password file FILE, in file order."""
        home = self._home(ctx)
        with self.core.site_files.acting(home):
            return htpasswd.users(home.resolve(file, must_exist=True), home)

    # --- lockdown of binaries ------------------------------------------------------------------
    @export(roles=Role.ADMIN)
    async def lockdown(self, ctx, paths: Optional[list[str]] = None) -> bool:
        """Deny the web server user running (and reading) PATHS, default [security] lockdown_binaries and lockdown_trees; re-applied every lockdown_interval."""  # noqa: E501 - the first line is the summary clients see
        entries = await self.core.lockdown.lock(paths)
        return all(e.denied for e in entries)

    @export(roles=Role.ADMIN)
    async def lockdown_status(self, ctx) -> list[LockdownEntry]:
        """Each binary and tree of the last lockdown (or of [security] lockdown_binaries) and whether the web server user is denied it."""  # noqa: E501 - the first line is the summary clients see
        return await self.core.lockdown.status()

    # --- setuid ---------------------------------------------------------------------------------
    @export(roles=Role.ADMIN)
    def scan_setuid(self, ctx, root: Optional[str] = None) -> list[SetuidFile]:
        """Every setuid or setgid file under ROOT (default [security] template_root) and whether its package vouches for it."""  # noqa: E501 - the first line is the summary clients see
        return setuid.scan(root or ctx.api.config("security", "template_root"))

    # --- which site a call acts on ----------------------------------------------------------------
    def _home(self, ctx, hostname: Optional[str] = None):
        """Blocking.  The caller's site home; HOSTNAME, when given, must name the caller's site."""
        site = ctx.identity.site
        if hostname is not None:
            try:
                named = validation.normalize_domain(hostname)
            except InvalidArgument:
                raise InvalidArgument(f"invalid hostname {hostname!r}") from None
            if named != site:
                raise NotFound(f"unknown hostname {hostname!r}: this account's site is {site}")
        return self.core.site_homes.get(site)

    def _password_file_for(self, ctx, file: str, user: str):
        """Blocking.  (site home, host path) of the caller's password file FILE, USER checked, for an add."""
        home = self._home(ctx)
        with self.core.site_files.acting(home):
            host_path = home.resolve(file)
        htpasswd.check_user(user)
        return home, host_path

    def _stored_hash(self, ctx, file: str, user: str) -> Optional[str]:
        """Blocking.  USER's stored hash in the caller's password file FILE; None when it has no line."""
        home = self._home(ctx)
        with self.core.site_files.acting(home):
            return htpasswd.stored_hash(home.resolve(file, must_exist=True), user, home)


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``security`` module."""
    return [SecurityModule]
