"""``GET /health``: 200 ``{"status": "ok", ...}``, or 503 naming the dependency that failed.

Checked on every request, each on the blocking pool with a deadline: the database (a
``SELECT 1``) and Redis when a backend uses it (``[anvil] backend`` or ``[session] backend``
``redis``: a PING).  The answer names a failed check and its error type, never a URL or
password.  Only ``[core] metrics_allow`` may ask.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

from apiserver import __version__
from apiserver.transport.http import ApiResource, finish_with
from apiserver.transport.metrics import refuse_unless_allowed

log = Logger(namespace="apiserver.health")

#: Seconds a check may take before it counts as failed.
CHECK_TIMEOUT = 5


def check_database(storage) -> None:
    """Blocking: the database answers a query."""
    with storage.read() as conn:
        conn.execute(sa.text("SELECT 1")).scalar()


def redis_urls(config) -> list:
    """The Redis URLs a configured backend uses (each once)."""
    urls = []
    for section in ("anvil", "session"):
        if config.get(section, "backend") == "redis" and config.get(section, "redis_url") not in urls:
            urls.append(config.get(section, "redis_url"))
    return urls


def check_redis(url: str) -> None:
    """Blocking: Redis at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        client.ping()
    finally:
        client.close()


class HealthResource(ApiResource):
    """``GET /health``.

    ``client_address(request)``: who asks (trusted proxies applied); ``settings``: the config
    (``[core] metrics_allow``, the Redis backends); ``storage``: the database checked;
    ``run_blocking``: where the checks run; ``reactor``: their deadline.
    """

    def __init__(self, client_address, settings, storage, run_blocking, reactor):
        super().__init__()
        self.client_address = client_address
        self.settings = settings
        self.storage = storage
        self.run_blocking = run_blocking
        self.reactor = reactor

    def render_GET(self, request):
        refused = refuse_unless_allowed(self.client_address, self.settings, request)
        if refused is not None:
            return refused
        d = defer.ensureDeferred(self._checks())
        d.addCallback(lambda answer: self._answer(request, *answer))
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET

    async def _checks(self) -> tuple:
        run_blocking = self.run_blocking
        checks = [("database", lambda: run_blocking(check_database, self.storage))]
        for index, url in enumerate(redis_urls(self.settings)):
            name = "redis" if index == 0 else f"redis{index + 1}"
            checks.append((name, lambda url=url: run_blocking(check_redis, url)))
        results, failed = {}, []
        for name, run in checks:
            try:
                await run().addTimeout(CHECK_TIMEOUT, self.reactor)
                results[name] = "ok"
            except Exception as exc:
                reason = "timed out" if isinstance(exc, defer.TimeoutError) else type(exc).__name__
                results[name] = f"failed: {reason}"
                failed.append(name)
                log.warn("health check {check} failed: {reason}", check=name, reason=reason)
        body = {"status": "ok" if not failed else "failed", "version": __version__, "checks": results}
        if failed:
            body["failed"] = failed
        return (503 if failed else 200), body

    def _answer(self, request, status: int, body: dict) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        finish_with(request, json.dumps(body).encode("utf-8") + b"\n")
