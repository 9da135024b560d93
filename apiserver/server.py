"""Compatibility for older callers: the start path is :mod:`apiserver.service`, logging :mod:`apiserver.logs`."""

from __future__ import annotations

from apiserver.logs import start_logging

__all__ = ["start", "start_logging"]


def start(app, reactor):
    """Bind and start the service tree of an already built ``app`` (benchmarks use this); the ApiServer."""
    from apiserver.service import ApiServer

    server = ApiServer(app, observer=None, log_stream=None)
    server.privilegedStartService()
    reactor.callWhenRunning(server.startService)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    return server
