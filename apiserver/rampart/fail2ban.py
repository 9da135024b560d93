"""fail2ban, through its own client: ``fail2ban-client -s SOCKET COMMAND``.

fail2ban's socket speaks pickled Python, not something to re-implement; its client is the
supported way in.  Every method blocks (a process per command, about 0.15 s): call them on the
blocking pool.  When ``[rampart] fail2ban_socket`` is empty or no fail2ban listens there, fail2ban
is not running on this host and has no jails; a client that fails otherwise is a
:class:`~apiserver.errors.ServerError` whose detail goes to the log only.
"""

from __future__ import annotations

import ast
import os
import subprocess
import threading
import time
from typing import Optional

from twisted.logger import Logger

from apiserver.errors import ServerError

log = Logger(namespace="apiserver.rampart.fail2ban")

#: Seconds a fail2ban command may take.
COMMAND_TIMEOUT = 20
#: Seconds the list of jails is reused.
JAILS_TTL = 10.0
_NOT_RUNNING = ("Failed to access socket path", "Is fail2ban running", "Connection refused")


class Fail2banDown(Exception):
    """No fail2ban answers on the socket."""


class Fail2ban:
    """fail2ban at ``socket_path`` through the client program ``client`` (see the module docstring)."""

    def __init__(self, client: str, socket_path: str, timeout: float = COMMAND_TIMEOUT):
        self.client = client
        self.socket_path = socket_path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._jails: Optional[tuple] = None  # (read at, [names])

    @property
    def configured(self) -> bool:
        return bool(self.socket_path)

    def running(self) -> bool:
        """Blocking.  fail2ban answers on the socket."""
        if not self.configured or not os.path.exists(self.socket_path):
            return False
        try:
            return "pong" in self._run("ping")
        except Fail2banDown:
            return False

    def jails(self) -> list:
        """Blocking.  The names of fail2ban's jails, sorted; [] when fail2ban is not running."""
        with self._lock:
            cached = self._jails
        if cached is not None and time.monotonic() - cached[0] < JAILS_TTL:
            return list(cached[1])
        names: list = []
        if self.configured and os.path.exists(self.socket_path):
            try:
                names = _jail_list(self._run("status"))
            except Fail2banDown:
                names = []
        with self._lock:
            self._jails = (time.monotonic(), names)
        return list(names)

    def banned_in(self, address: str) -> list:
        """Blocking.  The jails that ban ``address`` now."""
        if not self.jails():
            return []
        out = self._quiet("banned", address)
        try:
            value = ast.literal_eval(out.strip())
        except (ValueError, SyntaxError):
            log.error("fail2ban-client banned answered {answer!r}", answer=out[:200])
            raise ServerError("fail2ban answered something unexpected; the answer was logged") from None
        found = value[0] if value and isinstance(value[0], list) else value
        return sorted(str(name) for name in found)

    def unban(self, address: str, jail: Optional[str] = None) -> None:
        """Blocking.  Lift ``address``'s ban in ``jail`` (None: every jail); nothing when it has none."""
        if not self.jails():
            return
        if jail is None:
            self._quiet("unban", address)
        else:
            self._quiet("set", jail, "unbanip", address)

    def ignore(self, address: str, add: bool = True) -> None:
        """Blocking.  Add ``address`` to (or remove it from) every jail's ignore list: fail2ban never
        bans it there.  (Kept by fail2ban until it restarts.)"""
        for jail in self.jails():
            try:
                self._quiet("set", jail, "addignoreip" if add else "delignoreip", address)
            except ServerError:
                if add:
                    raise  # a removal of what is not there is no failure

    def forget_jails(self) -> None:
        """Read the jail list again next time."""
        with self._lock:
            self._jails = None

    # --- internals ---------------------------------------------------------------------------
    def _quiet(self, *args: str) -> str:
        try:
            return self._run(*args)
        except Fail2banDown:
            self.forget_jails()
            raise ServerError("fail2ban stopped answering; try again") from None

    def _run(self, *args: str) -> str:
        command = [self.client, "-s", self.socket_path, *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ServerError(f"{self.client} is missing: install fail2ban or set [rampart] fail2ban_client") from None
        except subprocess.TimeoutExpired:
            log.error("fail2ban-client {args} took longer than {timeout}s", args=" ".join(args[:2]),
                      timeout=self.timeout)
            raise ServerError("fail2ban did not answer in time") from None
        if done.returncode != 0:
            error = (done.stderr or done.stdout).strip()
            if any(marker in error for marker in _NOT_RUNNING):
                raise Fail2banDown(error)
            log.error("fail2ban-client {args} failed ({code}): {error}", args=" ".join(args[:2]),
                      code=done.returncode, error=error[-500:])
            raise ServerError("fail2ban refused the command; the reason was logged")
        return done.stdout


def _jail_list(status: str) -> list:
    """The names of ``fail2ban-client status``'s "Jail list:" line."""
    for line in status.splitlines():
        if "Jail list:" in line:
            names = line.split("Jail list:", 1)[1]
            return sorted(name.strip() for name in names.split(",") if name.strip())
    return []
