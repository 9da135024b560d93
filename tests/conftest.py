"""Shared fixtures: a real apiserver process on free loopback ports, started like a user would."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

import pytest

from tests import hook_proofs

hook_proofs.install_recorder()  # before any test registers a plugin

#: pytester for tests of the test plugins; leaked_pools errors a test that leaves a pool running.
pytest_plugins = ["pytester", "tests.leaked_pools"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APISERVER = [sys.executable, "-m", "apiserver.cli.main"]


#: Base folders of earlier sessions kept (those that failed, for reading their server logs).
KEEP_FAILED_SESSIONS = 3


def pytest_configure(config):
    """Each session's temporary files in a fresh 0711 folder of its own, not in /tmp/pytest-of-<user>.

    Every pytest session that starts on the machine chmods /tmp/pytest-of-<user> back to 0700,
    which also sets the ACL mask there to nothing: the sites' owner and the web server user,
    granted passage by an ACL for a server under test, lose it in the middle of the run (DAV
    answered 500: "Permission denied" on the site's home, whenever another session started).
    """
    if config.option.basetemp is not None or hasattr(config, "workerinput"):
        return
    temp = tempfile.gettempdir()
    _forget_old_sessions(temp)
    folder = tempfile.mkdtemp(prefix="apiserver-tests-", dir=temp)
    os.chmod(folder, 0o711)
    with open(os.path.join(folder, "pid"), "w", encoding="ascii") as fh:
        fh.write(str(os.getpid()))
    config.option.basetemp = os.path.join(folder, "basetemp")
    config.apiserver_temp = folder


def pytest_sessionfinish(session, exitstatus):
    folder = getattr(session.config, "apiserver_temp", None)
    if folder is not None and exitstatus == 0:
        shutil.rmtree(folder, ignore_errors=True)
    _stop_leaked_pools(session.config)


def _stop_leaked_pools(config) -> None:
    """The last resort behind tests/leaked_pools.py (which errors the test that left a pool
    running): pool threads (not daemons) still running would hold the interpreter at exit for
    ever, so name them in the summary and stop their pools."""
    import gc

    from twisted.python.threadpool import ThreadPool

    leaked = [pool for pool in gc.get_objects()
              if isinstance(pool, ThreadPool) and pool.started and (pool.name or "").startswith("apiserver-")]
    if leaked:
        config.get_terminal_writer().line(
            f"warning: {len(leaked)} thread pool(s) left running by a test ({', '.join(p.name for p in leaked)}); "
            "stopped so the run can end: close the harness that started them", yellow=True)
    for pool in leaked:
        pool.stop()


def _forget_old_sessions(temp: str) -> None:
    """Remove the base folders of finished sessions beyond the newest KEEP_FAILED_SESSIONS."""
    found = []
    for name in os.listdir(temp):
        path = os.path.join(temp, name)
        if name.startswith("apiserver-tests-") and os.path.isdir(path):
            try:
                with open(os.path.join(path, "pid"), encoding="ascii") as fh:
                    os.kill(int(fh.read()), 0)
            except (ProcessLookupError, FileNotFoundError, ValueError):
                found.append((os.path.getmtime(path), path))  # its session has ended
            except OSError:
                pass  # still running (another user's), or unreadable: left alone
    for _mtime, path in sorted(found, reverse=True)[KEEP_FAILED_SESSIONS:]:
        shutil.rmtree(path, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--repeat", type=int, default=1, metavar="N",
                     help="run each selected test N times (to find tests that fail by chance)")


def pytest_generate_tests(metafunc):
    """With ``--repeat N`` the selected tests run N times, all once then again: ``test_x[run3-of-200]``."""
    count = metafunc.config.getoption("repeat")
    if count > 1:
        metafunc.fixturenames.append("repeat_run")
        metafunc.parametrize("repeat_run", range(1, count + 1), ids=lambda n: f"run{n}-of-{count}", scope="session")


#: Config every test server starts from: fast enough hashing, no real mail relay, and the
#: local test process treated as a trusted proxy so tests can act as remote clients with
#: ``X-Forwarded-For: 192.0.2.x`` (documentation addresses, never contacted).
BASE_CONFIG = {
    "frontend": {"bind": "127.0.0.1"},
    "core": {"http_trusted_forward": "127.0.0.1", "log_format": "text"},
    "auth": {"pbkdf2_iterations": "20000"},
    "mail": {"enabled": "false"},
    # One shared owner for every site: tests that make real system accounts turn them on with a
    # unique [web] account_prefix (tests/host/support.py), which removes what they made.
    "web": {"system_accounts": "false"},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 15, group: bool = False) -> None:
    """SIGTERM ``process`` (its whole process group with ``group``), SIGKILL it after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    send = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def run_in_threads(fn, arguments, timeout: Optional[float] = None) -> list:
    """Call ``fn(*args)`` for each of ``arguments`` on threads started together; the exceptions they raised."""
    errors = []

    def call(args):
        try:
            fn(*args)
        except Exception as exc:  # collected: the caller asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(args,)) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors


def write_config(path: str, sections: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for section, keys in sections.items():
            fh.write(f"[{section}]\n")
            for key, value in keys.items():
                fh.write(f"{key} = {value}\n")
            fh.write("\n")


def merge(base: dict, overrides: Optional[dict]) -> dict:
    out = {s: dict(k) for s, k in base.items()}
    for section, keys in (overrides or {}).items():
        out.setdefault(section, {}).update(keys)
    return out


@dataclasses.dataclass
class RunningServer:
    """A started ``apiserver serve`` process and how to reach it."""

    url: str                 # http://127.0.0.1:PORT (no trailing slash)
    https_url: Optional[str]
    admin_key: str
    config_path: str
    state_dir: str
    socket_path: str
    log_path: str
    process: subprocess.Popen
    env: dict

    @property
    def soap_url(self) -> str:
        return f"{self.url}/soap?authkey={self.admin_key}"

    @property
    def wsdl_url(self) -> str:
        return f"{self.url}/apnscp.wsdl"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        stop_process(self.process)

    def restart(self) -> None:
        """Stop and start the same server again (same config, state and ports)."""
        self.stop()
        self.process = _spawn_serve(self.config_path, self.log_path, self.env)
        _wait_listening(self)


def _spawn_serve(config_path: str, log_path: str, env: dict) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(APISERVER + ["--config", config_path, "serve"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ChildBudget:
    """How long to wait for a child process to get ready: ``cpu`` seconds of *its own* CPU time.

    On a loaded machine a start-up that needs 3 s of CPU can take a minute of wall time, so a
    wall-clock timeout fails by chance; the child's CPU time is what it spent on its start-up
    however the cores were shared.  ``wall`` bounds a child that waits without using the CPU.
    """

    def __init__(self, process: subprocess.Popen, cpu: float = 30.0, wall: float = 600.0):
        self.process, self.cpu, self.wall = process, cpu, wall
        self.started = time.monotonic()

    def spent(self) -> Optional[str]:
        """None while within budget, else what was spent (for the error message)."""
        used, waited = cpu_seconds(self.process.pid), time.monotonic() - self.started
        if used > self.cpu or waited > self.wall:
            return f"{used:.1f}s of its CPU time in {waited:.0f}s"
        return None


def _wait_listening(server: RunningServer) -> None:
    host, port = server.url.rsplit("/", 1)[-1].split(":")
    budget = ChildBudget(server.process)
    while (spent := budget.spent()) is None:
        if server.process.poll() is not None:
            raise RuntimeError(f"apiserver serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
            if os.path.exists(server.socket_path):
                return
        except OSError:
            pass
        time.sleep(0.05)  # readiness polling of a child process, not test timing logic
    raise RuntimeError(f"apiserver did not start listening after {spent}:\n{server.log()}")


def start_server(tmp_dir: str, overrides: Optional[dict] = None, https: bool = False) -> RunningServer:
    """``apiserver init`` then ``apiserver serve`` in ``tmp_dir`` with ``overrides`` to the config."""
    http_port = free_port()
    https_port = free_port() if https else 0
    state_dir = os.path.join(tmp_dir, "state")
    config = merge(BASE_CONFIG, {"frontend": {"http_port": str(http_port), "https_port": str(https_port)},
                                 "core": {"state_dir": state_dir}})
    config = merge(config, overrides)
    config_path = os.path.join(tmp_dir, "config.ini")
    write_config(config_path, config)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("APISERVER_CONFIG", None)
    init = subprocess.run(APISERVER + ["--config", config_path, "init"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    if init.returncode != 0:
        raise RuntimeError(f"apiserver init failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
    admin_key = init.stdout.strip().splitlines()[-1].strip()
    if admin_key.startswith("{"):  # [core] log_format=json: init's lines are JSON too
        admin_key = json.loads(admin_key)["admin_api_key"]
    log_path = os.path.join(tmp_dir, "server.log")
    server = RunningServer(
        url=f"http://127.0.0.1:{http_port}",
        https_url=f"https://127.0.0.1:{https_port}" if https else None,
        admin_key=admin_key, config_path=config_path, state_dir=state_dir,
        socket_path=os.path.join(state_dir, config.get("core", {}).get("cli_socket", "apiserver.sock")),
        log_path=log_path,
        process=_spawn_serve(config_path, log_path, env), env=env,
    )
    try:
        _wait_listening(server)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture
def server_factory(tmp_path):
    """Start servers with config overrides: ``server_factory({"anvil": {"limit": "5"}}, https=True)``."""
    started = []

    def factory(overrides: Optional[dict] = None, https: bool = False) -> RunningServer:
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        server = start_server(str(directory), overrides, https=https)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def running_server():
    """One server per test module on the default test config (HTTP and HTTPS), in a folder of its
    own under /tmp: the sites' accounts work on their files as themselves and must pass the folders
    above state_dir (pytest's own are 0700, and every pytest session started on the machine makes
    them so again, clearing ACLs granted there)."""
    directory = tempfile.mkdtemp(prefix="apiserver-e2e-", dir="/tmp")
    os.chmod(directory, 0o755)
    try:
        server = start_server(directory, https=True)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def php():
    """The PHP CLI with the soap extension, installed from Debian when missing."""
    return require_debian_tool("php", ["php-cli", "php-soap", "php-xmlrpc"], check=["php", "-m"], expect="soap")


@pytest.fixture(scope="session")
def perl_soap_lite():
    """Perl with SOAP::Lite and XMLRPC::Lite, installed from Debian when missing."""
    return require_debian_tool("perl", ["libsoap-lite-perl", "libxmlrpc-lite-perl"],
                               check=["perl", "-MSOAP::Lite", "-MXMLRPC::Lite", "-e", "print 'ok'"], expect="ok")


def require_debian_tool(binary: str, packages: list, check: list, expect: str) -> str:
    """Return the tool's path, installing ``packages`` with apt-get when running as root."""

    def present() -> bool:
        try:
            out = subprocess.run(check, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0 and expect in out.stdout

    if not present() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, capture_output=True, timeout=900)
    if not present():
        pytest.fail(f"{binary} with {', '.join(packages)} is required for this test and could not be installed")
    return shutil.which(binary)


@pytest.fixture(autouse=True)
def hook_proof(request):
    """A test listed in tests/hook_proofs.py as a hook's proof fails unless a test plugin's
    implementation of that hook was called while it ran (its fixtures included)."""
    hook_proofs.CALLED.clear()
    yield
    test = f"{request.node.path.relative_to(hook_proofs.TESTS)}::{request.node.originalname}"
    dump = os.environ.get("HOOK_PROOFS_DUMP")
    if dump:
        with open(dump, "a") as fh:
            fh.write(f"{test} {' '.join(sorted(hook_proofs.CALLED))}\n")
    missing = [hook for hook in hook_proofs.proofs_of(test) if hook not in hook_proofs.CALLED]
    if missing:
        pytest.fail(f"{test} is the proof of {', '.join(missing)} (tests/hook_proofs.py) but no test "
                    "plugin implementing it was called", pytrace=False)
