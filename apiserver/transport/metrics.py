"""``GET /metrics``: Prometheus text format, from the prometheus_client library.

What is counted (one :class:`Metrics` per application, on its own registry):

* ``apiserver_requests_total{dialect, function}`` and ``apiserver_request_duration_seconds``:
  every answered API call, ``dialect`` one of ``soap-rpc``, ``soap-document``, ``xmlrpc``;
  ``function`` the SOAP operation name (only names the registry knows: no label per typo);
* ``apiserver_faults_total{code}``: faults answered, by SOAP fault code;
* ``apiserver_anvil_tracked_addresses``, ``apiserver_anvil_blocked_addresses``;
* ``apiserver_threadpool_queue_depth{pool}``: work waiting for a thread (``blocking``, ``hashing``);
* ``apiserver_requests_in_flight``;
* ``apiserver_outbox_depth``: notices waiting to be sent, once something sets
  :attr:`Metrics.outbox_depth` (a callable returning the number);
* ``apiserver_security_events_queued`` and ``apiserver_security_events_dropped_total``: the
  trail's queue, and the events dropped because it was full (a database that refuses writes);
* ``apiserver_build_info{version, python, twisted}``.

Only addresses in ``[core] metrics_allow`` may read it (the client address the middleware
decided, so a trusted proxy's ``X-Forwarded-For`` counts).
"""

from __future__ import annotations

import platform
import time
from typing import Callable, Optional

import twisted
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.logger import Logger

from apiserver import __version__
from apiserver.addresses import is_trusted, parse_address
from apiserver.transport.http import ApiResource, refuse

log = Logger(namespace="apiserver.metrics")

#: Latency buckets in seconds: API calls take milliseconds, Anvil delays up to seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The application's metrics; :meth:`observe_request` is an ApiSite request observer.

    ``anvil``: tracked and blocked addresses; ``pools``: the thread pools' backlogs
    (:class:`apiserver.pools.Pools`); ``security_events``: the trail's queue; ``outbox_sender``:
    the notice sender, whose last look at the outbox counted what waits.  Read when scraped.
    """

    def __init__(self, anvil, pools, security_events, outbox_sender):
        self.anvil = anvil
        self.pools = pools
        self.security_events = security_events
        # counted on the pool at each look at the outbox, read when scraped
        self.outbox_depth: Optional[Callable[[], float]] = lambda: outbox_sender.last_pending or 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("apiserver_requests", "API calls answered, by dialect and function.",
                                ["dialect", "function"], registry=self.registry)
        self.latency = Histogram("apiserver_request_duration_seconds",
                                 "Seconds from a request's arrival to its answer, by dialect and function.",
                                 ["dialect", "function"], buckets=BUCKETS, registry=self.registry)
        self.faults = Counter("apiserver_faults", "Faults answered, by SOAP fault code.", ["code"],
                              registry=self.registry)
        Info("apiserver_build", "Version of apiserver and what it runs on.", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version(), "twisted": twisted.__version__})
        self.sites: list = []  # ApiSites whose in-flight requests are counted
        self.registry.register(_LiveCollector(self))

    def watch_site(self, site) -> None:
        """Count ``site``'s answered and in-flight requests."""
        self.sites.append(site)
        site.request_observers.append(self.observe_request)

    def observe_request(self, request) -> None:
        dialect = getattr(request, "api_dialect", None)
        if dialect is not None:
            function = request.api_function or "-"
            self.requests.labels(dialect, function).inc()
            if request.started_at is not None:

                self.latency.labels(dialect, function).observe(time.perf_counter() - request.started_at)
        code = getattr(request, "api_fault", None)
        if code is not None:
            self.faults.labels(code).inc()

    def count_call(self, dialect: str, function: str, seconds: float, fault: Optional[str]) -> None:
        """Count a call that did not come over HTTP (the cpcmd socket)."""
        self.requests.labels(dialect, function).inc()
        self.latency.labels(dialect, function).observe(seconds)
        if fault is not None:
            self.faults.labels(fault).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Gauges read when scraped: Anvil, thread pools, in-flight requests, outbox, the trail's queue."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        metrics = self.metrics
        tracked = GaugeMetricFamily("apiserver_anvil_tracked_addresses",
                                    "Addresses with failed logins Anvil remembers (memory backend).")
        blocked = GaugeMetricFamily("apiserver_anvil_blocked_addresses", "Addresses this node blocks right now.")
        count = metrics.anvil.tracked()
        if count is not None:  # a shared store (Redis) is not counted from here
            tracked.add_metric([], count)
        blocked.add_metric([], metrics.anvil.blocked_here())
        yield tracked
        yield blocked
        queue = GaugeMetricFamily("apiserver_threadpool_queue_depth", "Work waiting for a thread, by pool.",
                                  labels=["pool"])
        for name, pool in (("blocking", metrics.pools.blocking_pool), ("hashing", metrics.pools.hash_pool)):
            queue.add_metric([name], _backlog(pool))
        yield queue
        yield GaugeMetricFamily("apiserver_requests_in_flight", "HTTP requests being processed.",
                                value=sum(len(site.in_flight) for site in self.metrics.sites))
        outbox = GaugeMetricFamily("apiserver_outbox_depth", "Notices waiting in the outbox to be sent.")
        if self.metrics.outbox_depth is not None:
            try:
                outbox.add_metric([], float(self.metrics.outbox_depth()))
            except Exception:
                log.failure("reading the outbox depth failed")
        yield outbox
        trail = metrics.security_events
        yield GaugeMetricFamily("apiserver_security_events_queued",
                                "Security events waiting to be written.", value=trail.queued())
        yield CounterMetricFamily("apiserver_security_events_dropped",
                                  "Security events dropped: more than the queue holds waited to be written.",
                                  value=trail.dropped_total)


def _backlog(pool) -> int:
    try:
        return pool._team.statistics().backloggedWorkCount
    except AttributeError:  # a pool that was never started
        return 0


def allowed(client_address: Callable, settings, request) -> bool:
    """The request's client address (``client_address(request)``: trusted proxies applied) is in
    ``[core] metrics_allow``."""
    ip = parse_address(client_address(request))
    return ip is not None and is_trusted(ip, settings.get("core", "metrics_allow"))


def refuse_unless_allowed(client_address: Callable, settings, request) -> Optional[bytes]:
    if allowed(client_address, settings, request):
        return None
    return refuse(request, 403, "this address may not read /health or /metrics ([core] metrics_allow)")


class MetricsResource(ApiResource):
    """``GET /metrics``."""

    def __init__(self, client_address: Callable, settings, metrics: Metrics):
        super().__init__()
        self.client_address, self.settings, self.metrics = client_address, settings, metrics

    def render_GET(self, request):
        refused = refuse_unless_allowed(self.client_address, self.settings, request)
        if refused is not None:
            return refused
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return self.metrics.render()
