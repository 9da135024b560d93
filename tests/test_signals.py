"""Signals: SIGTERM lets calls in flight finish (up to shutdown_timeout) and exits 0; SIGHUP
re-reads the config and reopens the log file."""

import os
import signal
import subprocess
import threading
import xmlrpc.client

import pytest

from tests.ops_support import (
    env, get, init, listening, make_config, metric, read, rewrite, serve_cmd, spawn, wait_for,
)

REMOTE = {"X-Forwarded-For": "192.0.2.9"}


class _ForwardingTransport(xmlrpc.client.Transport):
    """XML-RPC over the trusted local proxy, as remote client 192.0.2.9."""

    def send_headers(self, connection, headers):
        super().send_headers(connection, headers + list(REMOTE.items()))


def _bad_login(url: str):
    """One failed XML-RPC login from 192.0.2.9; returns the fault (or the error)."""
    proxy = xmlrpc.client.ServerProxy(f"{url}/xmlrpc?authkey={'0' * 64}", transport=_ForwardingTransport())
    try:
        proxy.common.whoami()
    except Exception as exc:  # the fault, or the connection cut off
        return exc
    return None


def _start(tmp_path, overrides):
    path, port = make_config(tmp_path, overrides)
    init(path)
    log_path = str(tmp_path / "server.out")
    proc = spawn(serve_cmd(path), str(tmp_path), log_path)
    wait_for(listening(port), proc, log_path, what="serve listening")
    return path, f"http://127.0.0.1:{port}", proc, log_path


def _slow_call_in_flight(url, proc, log_path):
    """Start a login that Anvil delays (the second failure) and wait until it is in flight."""
    assert isinstance(_bad_login(url), xmlrpc.client.Fault)  # the first failure is answered at once
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_bad_login(url)))
    thread.start()
    # the scrape itself is one request in flight; the delayed login makes two
    wait_for(lambda: (metric(url, "apiserver_requests_in_flight") or 0) >= 2, proc, log_path,
             what="the delayed call in flight")
    return thread, outcome


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_lets_the_call_in_flight_finish_and_exits_0(tmp_path, signum):
    """SIGTERM (and SIGINT) close the listener, the delayed call still gets its fault, the process exits 0."""
    _path, url, proc, log_path = _start(tmp_path, {
        "anvil": {"min_attempts": "1", "base_delay": "4000"}, "core": {"shutdown_timeout": "60"}})
    try:
        thread, outcome = _slow_call_in_flight(url, proc, log_path)
        proc.send_signal(signum)
        thread.join(timeout=60)
        assert proc.wait(timeout=60) == 0, read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert isinstance(outcome[0], xmlrpc.client.Fault) and "Client.Denied" in outcome[0].faultString, outcome
    log = read(log_path)
    assert "waiting up to 60s for 1 request(s) in flight" in log and "apiserver stopped" in log


def test_sigterm_stops_after_shutdown_timeout(tmp_path):
    """A call still running after [core] shutdown_timeout is cut off; the exit is still 0."""
    _path, url, proc, log_path = _start(tmp_path, {
        "anvil": {"min_attempts": "1", "base_delay": "60000", "max_delay": "60000"},
        "core": {"shutdown_timeout": "1"}})
    try:
        thread, outcome = _slow_call_in_flight(url, proc, log_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, read(log_path)
        thread.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not isinstance(outcome[0], xmlrpc.client.Fault), outcome  # cut off, not answered
    assert "1 request(s) still in flight after 1s; stopping anyway" in read(log_path)


def test_sighup_rereads_config_and_reopens_the_log(tmp_path):
    """SIGHUP: a run-time key applies, a restart-needed key is logged so, the log file is reopened,
    and a config that does not validate changes nothing; the server keeps running."""
    path, url, proc, out_path = _start(tmp_path, {"core": {"log_file": "server.log"}})
    log_path = str(tmp_path / "state" / "server.log")
    try:
        assert get(url + "/apnscp.wsdl")[0] == 200
        os.rename(log_path, log_path + ".1")
        rewrite(path, {"soap": {"enabled": "false"}, "core": {"db_threads": "3", "access_log": "true"}})
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(log_path) and "SIGHUP: reloaded" in read(log_path), proc, out_path,
                 what="the reload logged in a new file")
        assert get(url + "/apnscp.wsdl")[0] == 403  # [soap] enabled=false applied at once
        wait_for(lambda: "GET /apnscp.wsdl 403" in read(log_path), proc, out_path, what="the access log turned on")
        log = read(log_path)
        assert "applied: [soap] enabled, [core] access_log" in log
        assert "[core] db_threads changed in" in log and "after a restart" in log
        assert "HTTP API listening" in read(log_path + ".1")

        rewrite(path, {"soap": {"enabled": "true"}, "anvil": {"limit": "many"}})
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "not reloaded" in read(log_path), proc, out_path, what="the refused reload")
        assert "[anvil] limit" in read(log_path)
        assert get(url + "/apnscp.wsdl")[0] == 403  # nothing of the bad file was applied
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_sigterm_flushes_the_security_trail(tmp_path):
    """A failed login recorded just before SIGTERM is in the trail's table after the exit (the
    trail's writer is flushed before the thread pools stop; its own timer waits a second)."""
    import sqlite3

    _path, url, proc, log_path = _start(tmp_path, {})
    try:
        assert isinstance(_bad_login(url), xmlrpc.client.Fault)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(str(tmp_path / "state" / "apiserver.db")) as db:
        rows = db.execute("SELECT address FROM security_events WHERE kind = 'login_failed'").fetchall()
    assert rows == [("192.0.2.9",)], rows


