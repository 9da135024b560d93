"""The application: every part of a running server, built once, leaves first.

:class:`Application` builds the parts in the order they depend on each other, each from the
named collaborators it uses (a clock, a store, the config, the component it calls), as
Synapse's ``Ratelimiter(store, clock, config)`` is built; no part receives the application.
It is one of three classes that take the whole application: the service tree that starts it
(:class:`apiserver.service.ApiServer`) and the one privileged path of apiserver's own modules
and plugins (:class:`apiserver.internal.InternalApi`).  :func:`create_application` is how the
CLI, the twistd plugin and the tests get one.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Optional

from twisted.internet import defer

from apiserver.accounts.ciphers import AccountCiphers
from apiserver.accounts.directory import AccountDirectory
from apiserver.accounts.keys import ApiKeys
from apiserver.accounts.service import Accounts
from apiserver.accounts.sessions import make_session_store
from apiserver.accounts.sites import Sites
from apiserver.accounts.ui_password import UIPasswords
from apiserver.config import Config, ConfigError
from apiserver.config_file import ConfigFile
from apiserver.context import AuthRequest, CallContext
from apiserver.dispatch import Registry
from apiserver.errors import ServerError
from apiserver.events import SecurityEvents
from apiserver.host.accounts import SiteAccounts
from apiserver.host.state import protect_state
from apiserver.lifecycle.system_accounts import SystemAccountsApplier
from apiserver.geolocation import Geolocator
from apiserver.internal import InternalApi
from apiserver.lifecycle import services, system_accounts
from apiserver.lifecycle.appliers import Appliers
from apiserver.lifecycle.dav_access import DavAccess, DavApplier
from apiserver.lifecycle.databases import database_appliers
from apiserver.lifecycle.plans import Plans
from apiserver.lifecycle.reports import SiteReports
from apiserver.lifecycle.service import SiteLifecycle
from apiserver.lifecycle.suspension import SuspendedSites
from apiserver.lifecycle.recount import StorageRecount, site_group_of
from apiserver.lifecycle.traffic import TrafficMeter
from apiserver.lifecycle.usage import MeasuredUsage
from apiserver.middleware import GateKeeper
from apiserver.middleware.anvil import Anvil, make_anvil_store
from apiserver.middleware.https_only import HttpsOnly
from apiserver.middleware.ip_restrictions import IPRestrictions, RestrictionRows
from apiserver.module import make_module
from apiserver.notices import Notices
from apiserver.plugin_api import PluginApi
from apiserver.plugins import PluginHooks, load_plugins_and_config, make_plugin_manager
from apiserver.pools import Pools
from apiserver.rampart.entries import Whitelist
from apiserver.rampart.fail2ban import Fail2ban
from apiserver.rampart.service import Rampart
from apiserver.scopes import ScopeRegistry
from apiserver.scopes.bootstrapper import Bootstrapper
from apiserver.sites import SiteHomes
from apiserver.sites.actas import SiteFiles, ThreadIdentity, account_identities
from apiserver.sites.fortify import Fortifier
from apiserver.sites.lockdown import Lockdown
from apiserver.sites.home import site_owner_name, web_server_user
from apiserver.storage import Storage
from apiserver.transport.metrics import Metrics


class Application:
    """Everything a running server shares, built from ``config`` on ``reactor`` with the plugins
    of ``plugin_manager``; ``clock`` (default: the reactor) is what every time-dependent part reads.

    Storage must exist already (``apiserver init``) before the first request; building needs
    none of it.  The parts are plain attributes for the service tree, the internal path and
    tests to read; they are set here and nowhere else.
    """

    def __init__(self, config: Config, reactor, plugin_manager, clock=None):
        self.config = config
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.plugin_manager = plugin_manager
        clock = self.clock
        #: apiserver's own modules and plugins reach the parts through this (read when asked)
        self.core = InternalApi(self)

        # Leaves: threads, storage, files on disk.
        self.pools = Pools(reactor, config)
        run_blocking = self.pools.run_blocking
        self.storage = Storage.from_config(config)
        self.config_file = ConfigFile(config)
        self.bootstrapper = Bootstrapper(config.state_dir)
        self.site_homes = SiteHomes(config.state_path(config.get("web", "sites_root")),
                                    site_owner_name(config.get("web", "site_owner")),
                                    web_user=_web_user(config), state_dir=config.state_dir)
        self.site_accounts = SiteAccounts(self.site_homes.sites_root, self.site_homes.web_user,
                                          config.get("web", "account_prefix"), _system_accounts(config),
                                          self.site_homes.owner_name)
        # Site files are read and written as the site's account (the kernel checks them as it).
        self.site_files = SiteFiles(ThreadIdentity(), self.site_homes, account_identities(self.site_accounts))
        self.fortifier = Fortifier(self.storage, clock, run_blocking, self.site_homes, self.site_homes.web_user, config)
        self.lockdown = Lockdown(clock, run_blocking, self.site_homes.web_user, config, config.state_dir)
        self.security_events = SecurityEvents(self.storage, clock, run_blocking, config)
        self.geolocator = Geolocator(config, run_blocking)

        # What the plugin API reads: accounts' look-ups, IP restrictions, sessions, scopes.
        self.ip_restrictions = IPRestrictions(RestrictionRows(self.storage), clock, run_blocking, config)
        self.directory = AccountDirectory(self.storage, clock, run_blocking, config,
                                          host_uids=self.site_accounts.identity_for_uid)
        self.ciphers = AccountCiphers(config)
        self.sessions = make_session_store(config, clock, self.storage)
        self.ui_passwords = UIPasswords(self.sessions, self.ciphers)
        self.scopes = ScopeRegistry(self.storage, clock, run_blocking)
        #: what plugins may use (hooks get it as ``api``, module functions as ``ctx.api``)
        self.api = PluginApi(plugin_manager, config, clock, run_blocking, directory=self.directory,
                             ip_restrictions=self.ip_restrictions, ui_passwords=self.ui_passwords,
                             scopes=self.scopes, storage=self.storage, internal=self.core)
        self.hooks = PluginHooks(plugin_manager, self.api)
        fire = self.hooks.fire

        # What calls the plugins: notices, accounts, the middleware.
        self.notices = Notices(self.storage, clock, run_blocking, config, self.geolocator, self.security_events.record)
        self.rampart_whitelist = Whitelist(self.storage, clock, run_blocking,
                                           lambda: config.get("rampart", "whitelist_ttl"))
        self.anvil = Anvil(clock, config, fire, make_anvil_store(config, clock, run_blocking),
                           whitelist=self.rampart_whitelist)
        keys = ApiKeys(self.storage, clock, run_blocking, config, self.ciphers.key_cipher, self.ip_restrictions, fire)
        self.accounts = Accounts(self.storage, clock, self.pools, config, self.hooks, directory=self.directory,
                                 keys=keys, sessions=self.sessions, ciphers=self.ciphers,
                                 ui_passwords=self.ui_passwords, ip_restrictions=self.ip_restrictions,
                                 notices=self.notices, system_accounts=self.site_accounts, throttle=self.anvil)
        self.sites = Sites(self.storage, clock, run_blocking, self.accounts, self.site_homes, fire,
                           site_accounts=self.site_accounts, new_user_shell=system_accounts.new_user_shell)
        self.suspensions = SuspendedSites(self.storage, clock, run_blocking, config)
        self.gatekeeper = GateKeeper(config, self.accounts, self.anvil, self.ip_restrictions, HttpsOnly(config),
                                     self.notices.devices, self.api, suspensions=self.suspensions)
        self.dav_access = DavAccess(self.storage, clock, run_blocking, config)
        self.storage_recount = StorageRecount(self.storage, clock, run_blocking, self.site_homes, config,
                                              group_of=site_group_of(self.site_accounts))
        self.lifecycle = SiteLifecycle(self.storage, clock, run_blocking, sites=self.sites, accounts=self.accounts,
                                       plans=Plans(config.plans_dir, config.get("plans", "default")),
                                       appliers=Appliers([SystemAccountsApplier(self.site_accounts),
                                                          *database_appliers(config, self.storage, self.site_accounts),
                                                          DavApplier(self.dav_access)]),
                                       suspensions=self.suspensions, fire=fire,
                                       measure=self.storage_recount.measure_and_store)
        self.traffic = TrafficMeter(self.storage, clock, run_blocking, config, fire)
        self.site_reports = SiteReports(self.storage, clock, MeasuredUsage(self.storage, self.traffic))
        self.rampart = Rampart(self.anvil, Fail2ban(config.get("rampart", "fail2ban_client"),
                                                    config.get("rampart", "fail2ban_socket")),
                               self.rampart_whitelist, run_blocking, self._rampart_of_site, config)
        self.metrics = Metrics(self.anvil, self.pools, self.security_events, self.notices.sender)

        # Last, what the plugins contribute: modules and scopes.
        self.registry = Registry((make_module(cls, self.api, self.core)
                                  for cls in self.hooks.collect("apiserver_add_modules")),
                                 call_hook=plugin_manager.hook.apiserver_call)
        self.scopes.add(self.hooks.collect("apiserver_add_scopes"))

    def _rampart_of_site(self, identity) -> tuple:
        """Blocking.  ``(rampart.enabled, rampart.max)`` of ``identity``'s site."""
        record = self.lifecycle.record_of(identity)
        return (record.value(services.param("rampart", "enabled")),
                record.value(services.param("rampart", "max")))

    # --- sites on disk ----------------------------------------------------------------------
    def prepare_sites(self) -> list:
        """Blocking (start-up, before anything listens, and ``apiserver migrate-sites``): every
        site to the ``site<N>/fst`` layout with its system accounts, and the server's own state
        private (:func:`apiserver.host.state.protect_state`); what changed, one line each."""
        changes = self.sites.upgrade_homes()
        changes += [f"made {path} private to the server (no group or other access)" for path in
                    protect_state(self.config.state_dir, self.site_homes.sites_root, self.site_accounts.enabled)]
        return changes

    # --- threads ----------------------------------------------------------------------------
    def start_pools(self) -> None:
        self.pools.start()

    def stop_pools(self) -> None:
        self.pools.stop()

    def run_blocking(self, fn, *args, **kwargs) -> defer.Deferred:
        """:meth:`apiserver.pools.Pools.run_blocking`."""
        return self.pools.run_blocking(fn, *args, **kwargs)

    def run_hashing(self, fn, *args, **kwargs) -> defer.Deferred:
        """:meth:`apiserver.pools.Pools.run_hashing`."""
        return self.pools.run_hashing(fn, *args, **kwargs)

    # --- events -----------------------------------------------------------------------------
    def fire(self, event: str, **kwargs: Any) -> list:
        """:meth:`apiserver.plugins.PluginHooks.fire`: every plugin's implementation of ``event``."""
        return self.hooks.fire(event, **kwargs)

    # --- the shared middle of every gate ----------------------------------------------------
    def background_services(self) -> list:
        """The Twisted services the server starts with its listeners and stops before the pools:
        the security trail's writer, the notice sender, Fortification's window timers, the
        lockdown's re-apply timer, the storage recount and the traffic meter (which stores what it
        holds when it stops).

        They stop in reverse order, so the trail stops last and writes what the others
        recorded while stopping (a notice that failed in the sender's last batch)."""
        return [self.security_events, self.notices.sender, self.fortifier, self.lockdown, self.storage_recount,
                self.traffic]

    def admit(self, request: AuthRequest) -> defer.Deferred:
        """Toggle, Anvil, authentication and IP restriction: a Deferred CallContext or an ApiError."""
        return self.gatekeeper.admit(request)

    def call(self, ctx: CallContext, name: str, positional=(), named: Optional[dict] = None) -> defer.Deferred:
        """Look up ``name``, bind the arguments and call it as ``ctx``; errors are ApiErrors."""
        return self.registry.call(ctx, name, positional, named)


