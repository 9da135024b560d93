"""The application: config, clock, thread pools, storage, plugins, modules and the gates' shared middle.

Built once by :func:`create_application` (the CLI, twistd plugin and tests all use it); every
component receives the application or what it needs from it, nothing reads a module global.
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Any, Callable, Optional

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from apiserver.config import Config
from apiserver.context import AuthRequest, CallContext
from apiserver.dispatch import Registry, bind_arguments
from apiserver.plugin_api import PluginApi
from apiserver.plugins import load_plugins_and_config, make_plugin_manager

log = Logger(namespace="apiserver.app")

#: Nice value of the hashing pool's threads (with SCHED_BATCH, or alone where that is unavailable).
HASH_NICE = 19

_thread_state = threading.local()


def lower_thread_priority(priority: str = "idle") -> str:
    """Lower the calling thread's CPU priority as ``[auth] hash_priority`` says; returns what it got.

    ``idle``: SCHED_IDLE: it runs on CPU that request handling leaves (a waking request thread
    preempts it at once).  ``batch``: SCHED_BATCH at nice 19: it never preempts request
    handling on wake-up but keeps a small share of a saturated core.  ``normal``: unchanged.
    Where a policy is unavailable, nice 19 alone.
    """
    tid = threading.get_native_id()
    if priority == "normal":
        return "normal"
    try:
        if priority == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # no such policy here: nice alone
    try:
        os.setpriority(os.PRIO_PROCESS, tid, HASH_NICE)
        return priority if priority == "batch" else "nice"
    except (AttributeError, OSError):  # no per-thread priorities here: hash at normal priority
        return "normal"


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask, as ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _at_low_priority(priority: str, slots: threading.Semaphore, fn: Callable, *args, **kwargs):
    """Blocking.  ``fn(*args, **kwargs)`` on a thread of lowered priority (lowered once per thread),
    holding one of ``slots`` unless the priority is normal.

    At most one lowered thread hashes per usable CPU: each needs the GIL for a moment when its
    hash ends, and while several share a core at low priority the one holding the GIL gets a
    fraction of it, so the reactor thread waits for its GIL (measured with 8 hashing at once
    on one core: p99 of other calls 1.6x; one at a time: 1.02x, logins completing as fast).
    """
    if not getattr(_thread_state, "lowered", False):
        _thread_state.lowered = True
        lower_thread_priority(priority)
    if priority == "normal":
        return fn(*args, **kwargs)
    with slots:
        return fn(*args, **kwargs)


class Application:
    """Everything a running server shares.  ``clock`` is what all time-dependent parts read."""

    def __init__(self, config: Config, reactor, plugin_manager, clock=None):
        self.config = config
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.plugin_manager = plugin_manager
        self.hook = plugin_manager.hook
        self.blocking_pool = ThreadPool(minthreads=1, maxthreads=config.get("core", "db_threads"), name="apiserver-blocking")
        self.hash_pool = ThreadPool(minthreads=1, maxthreads=config.get("auth", "hash_threads"), name="apiserver-hashing")
        # Hashes computing at once at a lowered priority: one per usable CPU (see _at_low_priority).
        self._hash_slots = threading.Semaphore(usable_cpus())
        self._pools_started = False
        self.storage = None      # apiserver.storage.Storage
        self.accounts = None     # apiserver.accounts.Accounts
        self.gatekeeper = None   # apiserver.middleware.GateKeeper
        self.registry: Optional[Registry] = None
        self.scopes = None       # apiserver.scopes.ScopeRegistry
        self.geolocator = None   # apiserver.geolocation.Geolocator
        self.site_homes = None   # apiserver.sites.SiteHomes
        self.fortifier = None    # apiserver.sites.fortify.Fortifier
        #: what plugins may use (hooks get it as ``api``, module functions as ``ctx.api``)
        self.api = PluginApi(self)
        self.notices = None      # apiserver.notices.Notices (the outbox)
        self.security_events = None  # apiserver.events.SecurityEvents (the trail)

    # --- threads ----------------------------------------------------------------------------
    def start_pools(self) -> None:
        if not self._pools_started:
            self.blocking_pool.start()
            self.hash_pool.start()
            self._pools_started = True
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop_pools)

    def stop_pools(self) -> None:
        if self._pools_started:
            self._pools_started = False
            self.blocking_pool.stop()
            self.hash_pool.stop()

    def run_blocking(self, fn: Callable, *args, **kwargs) -> defer.Deferred:
        """Run database work or a blocking module function on the blocking pool."""
        return threads.deferToThreadPool(self.reactor, self.blocking_pool, fn, *args, **kwargs)

    def run_hashing(self, fn: Callable, *args, **kwargs) -> defer.Deferred:
        """Run password hashing on its own pool, so logins cannot starve database calls.

        The pool's threads run at a lowered priority (``[auth] hash_priority``, see
        :func:`lower_thread_priority`): hashing releases the GIL but needs a core, and at normal
        priority 8 logins hashing at once take most of it from the reactor thread (measured on
        one core: p99 of other calls 5x).  Read when a pool thread first hashes.  At a lowered
        priority at most one hash per usable CPU computes at a time; the other logins queue.
        """
        return threads.deferToThreadPool(self.reactor, self.hash_pool, _at_low_priority,
                                         self.config.get("auth", "hash_priority"), self._hash_slots,
                                         fn, *args, **kwargs)

    # --- events -----------------------------------------------------------------------------
    def fire(self, event: str, **kwargs: Any) -> list:
        """Call every plugin's implementation of the event hook ``event`` with ``api``, ``app`` and ``kwargs``.

        Unlike a plain hook call, a plugin that raises is logged and the plugins after it still
        run; the action that caused the event stands.  Must be called on the reactor thread.
        Wrapper implementations are refused at registration (``apiserver.plugins``), so every
        implementation of an event is a plain function called here.  Returns what the
        implementations that did not raise returned (``apiserver_shutdown``: Deferreds).
        """
        kwargs["app"] = self
        kwargs["api"] = self.api
        results = []
        for impl in reversed(getattr(self.hook, event).get_hookimpls()):  # pluggy's own order
            if impl.wrapper or impl.hookwrapper:  # only a manager that bypassed apiserver.plugins lets one in
                log.error("plugin {plugin}: {event} cannot be implemented as a wrapper; not called",
                          plugin=impl.plugin_name, event=event)
                continue
            try:
                result = impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception:
                log.failure("plugin {plugin} failed in {event}", plugin=impl.plugin_name, event=event)
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(lambda failure, plugin=impl.plugin_name: log.failure(
                    "plugin {plugin} failed in {event}", failure, plugin=plugin, event=event))
            results.append(result)
        return results

    # --- the shared middle of every gate ----------------------------------------------------
    def background_services(self) -> list:
        """The Twisted services the server starts with its listeners and stops before the pools:
        the security trail's writer, the notice sender and Fortification's window timers.

        They stop in reverse order, so the trail stops last and writes what the others
        recorded while stopping (a notice that failed in the sender's last batch)."""
        return [s for s in (self.security_events, getattr(self.notices, "sender", None), self.fortifier)
                if s is not None]

    def admit(self, request: AuthRequest) -> defer.Deferred:
        """Toggle, Anvil, authentication and IP restriction: a Deferred CallContext or an ApiError."""
        return self.gatekeeper.admit(request)

    def call(self, ctx: CallContext, name: str, positional=(), named: Optional[dict] = None) -> defer.Deferred:
        """Look up ``name``, bind the arguments and call it as ``ctx``; errors are ApiErrors."""
        try:
            entry = self.registry.lookup(name)
            kwargs = bind_arguments(entry.spec, positional, named)
        except Exception:
            return defer.fail()
        return self.registry.call(self, ctx, entry, kwargs)


def create_application(config: Optional[Config] = None, *, config_file: Optional[str] = None,
                       reactor=None, clock=None, plugin_manager=None,
                       load_entrypoints: bool = True) -> Application:
    """Build an application: plugins, config, storage, accounts, middleware, modules, scopes.

    Storage must exist already (``apiserver init``); the caller starts listening.
    """
    if reactor is None:
        from twisted.internet import reactor  # noqa: the real reactor, only when none is given
    if config is None:
        pm, config = load_plugins_and_config(config_file, plugin_manager=plugin_manager,
                                             load_entrypoints=load_entrypoints)
    elif plugin_manager is None:
        pm = make_plugin_manager(load_entrypoints=load_entrypoints, disabled=config.get("core", "disabled_plugins"))
    else:
        pm = plugin_manager
    app = Application(config, reactor, pm, clock=clock)

    from apiserver.accounts import Accounts
    from apiserver.events import SecurityEvents
    from apiserver.geolocation import Geolocator
    from apiserver.middleware import GateKeeper
    from apiserver.notices import Notices
    from apiserver.scopes import ScopeRegistry
    from apiserver.sites import SiteHomes
    from apiserver.sites.fortify import Fortifier
    from apiserver.sites.home import site_owner_name
    from apiserver.storage import Storage

    app.storage = Storage.from_config(config)
    app.site_homes = SiteHomes(config.state_path(config.get("web", "sites_root")),
                               site_owner_name(config.get("web", "site_owner")),
                               web_user=_web_user(config),
                               state_dir=config.state_dir)
    app.fortifier = Fortifier(app.storage, app.clock, app.run_blocking, app.site_homes,
                              app.site_homes.web_user, config)
    app.notices = Notices(app)  # before the gatekeeper, which reports admitted devices to it
    app.security_events = SecurityEvents(app.storage, app.clock, app.run_blocking, config)
    app.accounts = Accounts(app)
    app.gatekeeper = GateKeeper(app)
    app.geolocator = Geolocator(app)
    module_classes = [cls for group in app.hook.apiserver_add_modules(app=app, api=app.api) for cls in group]
    app.registry = Registry(cls(app) for cls in module_classes)
    app.scopes = ScopeRegistry(app, [s for group in app.hook.apiserver_add_scopes(app=app, api=app.api) for s in group])
    return app


def _web_user(config: Config) -> str:
    """``[web] user`` or the web server user found here; ConfigError naming the key when neither exists."""
    from apiserver.config import ConfigError
    from apiserver.errors import ServerError
    from apiserver.sites.home import web_server_user

    try:
        return web_server_user(config.get("web", "user"))
    except ServerError as exc:
        raise ConfigError("web", "user", str(exc)) from None


def freeze_heap() -> None:
    """Move everything allocated during start-up out of the collector's sight.

    Spyne and lxml leave long-lived reference cycles; without this, full collections under
    load pause the reactor for ~16 ms.
    """
    gc.collect()
    gc.freeze()
