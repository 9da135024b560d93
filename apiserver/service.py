"""The whole server as one Twisted service tree: the only start path.

:func:`make_service` does what ``twisted/web/tap.py``'s ``makeService`` does for twistd's web
server: from a config file it builds a :class:`ApiServer` (a ``MultiService``) whose children
are the background services (thread pools first, then what :meth:`Application.background_services`
lists) and the listeners (HTTP, HTTPS, the cpcmd socket).  ``apiserver serve`` and
``twistd -n apiserver`` both call it, so they share every check, the logging and the shutdown:

* the config is read and validated, cross-key checks included (:func:`apiserver.config.cross_check`,
  the same code ``cp.config`` uses): a bad value is :class:`~apiserver.config.ConfigError`;
* the state must exist (``apiserver init``), else :class:`StartError` with one line;
* binding a listener that fails is :class:`ListenFailed`, one line naming the address;
* SIGTERM/SIGINT stop the listeners, wait up to ``[core] shutdown_timeout`` for requests and
  cpcmd calls in flight, close the connections, run the ``apiserver_shutdown`` hooks, stop the background
  services; SIGHUP re-reads the config (run-time keys applied, others logged as needing a
  restart) and reopens the log file.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger, globalLogBeginner
from twisted.python.components import Componentized

from apiserver.errors import ApiError
from apiserver.plugins import load_plugins_and_config, log_loaded_plugins
from apiserver.config import (
    ConfigError, changed_keys, config_path as find_config_path, cross_check, reread_config, secret_values,
)

log = Logger(namespace="apiserver.server")


class StartError(Exception):
    """The server cannot start for a reason one line says (no traceback)."""


class ListenFailed(StartError):
    """A listener could not bind its address."""


# --- building ---------------------------------------------------------------------------------

def make_service(config_file: Optional[str] = None, *, reactor=None, plugin_manager=None,
                 log_stream=None) -> "ApiServer":
    """Validate the config, check the state, set up logging and build the service tree.

    Raises ConfigError (naming section and key), PluginError (one line naming the plugin),
    StartError (no state: "run apiserver init first"; an unreadable database) before anything
    listens.  ``[core] disabled_plugins`` is honoured.  Nothing is bound until
    ``privilegedStartService``.
    """
    from apiserver.app import create_application
    from apiserver.logs import log_stream_for, make_observer

    if reactor is None:
        from twisted.internet import reactor  # the real one, only when none is given
    pm, config = load_plugins_and_config(find_config_path(config_file), plugin_manager=plugin_manager)
    cross_check(config)
    _check_state_dir(config)
    stream = log_stream if log_stream is not None else log_stream_for(config)
    observer = make_observer(config, stream)
    app = create_application(config, reactor=reactor, plugin_manager=pm)
    _check_database(app.storage, config)
    _prepare_sites(app)
    return ApiServer(app, observer, stream)


def restore_sigint() -> None:
    """Let SIGINT stop the server even when it was started ignoring it (``nohup apiserver serve &``
    from a script inherits SIG_IGN): Twisted installs its SIGINT handler only over Python's default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def migrate_sites(config_file: Optional[str] = None) -> list:
    """``apiserver migrate-sites``: the start-up's upgrade of the sites on disk, run alone (the
    same checks as :func:`make_service`, nothing listens); what changed, one line each."""
    from twisted.internet import reactor

    from apiserver.app import create_application

    pm, config = load_plugins_and_config(find_config_path(config_file))
    cross_check(config)
    _check_state_dir(config)
    app = create_application(config, reactor=reactor, plugin_manager=pm)
    try:
        _check_database(app.storage, config)
        try:
            return app.prepare_sites()
        except (ApiError, OSError) as exc:
            raise StartError(f"cannot upgrade the sites on disk: {exc}") from None
    finally:
        app.storage.dispose()


def start_application(app, reactor) -> "ApiServer":
    """Bind and start the service tree of an application built already (benchmarks swap parts
    of it first; tests drive a memory reactor): no config or state checks, logging as it is."""
    server = ApiServer(app, observer=None, log_stream=None)
    server.privilegedStartService()
    reactor.callWhenRunning(server.startService)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    return server


