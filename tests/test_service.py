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
    """Under twistd, log_format=json gives one JSON object per line (an HTTPS listener's url a bare URL,
    its certificate a field of its own), SIGHUP reopens the log and SIGTERM closes the port."""
    log_name = "server.log"
    path, port = make_config(tmp_path, {"core": {"log_format": "json", "log_file": log_name, "access_log": "true"}},
                             https=True)
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
    [https] = [e for e in events if e["message"].startswith("HTTPS API listening")]
    assert https["url"].startswith("https://127.0.0.1:") and https["url"].endswith("/soap"), https
    assert https["certificate"].endswith(".crt") and https["certificate"] in https["message"]
    access = [e for e in events if e["namespace"] == "apiserver.access"]
    assert access and key not in text and "authkey=***" in access[0]["message"]
    assert any(e["message"] == "apiserver stopped" for e in events), messages
    assert not listening(port)()
    # twistd re-raises the stopping signal after a clean shutdown, as daemons should.
    assert proc.returncode in (0, -signal.SIGTERM)


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    """An installed plugin (apiserver-broken 0.1, entry point ``broken``) whose import fails, on the children's path."""
    from tests.test_plugin_loading import make_distribution

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "apiserver-broken", "0.1", "broken_start_plugin", "1/0\n", entry="broken")
    monkeypatch.setenv("PYTHONPATH", str(site))
    return ("plugin broken (apiserver-broken 0.1): cannot import broken_start_plugin: "
            "ZeroDivisionError: division by zero")


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_broken_plugin_stops_start_up_with_one_line(tmp_path, starter, broken_plugin):
    """A plugin that fails to import ends both starters with status 1 and one stderr line, no traceback."""
    path, _port = make_config(tmp_path)
    out = run_to_end(STARTERS[starter](path), str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.splitlines() == [f"apiserver: {broken_plugin}"], out.stdout + out.stderr
    assert "Traceback" not in out.stdout


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_start_up_logs_the_plugins_and_skips_disabled_ones(tmp_path, starter, broken_plugin):
    """With the broken plugin in [core] disabled_plugins both starters run, and their log names each
    installed plugin with its version (the example loaded, the broken one disabled)."""
    path, port = make_config(tmp_path, {"core": {"disabled_plugins": "broken"}})
    init(path)
    out_path = str(tmp_path / "out.txt")
    expected = ["plugin example loaded: apiserver-example 0.1.0 (apiserver_example)",
                "plugin broken (apiserver-broken 0.1) disabled by [core] disabled_plugins",
                "built-in plugins of apiserver", "listening on"]
    proc = spawn(STARTERS[starter](path), str(tmp_path), out_path)
    try:  # every line it asserts, not only "listening on": a SIGTERM before the log is flushed loses lines
        wait_for(lambda: all(line in read(out_path) for line in expected), proc, out_path,
                 what=f"{starter} logging its plugins and listening")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = read(out_path)
    for line in expected:
        assert line in text, text


MARKING_PLUGIN = '''
import os

from apiserver import hookimpl


def _mark(text):
    with open(os.environ["APISERVER_TEST_MARKS"], "a") as fh:
        fh.write(text + "\\n")


@hookimpl
def apiserver_startup(api):
    _mark("startup " + type(api).__name__)


@hookimpl
def apiserver_shutdown(api):
    _mark("shutdown " + type(api).__name__)
'''


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_both_starters_run_plugin_hooks_and_background_services(tmp_path, starter):
    """serve and twistd alike call an installed plugin's startup and shutdown hooks with the
    plugin API, run the notice sender (an absent relay is logged) and flush the trail at SIGTERM."""
    import sqlite3
    import subprocess
    import xmlrpc.client

    from tests.ops_support import env
    from tests.test_plugin_loading import make_distribution

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "apiserver-marks", "0.1", "marking_plugin", MARKING_PLUGIN, entry="marks")
    marks = tmp_path / "marks.txt"
    path, port = make_config(tmp_path, {"mail": {"enabled": "true", "smtp_port": str(free_port())}})
    key = init(path)
    process_env = dict(env(), APISERVER_TEST_MARKS=str(marks))
    process_env["PYTHONPATH"] = os.pathsep.join([str(site), process_env["PYTHONPATH"]])
    log_path = str(tmp_path / "out.txt")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(STARTERS[starter](path), stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                                env=process_env)
    try:
        wait_for(listening(port), proc, log_path, what=f"{starter} listening")
        wait_for(lambda: marks.exists() and read(str(marks)).endswith("\n"), proc, log_path, what="the startup hook")
        assert read(str(marks)) == "startup PluginApi\n"
        api = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/xmlrpc?authkey={key}", allow_none=True)
        api.admin.add_site("example.com", "exadmin", {"siteinfo.email": "owner@example.com"})
        api.auth.reset_password(None, "example.com")
        wait_for(lambda: " not sent via " in read(log_path), proc, log_path, what="the sender's attempt")
        bad = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/xmlrpc?authkey={'0' * 64}")
        try:
            bad.common.whoami()
        except xmlrpc.client.Fault:
            pass
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), read(log_path)  # twistd re-raises the signal
    assert read(str(marks)) == "startup PluginApi\nshutdown PluginApi\n"
    with sqlite3.connect(str(tmp_path / "state" / "apiserver.db")) as db:
        kinds = {row[0] for row in db.execute("SELECT kind FROM security_events")}
    assert "login_failed" in kinds, kinds


FAILING_STARTUP_PLUGIN = '''
from apiserver import hookimpl


@hookimpl
def apiserver_startup(api):
    raise RuntimeError("the plugin cannot start")
'''


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_failing_startup_hook_ends_both_starters(tmp_path, starter):
    """A plugin whose startup hook raises ends serve and twistd alike: exit 1, a line naming the error."""
    import subprocess

    from tests.ops_support import env
    from tests.test_plugin_loading import make_distribution

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "apiserver-fails", "0.1", "failing_startup_plugin", FAILING_STARTUP_PLUGIN, entry="fails")
    path, port = make_config(tmp_path)
    init(path)
    process_env = env()
    process_env["PYTHONPATH"] = os.pathsep.join([str(site), process_env["PYTHONPATH"]])
    out = subprocess.run(STARTERS[starter](path), capture_output=True, text=True, cwd=str(tmp_path),
                         env=process_env, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "apiserver: cannot start: the plugin cannot start" in out.stderr, out.stdout + out.stderr
    assert not listening(port)()


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
