"""A real fail2ban for the tests: its own config, socket, pid and database in a temporary folder,
one jail (a name unique to the run) on a test log file, polling backend, and an action that only
writes a file (no firewall is touched)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from tests.conftest import require_debian_tool, stop_process

FAIL_LINE = "auth failure from {ip}\n"


class Fail2banServer:
    """A started fail2ban-server (through ``fail2ban-client -f start``) and its jail."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="apiserver-f2b-")  # short: a socket path has ~100 bytes
        self.jail = f"apitest{uuid.uuid4().hex[:8]}"
        self.socket = os.path.join(self.folder, "f2b.sock")
        self.log = os.path.join(self.folder, "auth.log")
        self.bans = os.path.join(self.folder, "bans")
        conf = os.path.join(self.folder, "conf")
        for sub in ("action.d", "filter.d"):
            os.makedirs(os.path.join(conf, sub))
        files = {
            "fail2ban.conf": f"[Definition]\nloglevel = INFO\nlogtarget = {self.folder}/f2b.log\n"
                             f"socket = {self.socket}\npidfile = {self.folder}/f2b.pid\n"
                             f"dbfile = {self.folder}/f2b.sqlite3\n",
            f"action.d/{self.jail}.conf": "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n"
                                          f'actionban = printf "+<ip>\\n" >> {self.bans}\n'
                                          f'actionunban = printf "-<ip>\\n" >> {self.bans}\n',
            f"filter.d/{self.jail}.conf": "[Definition]\nfailregex = ^auth failure from <HOST>$\n"
                                          "datepattern = {NONE}\n",
            "jail.conf": f"[DEFAULT]\nbackend = polling\nbanaction = {self.jail}\naction = {self.jail}\n"
                         "maxretry = 3\nfindtime = 600\nbantime = 600\n"
                         f"[{self.jail}]\nenabled = true\nfilter = {self.jail}\nlogpath = {self.log}\n",
        }
        for name, text in files.items():
            with open(os.path.join(conf, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        open(self.log, "w").close()
        self.process = subprocess.Popen(["fail2ban-client", "-c", conf, "-s", self.socket, "-p",
                                         f"{self.folder}/f2b.pid", "-f", "start"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait(lambda: "pong" in self.client("ping"), "fail2ban to answer")
        except BaseException:
            self.stop()
            raise

    def client(self, *args: str) -> str:
        done = subprocess.run(["fail2ban-client", "-s", self.socket, *args], capture_output=True, text=True,
                              timeout=30)
        return done.stdout

    def ban(self, ip: str) -> None:
        """Write failures of ``ip`` to the jail's log until fail2ban bans it."""
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(FAIL_LINE.format(ip=ip) * 4)
        self._wait(lambda: self.jail in self.client("banned", ip), f"fail2ban to ban {ip}")

    def ban_all(self, *ips: str) -> None:
        """Write failures of every address in ``ips`` (in that order) to the log, then wait until the
        last one is banned: fail2ban has read the lines of the others by then."""
        with open(self.log, "a", encoding="utf-8") as fh:
            for ip in ips:
                fh.write(FAIL_LINE.format(ip=ip) * 4)
        self._wait(lambda: self.jail in self.client("banned", ips[-1]), f"fail2ban to ban {ips[-1]}")

    @staticmethod
    def _wait(predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout}s for {what}")
            time.sleep(0.1)  # polling another process's state, not test timing logic

    def stop(self) -> None:
        try:
            if os.path.exists(self.socket):
                subprocess.run(["fail2ban-client", "-s", self.socket, "stop"], capture_output=True, timeout=30)
        finally:
            stop_process(self.process)
            shutil.rmtree(self.folder, ignore_errors=True)


def start_fail2ban() -> Fail2banServer:
    """A running :class:`Fail2banServer` (fail2ban installed from Debian when missing)."""
    require_debian_tool("fail2ban-client", ["fail2ban"], check=["fail2ban-client", "-V"], expect=".")
    return Fail2banServer()


@pytest.fixture
def fail2ban():
    """A real fail2ban with one jail (a test log file, no firewall), stopped and removed afterwards
    even when the test fails."""
    server = start_fail2ban()
    yield server
    server.stop()
