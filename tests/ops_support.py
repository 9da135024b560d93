"""Helpers for the operations tests: config files, `apiserver init`, serve and twistd processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import APISERVER, BASE_CONFIG, ROOT, ChildBudget, free_port, merge, write_config

TWISTD = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"


def env() -> dict:
    out = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out.pop("APISERVER_CONFIG", None)
    return out


def make_config(tmp_path, overrides=None, https=False) -> tuple:
    """Write a test config in ``tmp_path``; returns (path, http_port)."""
    port = free_port()
    config = merge(BASE_CONFIG, {"frontend": {"http_port": str(port), "https_port": str(free_port()) if https else "0"},
                                 "core": {"state_dir": str(tmp_path / "state")}})
    path = str(tmp_path / "config.ini")
    write_config(path, merge(config, overrides))
    return path, port


def init(path: str) -> str:
    """`apiserver init`; the administrator's key."""
    out = subprocess.run(APISERVER + ["--config", path, "init"], capture_output=True, text=True, cwd=ROOT,
                         env=env(), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    return json.loads(last)["admin_api_key"] if last.startswith("{") else last  # log_format=json: JSON lines


def serve_cmd(path: str) -> list:
    return APISERVER + ["--config", path, "serve"]


def twistd_cmd(path: str) -> list:
    return [TWISTD, "-n", "--pidfile=", "apiserver", "--config", path]


def run_to_end(cmd: list, cwd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command that must exit by itself (a failed start)."""
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env(), timeout=timeout)


def spawn(cmd: list, cwd: str, log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env())


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def wait_for(predicate, process: subprocess.Popen, log_path: str, timeout: float = 30, what: str = "") -> None:
    """Poll a child process until ``predicate()`` is true (readiness polling, not test logic);
    give up once the child used ``timeout`` seconds of its own CPU time (see ChildBudget)."""
    budget = ChildBudget(process, cpu=timeout)
    while (spent := budget.spent()) is None:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} waiting for {what}:\n{read(log_path)}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} after {spent}:\n{read(log_path)}")


def listening(port: int):
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    return check


def get(url: str, headers=None, timeout: float = 10):
    """(status, headers, body) of a GET, HTTP errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def json_lines(text: str) -> list:
    """Every line of ``text`` parsed as JSON (fails on a line that is not one object)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            value = json.loads(line)
            assert isinstance(value, dict), line
            out.append(value)
    return out


def rewrite(path: str, overrides: dict) -> None:
    """Change keys of the config file at ``path`` (the others kept)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    sections = {s: dict(parser.items(s)) for s in parser.sections()}
    write_config(path, merge(sections, overrides))


def metric(url: str, name: str, labels: dict | None = None) -> float | None:
    """The value of sample ``name`` (with ``labels``) scraped from ``url``/metrics, parsed by
    prometheus_client's own text parser; None when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _headers, body = get(url + "/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return None
