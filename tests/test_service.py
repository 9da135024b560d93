"""One start path: `apiserver serve` and `twistd -n apiserver` check, log and fail alike."""

import os
import signal
import socket
import sqlite3
import xmlrpc.client

import pytest

from tests.conftest import free_port
from tests.ops_support import (
    get, init, json_lines, listening, make_config, read, run_to_end, serve_cmd, spawn, twistd_cmd, wait_for,
)

STARTERS = {"serve": serve_cmd, "twistd": twistd_cmd}


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_missing_state_says_run_init(tmp_path, starter):
    """Before `apiserver init`, both starters exit 1 with one line naming init, no traceback."""
    path, _port = make_config(tmp_path)
    out = run_to_end(STARTERS[starter](path), str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "init' first" in out.stderr and "Traceback" not in out.stderr + out.stdout
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_bad_value_names_section_and_key(tmp_path, starter):
    """A bad value stops both starters with exit 2 and the section and key, no traceback."""
    path, _port = make_config(tmp_path, {"anvil": {"ttl": "soon"}})
    out = run_to_end(STARTERS[starter](path), str(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "[anvil] ttl" in out.stderr and "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize("overrides, named", [
    ({"frontend": {"http_port": "{port}", "https_port": "{port}"}}, "[frontend] https_port"),
    ({"frontend": {"bind": "192.0.2.1"}}, "[frontend] bind"),
    ({"frontend": {"tls_certificate": "cert.pem"}}, "[frontend] tls_key"),
])
def test_cross_key_checks_stop_start_up(tmp_path, overrides, named):
    """Clashing ports, a bind address not on this host and a certificate without key are refused
    at start-up, naming section and key."""
    port = free_port()  # checked before the state: no init needed
    overrides = {s: {k: v.replace("{port}", str(port)) for k, v in keys.items()} for s, keys in overrides.items()}
    path, _ = make_config(tmp_path, overrides, https=True)
    out = run_to_end(serve_cmd(path), str(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_port_in_use_exits_non_zero_naming_the_address(tmp_path, starter):
    """A taken HTTP port ends the process with status 1 and one line naming the address."""
    path, port = make_config(tmp_path)
    init(path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        out = run_to_end(STARTERS[starter](path), str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_twistd_logs_json_lines_and_stops_cleanly(tmp_path):
    """Under twistd, log_format=json gives one JSON object per line, SIGHUP reopens the log and
    SIGTERM closes the port."""
    log_name = "server.log"
    path, port = make_config(tmp_path, {"core": {"log_format": "json", "log_file": log_name, "access_log": "true"}})
    key = init(path)
    log_path = str(tmp_path / "state" / log_name)
    proc = spawn(twistd_cmd(path), str(tmp_path), str(tmp_path / "stdout.txt"))
    try:
        wait_for(listening(port), proc, str(tmp_path / "stdout.txt"), what="twistd listening")
        status, headers, body = get(f"http://127.0.0.1:{port}/apnscp.wsdl?authkey={key}")
        assert status == 200 and b"urn:net.apnscp.soap" in body
        assert headers["Server"] == "apiserver"
        wait_for(lambda: "apnscp.wsdl" in read(log_path), proc, log_path, what="the access log line")
        os.rename(log_path, log_path + ".1")  # as logrotate does; SIGHUP reopens the file
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(log_path) and "SIGHUP: reloaded" in read(log_path), proc, log_path + ".1",
                 what="the reload under twistd")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = read(log_path + ".1") + read(log_path)
    assert "\x1e" not in text
    events = json_lines(text)
    for event in events:
        assert {"time", "level", "namespace", "message"} <= set(event), event
        assert event["time"].endswith("Z") and "T" in event["time"]
    messages = [e["message"] for e in events]
    assert any("HTTP API listening on http://127.0.0.1:" in m for m in messages), messages
    access = [e for e in events if e["namespace"] == "apiserver.access"]
    assert access and key not in text and "authkey=***" in access[0]["message"]
    assert any(e["message"] == "apiserver stopped" for e in events), messages
    assert not listening(port)()
    # twistd re-raises the stopping signal after a clean shutdown, as daemons should.
    assert proc.returncode in (0, -signal.SIGTERM)


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_sigterm_writes_the_queued_security_events(tmp_path, starter):
    """Both starters run the trail's writer and stop it on SIGTERM after a last write: no queued event is lost."""
    path, port = make_config(tmp_path, {"auth": {"key_cache_ttl": "0"}})  # every call is a key login
    key = init(path)
    out = str(tmp_path / "server.out")
    proc = spawn(STARTERS[starter](path), str(tmp_path), out)
    try:
        wait_for(listening(port), proc, out, what=f"{starter} listening")
        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/xmlrpc?authkey={key}", allow_none=True)
        for _ in range(5):  # the last ones are still queued (the writer runs once a second)
            proxy.common.whoami()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), read(out)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(str(tmp_path / "state" / "apiserver.db")) as db:
        logins = db.execute("SELECT count(*) FROM security_events WHERE kind = 'login_succeeded'").fetchone()[0]
    assert logins >= 5, read(out)
