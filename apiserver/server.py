"""Start listening: the HTTP and HTTPS listeners on one Site, and the local CLI socket."""

from __future__ import annotations

import sys

from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger, globalLogBeginner,
    jsonFileLogObserver, textFileLogObserver,
)

from apiserver.app import Application, freeze_heap
from apiserver.plugins import log_loaded_plugins

log = Logger(namespace="apiserver.server")


def start_logging(config, stream=None) -> LogLevelFilterPredicate:
    """Send Twisted's log to ``stream`` as text or one JSON object per line (``[core] log_format``).

    Returns the level predicate, so ``[core] debug`` can be switched at run time.
    """
    stream = stream or sys.stdout
    if config.get("core", "log_format") == "json":
        observer = jsonFileLogObserver(stream)
    else:
        observer = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug if config.get("core", "debug") else LogLevel.info)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])], redirectStandardIO=False)

    def on_change(section, key, old, new):
        if (section, key) == ("core", "debug"):
            predicate.setLogLevelForNamespace(None, LogLevel.debug if new else LogLevel.info)

    config.observe(on_change)
    return predicate


def start(app: Application, reactor) -> list:
    """Listen on every configured port; log where; fire ``apiserver_startup``.  Returns the ports."""
    from apiserver.transport.cli_socket import listen_cli_socket
    from apiserver.transport.site import build_site

    config = app.config
    app.start_pools()
    site = build_site(app)
    bind = config.get("frontend", "bind")
    ports = []
    http_port = config.get("frontend", "http_port")
    if http_port:
        port = reactor.listenTCP(http_port, site, interface=bind)
        ports.append(port)
        log.info("HTTP API listening on http://{host}:{port}/soap", host=_url_host(bind), port=port.getHost().port)
    https_port = config.get("frontend", "https_port")
    if https_port:
        from apiserver.transport.tls import ensure_certificate, server_context_factory

        cert, _key = ensure_certificate(config)
        port = reactor.listenSSL(https_port, site, server_context_factory(config), interface=bind)
        ports.append(port)
        log.info("HTTPS API listening on https://{host}:{port}/soap (certificate {cert})",
                 host=_url_host(bind), port=port.getHost().port, cert=cert)
    socket_path = config.state_path(config.get("core", "cli_socket"))
    ports.append(listen_cli_socket(app, reactor, socket_path))
    log.info("cpcmd socket at {path}", path=socket_path)
    log_loaded_plugins(app.plugin_manager)
    app.hook.apiserver_startup(app=app, api=app.api)
    reactor.addSystemEventTrigger("before", "shutdown", _shutdown, app)
    for background in app.background_services():  # notice sender, trail writer, fortification windows
        background.startService()
        reactor.addSystemEventTrigger("before", "shutdown", background.stopService)
    # Start-up objects live for the whole process; keep the collector off them.
    reactor.callWhenRunning(freeze_heap)
    return ports


def _shutdown(app: Application):
    results = [r for r in app.hook.apiserver_shutdown(app=app, api=app.api) if isinstance(r, defer.Deferred)]
    log.info("apiserver stopping")
    return defer.gatherResults(results) if results else None


def _url_host(bind: str) -> str:
    return f"[{bind}]" if ":" in bind else bind