def test_sighup_reads_the_config_file_off_the_reactor_thread(tmp_path, monkeypatch):
    """ApiServer.reload reads and checks config.ini on the blocking pool, then applies a run-time key."""
    from apiserver import service
    from apiserver.testing import PluginTestApp, wait

    threads = []
    real = service.reread_config

    def recording(config, *args):
        threads.append(threading.current_thread())
        return real(config, *args)

    monkeypatch.setattr(service, "reread_config", recording)
    with PluginTestApp(tmp_path, sections={"frontend": {"http_port": "0", "https_port": "0"}}) as test_app:
        app = test_app.app
        path = tmp_path / "config.ini"
        path.write_text(f"[core]\nstate_dir = {app.config.state_dir}\n[soap]\nenabled = false\n")
        app.config.path = str(path)
        server = service.ApiServer(app, observer=None, log_stream=None)
        wait(server.reload())
        assert app.config.get("soap", "enabled") is False
    assert threads and threading.main_thread() not in threads


NAPPING_PLUGIN = '''
import os
import subprocess
import time

from apiserver import hookimpl
from apiserver.module import Module, Role, export


class Nap(Module):
    """A call that takes a while."""

    name = "nap"

    @export(roles=Role.ADMIN)
    def take(self, ctx, seconds: int) -> int:
        """Blocking.  Note the call, sleep SECONDS, answer them."""
        open(os.environ["APISERVER_TEST_NAPPING"], "w").close()
        time.sleep(seconds)
        return seconds


@hookimpl
def apiserver_add_modules(api):
    return [Nap]
'''


def test_sigterm_lets_a_cpcmd_call_in_flight_finish(tmp_path):
    """A call over the cpcmd socket still running at SIGTERM gets its answer; the exit is 0."""
    import subprocess
    import sys

    from tests.ops_support import env
    from tests.test_plugin_loading import make_distribution

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "apiserver-nap", "0.1", "napping_plugin", NAPPING_PLUGIN, entry="nap")
    napping = tmp_path / "napping"
    path, port = make_config(tmp_path, {"core": {"shutdown_timeout": "60"}})
    init(path)
    process_env = dict(env(), APISERVER_TEST_NAPPING=str(napping))
    process_env["PYTHONPATH"] = os.pathsep.join([str(site), process_env["PYTHONPATH"]])
    log_path = str(tmp_path / "server.out")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(serve_cmd(path), stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                                env=process_env)
    try:
        wait_for(listening(port), proc, log_path, what="serve listening")
        call = subprocess.Popen([sys.executable, "-m", "apiserver.cli.cpcmd", "--config", path, "-o", "json",
                                 "nap:take", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=process_env)
        wait_for(napping.exists, proc, log_path, what="the cpcmd call in flight")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = call.communicate(timeout=60)
        assert proc.wait(timeout=60) == 0, read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert call.returncode == 0 and stdout.strip() == "3", (stdout, stderr)


def test_sigint_stops_a_server_started_ignoring_it(tmp_path):
    """Started as `nohup apiserver serve &` does (SIGINT ignored), SIGINT still stops it with status 0."""
    path, port = make_config(tmp_path, {})
    init(path)
    log_path = str(tmp_path / "server.out")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(serve_cmd(path), stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=env(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(listening(port), proc, log_path, what="serve listening")
        # the reactor runs (its signal handlers are in place) once start-up has logged the plugins
        wait_for(lambda: "built-in plugins" in read(log_path), proc, log_path, what="start-up finished")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sighup_names_an_unknown_section_without_a_dash(tmp_path):
    """A config with an unknown section is not reloaded on SIGHUP, and the log names "[bogus]" alone."""
    path, url, proc, log_path = _start(tmp_path, {})
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n[bogus]\nx = 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "not reloaded" in read(log_path), proc, log_path, what="the refused reload")
        line = next(line for line in read(log_path).splitlines() if "not reloaded" in line)
        assert "[bogus]: unknown section" in line and "[bogus] -" not in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
