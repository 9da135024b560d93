"""/health and /metrics against the real server: answers, the metrics_allow gate, a failed dependency."""

import json
import subprocess
import sys
import xmlrpc.client

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.ops_support import env, get, metric

REMOTE = {"X-Forwarded-For": "192.0.2.44"}


class _Remote(xmlrpc.client.Transport):
    """XML-RPC as remote client 192.0.2.44 through the trusted local proxy."""

    def send_headers(self, connection, headers):
        super().send_headers(connection, headers + list(REMOTE.items()))


def test_health_ok_and_only_for_metrics_allow(server_factory):
    """/health is 200 {"status": "ok"} with the database checked, 403 to a remote client."""
    server = server_factory()
    status, headers, body = get(server.url + "/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["status"] == "ok" and answer["checks"] == {"database": "ok"}
    assert get(server.url + "/health", REMOTE)[0] == 403
    assert get(server.url + "/metrics", REMOTE)[0] == 403


def test_health_names_the_failed_dependency(server_factory):
    """With Redis sessions pointed at a port nothing listens on, /health is 503 naming redis, no URL."""
    server = server_factory({"session": {"backend": "redis", "redis_url": f"redis://:pw@127.0.0.1:{free_port()}/0"}})
    status, _headers, body = get(server.url + "/health", timeout=30)
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "failed" and answer["failed"] == ["redis"] and answer["checks"]["database"] == "ok"
    assert b"pw" not in body and b"127.0.0.1" not in body


def test_metrics_count_calls_faults_and_live_gauges(server_factory):
    """/metrics parses with prometheus_client and counts calls by dialect and function and faults by code."""
    server = server_factory()
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    for _ in range(3):
        api.common.whoami()
    bad = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={'0' * 64}", transport=_Remote())
    try:
        bad.common.whoami()
    except xmlrpc.client.Fault:
        pass
    status, headers, body = get(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ("apiserver_requests", "apiserver_request_duration_seconds", "apiserver_faults",
                 "apiserver_anvil_tracked_addresses", "apiserver_anvil_blocked_addresses",
                 "apiserver_threadpool_queue_depth", "apiserver_outbox_depth", "apiserver_build_info",
                 "apiserver_requests_in_flight"):
        assert name in families, sorted(families)
    assert metric(server.url, "apiserver_requests_total", {"dialect": "xmlrpc", "function": "common_whoami"}) == 4
    assert metric(server.url, "apiserver_request_duration_seconds_count",
                  {"dialect": "xmlrpc", "function": "common_whoami"}) == 4
    assert metric(server.url, "apiserver_faults_total", {"code": "Client.Denied"}) == 1
    assert metric(server.url, "apiserver_anvil_tracked_addresses") == 1  # 192.0.2.44
    assert metric(server.url, "apiserver_threadpool_queue_depth", {"pool": "blocking"}) == 0
    assert metric(server.url, "apiserver_build_info") == 1
    subprocess.run([sys.executable, "-m", "apiserver.cli.cpcmd", "--config", server.config_path, "common:whoami"],
                   check=True, capture_output=True, env=env(), timeout=60)
    assert metric(server.url, "apiserver_requests_total", {"dialect": "cli", "function": "common_whoami"}) == 1
