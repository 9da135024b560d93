"""Test support: a real Apache 2.4 (Debian apache2) in the foreground, a child of the test, on a free
loopback port, for the tests that check what Apache does with the files the server wrote."""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import time
from typing import Optional

from tests.conftest import free_port, stop_process

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"


def load_modules(names) -> str:
    """The LoadModule lines of Debian's ``mod_<name>.so`` for each of ``names``."""
    return "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in names)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class ApacheServer:
    """One Apache in the foreground, a child of the test process, on a free 127.0.0.1 port, running as
    ``user``; ``directory`` holds its configuration (the common head, then ``config``: modules, MPM,
    folders), pid file, mutexes and ``error.log``.  Started (checked with ``apache2 -t``) and listening
    when made; ``die_with_parent``: SIGTERM when the test process dies."""

    def __init__(self, directory: str, config: str, user: str, die_with_parent: bool = False):
        self.directory = directory
        self.port = free_port()
        self.error_log = os.path.join(directory, "error.log")
        head = f"""ServerRoot {directory}
Listen 127.0.0.1:{self.port}
ServerName 127.0.0.1
PidFile {directory}/httpd.pid
ErrorLog {self.error_log}
LogLevel warn
DefaultRuntimeDir {directory}
Mutex file:{directory} default
User {user}
Group {user}
"""
        self.config_path = os.path.join(directory, "httpd.conf")
        with open(self.config_path, "w", encoding="utf-8") as fh:
            fh.write(head + config)
        check = subprocess.run([APACHE, "-t", "-f", self.config_path], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        # Its own session: teardown ends exactly this Apache's process group, nothing else.
        self.process = subprocess.Popen([APACHE, "-f", self.config_path, "-DFOREGROUND"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_die_with_parent if die_with_parent else None)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"apache2 exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)  # readiness polling of a child process
        self.stop()
        raise RuntimeError(f"apache2 did not listen within 20s:\n{self.log()}")

    def get(self, path: str, headers: Optional[dict] = None, timeout: float = 10) -> tuple[int, bytes]:
        """(status, body) of a GET of ``path``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def log(self) -> str:
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_process(self.process, timeout=10, group=True)
