"""The one privileged path: what apiserver's own built-in modules and plugins use beyond the plugin API.

Plugins see the server through :class:`apiserver.plugin_api.PluginApi` alone.  apiserver's own
modules (``apiserver/modules/``) and built-in plugins (the security trail, the dispatcher) need
more: the accounts service, the site homes, the scope registry.  They get it here, and only here:

* a built-in module subclasses :class:`apiserver.module.BuiltinModule` and receives the
  :class:`InternalApi` as ``self.core`` (the application refuses that base class for a module
  that is not apiserver's own);
* a built-in plugin's hook gets ``api`` like any plugin's and asks :func:`internal_api` for the
  :class:`InternalApi` behind it.

The :class:`InternalApi` reads the application's parts when asked, so it can be made first and
handed to the plugin API before the parts exist.  Nothing here is a promise to plugins: names
change with apiserver's internals, and a third-party plugin that reaches in is unsupported.
"""

from __future__ import annotations

from typing import Any, Callable


class InternalApi:
    """The application's parts by name, for apiserver's built-in modules and plugins (see above).

    One of the three classes that take the whole application (with
    :class:`apiserver.app.Application` and :class:`apiserver.service.ApiServer`).
    """

    def __init__(self, app):
        self._app = app

    # --- what everything shares ---------------------------------------------------------------
    @property
    def config(self):
        """The live, validated config."""
        return self._app.config

    @property
    def clock(self):
        return self._app.clock

    @property
    def storage(self):
        return self._app.storage

    def run_blocking(self, fn: Callable, *args, **kwargs):
        """:meth:`apiserver.pools.Pools.run_blocking`."""
        return self._app.pools.run_blocking(fn, *args, **kwargs)

    def run_blocking_for(self, account, fn: Callable, *args, **kwargs):
        """:meth:`apiserver.pools.Pools.run_blocking_for`."""
        return self._app.pools.run_blocking_for(account, fn, *args, **kwargs)

    def run_hashing(self, fn: Callable, *args, **kwargs):
        """:meth:`apiserver.pools.Pools.run_hashing`."""
        return self._app.pools.run_hashing(fn, *args, **kwargs)

    def fire(self, event: str, **kwargs: Any) -> list:
        """:meth:`apiserver.plugins.PluginHooks.fire` (no argument check: apiserver's own events)."""
        return self._app.hooks.fire(event, **kwargs)

    # --- the parts ------------------------------------------------------------------------------
    @property
    def accounts(self):
        """:class:`apiserver.accounts.Accounts`: authentication, passwords, keys, sessions."""
        return self._app.accounts

    @property
    def directory(self):
        """:class:`apiserver.accounts.directory.AccountDirectory`: look-ups, email."""
        return self._app.directory

    @property
    def sites(self):
        """:class:`apiserver.accounts.sites.Sites`: adding and deleting sites and users."""
        return self._app.sites

    @property
    def ip_restrictions(self):
        """:class:`apiserver.middleware.ip_restrictions.IPRestrictions`."""
        return self._app.ip_restrictions

    @property
    def registry(self):
        """:class:`apiserver.dispatch.Registry`: every module function."""
        return self._app.registry

    @property
    def scopes(self):
        """:class:`apiserver.scopes.ScopeRegistry`."""
        return self._app.scopes

    @property
    def config_file(self):
        """:class:`apiserver.config_file.ConfigFile`: editing config.ini of the running server."""
        return self._app.config_file

    @property
    def bootstrapper(self):
        """:class:`apiserver.scopes.bootstrapper.Bootstrapper`: the Bootstrapper variables."""
        return self._app.bootstrapper

    @property
    def notices(self):
        """:class:`apiserver.notices.Notices`: the outbox."""
        return self._app.notices

    @property
    def security_events(self):
        """:class:`apiserver.events.SecurityEvents`: the trail."""
        return self._app.security_events

    @property
    def site_homes(self):
        """:class:`apiserver.sites.SiteHomes`: every site's home on disk."""
        return self._app.site_homes

    @property
    def site_accounts(self):
        """:class:`apiserver.host.accounts.SiteAccounts`: every site's system accounts (uid, gid, home)."""
        return self._app.site_accounts

    @property
    def lifecycle(self):
        """:class:`apiserver.lifecycle.service.SiteLifecycle`: adding, editing, suspending, deleting sites."""
        return self._app.lifecycle

    @property
    def site_reports(self):
        """:class:`apiserver.lifecycle.reports.SiteReports`: collect, domains, usage."""
        return self._app.site_reports

    @property
    def suspensions(self):
        """:class:`apiserver.lifecycle.suspension.SuspendedSites`."""
        return self._app.suspensions

    @property
    def rampart(self):
        """:class:`apiserver.rampart.service.Rampart`: the ban API."""
        return self._app.rampart

    @property
    def site_files(self):
        """Runs blocking work on a site's files as the site's account (:class:`apiserver.sites.actas.SiteFiles`)."""
        return self._app.site_files

    @property
    def fortifier(self):
        """:class:`apiserver.sites.fortify.Fortifier`."""
        return self._app.fortifier

    @property
    def lockdown(self):
        """:class:`apiserver.sites.lockdown.Lockdown`: the lockdown of binaries."""
        return self._app.lockdown


def internal_api(api) -> InternalApi:
    """The :class:`InternalApi` of the application ``api`` serves: for apiserver's built-in
    plugins, whose hooks get ``api`` like every plugin's.  Not part of the plugin API."""
    return api._internal
