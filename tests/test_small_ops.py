"""Small operator-facing edges: 429's reason, a versionless Server header, one log line per failed
notice, and one filter rule for cpcmd -l, misc:info, misc:list-commands and scope:list."""

import http.client
import subprocess
import sys
import urllib.parse
import xmlrpc.client

from tests.conftest import free_port
from tests.ops_support import env, metric, read, wait_for


def _post_login(server, address):
    host, port = server.url.rsplit("/", 1)[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = urllib.parse.urlencode({"username": "nobody", "domain": "", "password": "wrong"})
    connection.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                "X-Forwarded-For": address})
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer


def test_429_reason_and_server_header(server_factory):
    """A throttled login answers "429 Too Many Requests"; Server names no version."""
    server = server_factory({"anvil": {"limit": "2", "min_attempts": "100"}})
    answers = [_post_login(server, "192.0.2.61") for _ in range(3)]
    assert answers[-1].status == 429 and answers[-1].reason == "Too Many Requests"
    assert answers[-1].getheader("Retry-After")
    for answer in answers:
        assert answer.getheader("Server") == "apiserver"


def test_absent_mail_relay_logs_one_line_per_attempt(server_factory):
    """With the default relay absent, each notice that cannot be sent is one warning line, no
    traceback, and /metrics counts both waiting in the outbox."""
    server = server_factory({"mail": {"enabled": "true", "smtp_port": str(free_port())}})
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    api.admin.add_site("example.com", "exadmin", {"siteinfo.email": "owner@example.com"})
    for _ in range(2):
        api.auth.reset_password(None, "example.com")
    wait_for(lambda: read(server.log_path).count(" not sent via ") == 2, server.process, server.log_path,
             what="two notice failures logged")
    log = read(server.log_path)
    assert "Traceback" not in log and "ConnectionRefusedError" in log
    wait_for(lambda: metric(server.url, "apiserver_outbox_depth") == 2, server.process, server.log_path,
             what="apiserver_outbox_depth 2")


def test_filters_match_alike_everywhere(server_factory):
    """A bare word matches by substring, a pattern with * as a glob (both in any case), in all four places."""
    server = server_factory()
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    listed = api.misc.list_commands("auth")
    assert "auth:restrict-ip" in listed and all("auth" in c for c in listed)
    assert [i["command"] for i in api.misc.info("auth")] == listed
    assert api.misc.list_commands("AUTH") == listed
    assert api.misc.list_commands("auth:*") == [c for c in listed if c.startswith("auth:")]
    assert api.misc.list_commands("AUTH:*") == api.misc.list_commands("auth:*")  # any case, as a word
    assert "auth.geoip-key" in api.scope.list("auth") and "auth.geoip-key" in api.scope.list("geoip")
    assert api.scope.list("cp.*") == [n for n in api.scope.list() if n.startswith("cp.")]
    out = subprocess.run([sys.executable, "-m", "apiserver.cli.cpcmd", "--config", server.config_path, "-l", "auth"],
                         capture_output=True, text=True, env=env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.split() if ":" in line and "auth" in line] == listed