def create_application(config: Optional[Config] = None, *, config_file: Optional[str] = None,
                       reactor=None, clock=None, plugin_manager=None,
                       load_entrypoints: bool = True) -> Application:
    """Build an application: plugins, config, then every part (:class:`Application`).

    Storage must exist already (``apiserver init``); the caller starts listening.
    """
    if reactor is None:
        from twisted.internet import reactor  # the real reactor, only when none is given
    if config is None:
        pm, config = load_plugins_and_config(config_file, plugin_manager=plugin_manager,
                                             load_entrypoints=load_entrypoints)
    elif plugin_manager is None:
        pm = make_plugin_manager(load_entrypoints=load_entrypoints, disabled=config.get("core", "disabled_plugins"))
    else:
        pm = plugin_manager
    return Application(config, reactor, pm, clock=clock)


def _web_user(config: Config) -> str:
    """``[web] user`` or the web server user found here; ConfigError naming the key when neither exists."""
    try:
        return web_server_user(config.get("web", "user"))
    except ServerError as exc:
        raise ConfigError("web", "user", str(exc)) from None


def _system_accounts(config: Config) -> bool:
    """Whether sites get system accounts: ``[web] system_accounts`` (auto: when running as root)."""
    wanted = config.get("web", "system_accounts")
    if wanted == "auto":
        return os.geteuid() == 0
    if wanted == "true" and os.geteuid() != 0:
        raise ConfigError("web", "system_accounts", "true needs the server to run as root (or set auto/false)")
    return wanted == "true"


def freeze_heap() -> None:
    """Move everything allocated during start-up out of the collector's sight.

    Spyne and lxml leave long-lived reference cycles; without this, full collections under
    load pause the reactor for ~16 ms.
    """
    gc.collect()
    gc.freeze()
