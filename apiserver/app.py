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

from apiserver.config import Config, load_config
from apiserver.context import AuthRequest, CallContext
from apiserver.dispatch import Registry, bind_arguments
from apiserver.plugins import make_plugin_manager

log = Logger(namespace="apiserver.app")

#: Nice value of the hashing pool's threads where SCHED_IDLE is not available.
HASH_NICE = 19

_thread_state = threading.local()


def lower_thread_priority() -> str:
    """Make the calling thread yield the CPU to every normal thread: Linux ``SCHED_IDLE`` (a
    waking normal thread preempts it at once), else nice :data:`HASH_NICE`.  Returns which."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, HASH_NICE)
        return "nice"
    except (AttributeError, OSError):  # no per-thread priorities here: hash at normal priority
        return "normal"


def _at_low_priority(fn: Callable, *args, **kwargs):
    """Blocking.  ``fn(*args, **kwargs)`` on a thread of lowered priority (lowered once per thread)."""
    if not getattr(_thread_state, "lowered", False):
        _thread_state.lowered = True
        lower_thread_priority()
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
        self._pools_started = False
        self.storage = None      # apiserver.storage.Storage
        self.accounts = None     # apiserver.accounts.Accounts
        self.gatekeeper = None   # apiserver.middleware.GateKeeper
        self.registry: Optional[Registry] = None
        self.scopes = None       # apiserver.scopes.ScopeRegistry
        self.geolocator = None   # apiserver.geolocation.Geolocator

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

        The pool's threads run at the lowest priority (:func:`lower_thread_priority`): hashing
        releases the GIL but needs a core, and at normal priority 8 logins hashing at once take
        most of it from the reactor thread (measured on one core: p99 of other calls 5x).  They
        run at full speed when the server has CPU to spare and yield to request handling when
        it has not (a saturated server then answers logins late, not the other calls).
        """
        return threads.deferToThreadPool(self.reactor, self.hash_pool, _at_low_priority, fn, *args, **kwargs)

    # --- events -----------------------------------------------------------------------------
    def fire(self, event: str, **kwargs: Any) -> None:
        """Call every plugin's implementation of the event hook ``event`` with ``app`` and ``kwargs``.

        Unlike a plain hook call, a plugin that raises is logged and the plugins after it still
        run; the action that caused the event stands.  Must be called on the reactor thread.
        """
        kwargs["app"] = self
        for impl in reversed(getattr(self.hook, event).get_hookimpls()):  # pluggy's own order
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception:
                log.failure("plugin {plugin} failed in {event}", plugin=impl.plugin_name, event=event)

    # --- the shared middle of every gate ----------------------------------------------------
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
    pm = plugin_manager or make_plugin_manager(load_entrypoints=load_entrypoints)
    if config is None:
        extra = [s for group in pm.hook.apiserver_config_sections() for s in group]
        config = load_config(config_file, extra)
    app = Application(config, reactor, pm, clock=clock)

    from apiserver.accounts import Accounts
    from apiserver.geolocation import Geolocator
    from apiserver.middleware import GateKeeper
    from apiserver.scopes import ScopeRegistry
    from apiserver.storage import Storage

    app.storage = Storage.from_config(config)
    app.accounts = Accounts(app)
    app.gatekeeper = GateKeeper(app)
    app.geolocator = Geolocator(app)
    module_classes = [cls for group in app.hook.apiserver_add_modules(app=app) for cls in group]
    app.registry = Registry(cls(app) for cls in module_classes)
    app.scopes = ScopeRegistry(app, [s for group in app.hook.apiserver_add_scopes(app=app) for s in group])
    return app


def freeze_heap() -> None:
    """Move everything allocated during start-up out of the collector's sight.

    Spyne and lxml leave long-lived reference cycles; without this, full collections under
    load pause the reactor for ~16 ms.
    """
    gc.collect()
    gc.freeze()