def _init_hint(config) -> str:
    return f"run 'apiserver --config {config.path} init' first"


def _check_state_dir(config) -> None:
    if not os.path.isdir(config.state_dir):
        raise StartError(f"no state in {config.state_dir}: {_init_hint(config)}")


def _prepare_sites(app) -> None:
    """Sites on disk upgraded and the state made private before anything listens; what changed
    is logged.  A site that cannot be upgraded stops the start (StartError naming it)."""
    try:
        changes = app.prepare_sites()
    except (ApiError, OSError) as exc:
        raise StartError(f"cannot upgrade the sites on disk: {exc}; see 'apiserver migrate-sites'") from None
    log = Logger(namespace="apiserver.sites")
    for change in changes:
        log.info("upgrade: {change}", change=change)


def _check_database(storage, config) -> None:
    """The schema exists (else "run init first") and is migrated to this version."""
    from sqlalchemy.exc import SQLAlchemyError

    from apiserver.storage import SchemaError

    try:
        if storage.version() == 0:
            raise StartError(f"no database in {config.state_dir}: {_init_hint(config)}")
        storage.migrate()  # an older schema is upgraded before anything listens
    except SchemaError as exc:
        raise StartError(str(exc)) from None
    except SQLAlchemyError as exc:  # unreachable or refusing: no traceback, no password
        orig = getattr(exc, "orig", None) or exc
        raise StartError(f"database error: {type(exc).__name__}: {str(orig).splitlines()[0][:300]}") from None


class ThreadPoolsService(service.Service):
    """The application's thread pools (:class:`apiserver.pools.Pools`): started first, stopped last."""

    name = "thread-pools"

    def __init__(self, pools):
        self.pools = pools

    def startService(self):
        super().startService()
        self.pools.start()

    def stopService(self):
        super().stopService()
        self.pools.stop()


class _Listener:
    """A listening service that names its address and turns a bind failure into ListenFailed."""

    where = "?"
    what = "listener"
    setting = ""  # "; change [frontend] http_port in FILE": where the address comes from


    def privilegedStartService(self):
        try:
            self.prepare()
            super().privilegedStartService()
        except CannotListenError as exc:
            reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
            raise ListenFailed(f"cannot listen on {self.where} ({self.what}): {reason}{self.setting}") from None
        except OSError as exc:
            reason = exc.strerror or exc
            raise ListenFailed(f"cannot listen on {self.where} ({self.what}): {reason}{self.setting}") from None

    def prepare(self) -> None:
        """What must happen before binding."""

    def bound_port(self) -> Optional[int]:
        port = getattr(self, "_port", None)
        return port.getHost().port if port is not None and hasattr(port.getHost(), "port") else None


class TCPListener(_Listener, internet.TCPServer):
    what = "HTTP"


class SSLListener(_Listener, internet.SSLServer):
    what = "HTTPS"


class UNIXListener(_Listener, internet.UNIXServer):
    what = "cpcmd socket"

    def prepare(self) -> None:
        from apiserver.transport.cli_socket import remove_stale_socket

        path = self.args[0]
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        remove_stale_socket(path)


def listener_services(config, site, cli_factory) -> list:
    """The HTTP and HTTPS listeners (``[frontend]`` of ``config``) on ``site`` and the cpcmd socket
    served by ``cli_factory``."""
    bind = config.get("frontend", "bind")
    host = f"[{bind}]" if ":" in bind else bind
    listeners = []

    def setting(key: str) -> str:
        return f"; change {key} in {config.path}" if config.path else f"; set {key} in a config file"

    http_port = config.get("frontend", "http_port")
    if http_port:
        listener = TCPListener(http_port, site, interface=bind)
        listener.where, listener.url = f"{host}:{http_port}", f"http://{host}:{{port}}/soap"
        listener.setting = setting("[frontend] http_port")
        listeners.append(listener)
    https_port = config.get("frontend", "https_port")
    if https_port:
        from apiserver.transport.tls import ensure_certificate, server_context_factory

        cert, _key = ensure_certificate(config)
        listener = SSLListener(https_port, site, server_context_factory(config), interface=bind)
        listener.where, listener.url = f"{host}:{https_port}", f"https://{host}:{{port}}/soap"
        listener.certificate = cert  # logged as its own field: the url stays a URL
        listener.setting = setting("[frontend] https_port")
        listeners.append(listener)
    path = config.state_path(config.get("core", "cli_socket"))
    # 0666: the kernel tells the server who calls (SO_PEERCRED), site users included; the folder
    # decides who may reach the socket.
    listener = UNIXListener(path, cli_factory, mode=0o666, wantPID=False)
    listener.where, listener.url = path, None
    listener.setting = setting("[core] cli_socket")
    listeners.append(listener)
    return listeners


# --- the tree ---------------------------------------------------------------------------------

class ApiServer(service.MultiService):
    """The running server: thread pools, background services, listeners; see the module docstring.

    One of the three classes that take the whole application (with
    :class:`apiserver.app.Application` and :class:`apiserver.internal.InternalApi`): it hands
    each listener, resource and service the parts it uses.
    """

    name = "apiserver"
    #: twistd sets this: a listen failure or a failed start then ends the process with one line
    #: on stderr (``apiserver serve`` says the same itself)
    exit_on_start_failure = False

    def __init__(self, app, observer, log_stream):
        from apiserver.transport.cli_socket import CliFactory
        from apiserver.transport.site import build_site

        super().__init__()
        self.app = app
        self.observer = observer
        self.log_stream = log_stream
        self.site = build_site(settings=app.config, reactor=app.reactor, gatekeeper=app.gatekeeper,
                               registry=app.registry, accounts=app.accounts, devices=app.notices.devices,
                               site_homes=app.site_homes, storage=app.storage, run_blocking=app.pools.run_blocking,
                               metrics=app.metrics, site_files=app.site_files, traffic=app.traffic,
                               dav_access=app.dav_access)
        cli_factory = CliFactory(app.config, app.gatekeeper, app.registry, app.directory, app.pools.run_blocking,
                                 app.hooks.fire, app.metrics)
        self.background = [ThreadPoolsService(app.pools)] + list(app.background_services())
        self.listeners = listener_services(app.config, self.site, cli_factory)
        for child in self.background + self.listeners:
            child.setServiceParent(self)
        self._previous_sighup = None

    # logging -----------------------------------------------------------------------------
    def begin_logging(self) -> None:
        """Send Twisted's global log to this server's observer (``apiserver serve``)."""
        globalLogBeginner.beginLoggingTo([self.observer], redirectStandardIO=False)

    def setServiceParent(self, parent):
        # Under twistd the parent is the Application: its ILogObserver component is the log
        # twistd starts, so twistd logs exactly as `apiserver serve` does.
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        return super().setServiceParent(parent)

    # starting ----------------------------------------------------------------------------
    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except ListenFailed as exc:
            if not self.exit_on_start_failure:
                raise
            _exit_with(str(exc))

    def startService(self):
        try:
            self._start()
        except Exception as exc:
            if not self.exit_on_start_failure:
                raise
            log.failure("start-up failed")
            self.app.pools.stop()  # their threads would keep the process alive
            _exit_with(f"cannot start: {exc}")

    def _start(self) -> None:
        super().startService()
        reactor = self.app.reactor
        for listener in self.listeners:
            if listener.url is None:
                log.info("cpcmd socket at {path}", path=listener.where)
            elif getattr(listener, "certificate", None):
                log.info("{what} API listening on {url} (certificate {certificate})", what=listener.what,
                         url=listener.url.format(port=listener.bound_port()), certificate=listener.certificate)
            else:
                log.info("{what} API listening on {url}", what=listener.what,
                         url=listener.url.format(port=listener.bound_port()))
        for section, key in secret_values(self.app.config):
            _warn_if_readable(self.app.config.path, section, key)
        log_loaded_plugins(self.app.plugin_manager)
        self.app.hooks.call("apiserver_startup")
        if hasattr(signal, "SIGHUP"):
            self._previous_sighup = signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(self.reload))
        from apiserver.app import freeze_heap

        reactor.callLater(0, freeze_heap)  # start-up objects live for the whole process

    # stopping ----------------------------------------------------------------------------
    def stopService(self):
        service.Service.stopService(self)
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        reactor = self.app.reactor
        timeout = self.app.config.get("core", "shutdown_timeout")
        in_flight = self._in_flight()
        log.info("apiserver stopping: closing the listeners, then waiting up to {timeout}s "
                 "for {count} request(s) in flight",
                 timeout=timeout, count=sum(len(s) for s in in_flight))
        await defer.gatherResults([defer.maybeDeferred(s.stopService) for s in self.listeners if s.running])
        try:
            await _all_fired([s.emptied() for s in in_flight]).addTimeout(timeout, reactor)
        except defer.TimeoutError:
            log.warn("{count} request(s) still in flight after {timeout}s; stopping anyway",
                     count=sum(len(s) for s in in_flight), timeout=timeout)
        try:  # written answers are sent before the connections close
            await self.site.close_connections().addTimeout(5, reactor)
        except defer.TimeoutError:
            for channel in list(self.site.channels):
                channel.transport.abortConnection()
        # through fire: a plugin whose shutdown raises or fails is logged and cannot stop the rest
        results = [r for r in self.app.hooks.fire("apiserver_shutdown") if isinstance(r, defer.Deferred)]
        if results:
            await defer.gatherResults(results)
        for child in reversed(self.background):
            if child.running:
                await defer.maybeDeferred(child.stopService)
        log.info("apiserver stopped")

    def _in_flight(self) -> list:
        """What a shutdown waits for: the HTTP requests and the cpcmd calls not yet answered."""
        return [self.site.in_flight] + [listener.args[1].calls for listener in self.listeners
                                        if isinstance(listener, UNIXListener)]

    # SIGHUP ------------------------------------------------------------------------------
    def reload(self) -> defer.Deferred:
        """Reopen the log file and re-read the config file on the blocking pool, then apply the
        run-time keys on the reactor thread and log the others as needing a restart; a config
        that does not validate changes nothing."""
        d = self.app.pools.run_blocking(self._reread)
        d.addCallback(self._apply)
        d.addErrback(lambda failure: log.failure("SIGHUP: reloading failed", failure))
        return d

    def _reread(self):
        """Blocking.  The log file reopened; the config file read and cross-checked, or the error."""
        if self.log_stream is not None:
            self.log_stream.reopen()
        try:
            fresh = reread_config(self.app.config)
            cross_check(fresh)
        except ConfigError as exc:
            return exc
        return fresh

    def _apply(self, fresh) -> None:
        config = self.app.config
        if isinstance(fresh, ConfigError):
            log.error("SIGHUP: {path} not reloaded, the running config stays: {error}",
                      path=config.path, error=str(fresh))
            return
        applied, restart = [], []
        for section, key in changed_keys(config, fresh):
            if config.key(section, key).runtime:
                config.set(section, key, fresh.raw(section, key))
                applied.append(f"[{section}] {key}")
            else:
                restart.append(f"[{section}] {key}")
        log.info("SIGHUP: reloaded {path}; applied: {applied}; needs a restart: {restart}", path=config.path,
                 applied=", ".join(applied) or "nothing", restart=", ".join(restart) or "nothing")
        for name in restart:
            log.warn("{name} changed in {path}: the new value takes effect after a restart",
                     name=name, path=config.path)


def _all_fired(deferreds: list) -> defer.Deferred:
    """Fires once every one of ``deferreds`` has; cancelling it (a timeout) leaves them be."""
    waiter = defer.Deferred()
    defer.DeferredList(deferreds).addBoth(lambda _: None if waiter.called else waiter.callback(None))
    return waiter


def _exit_with(message: str):
    """End the process (under twistd) with ``apiserver: message`` on the real stderr and status 1."""
    stderr = sys.__stderr__ or sys.stderr  # twistd has sent sys.stderr into the log
    stderr.write(f"apiserver: {message}\n")
    stderr.flush()
    raise SystemExit(1) from None


def _warn_if_readable(path: Optional[str], section: str, key: str) -> None:
    if path is None:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warn("{path} holds a secret ([{section}] {key}) and is readable by others: chmod 600 {path}",
                 path=path, section=section, key=key)
