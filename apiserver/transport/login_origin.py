"""Where a local process's user logged in from, as the kernel knows it: its SSH connection's peer.

Blocking (reads ``/proc``).  A cpcmd caller's address for Anvil and IP restrictions is found from
its process, never from what it says (``SSH_CONNECTION`` and every other variable are the
caller's to set):

1. walk the caller's ancestry (``/proc/<pid>/stat``'s parent pid) up to init;
2. the first ancestor that is the SSH server (its executable is ``sshd`` or ``sshd-session``)
   *running as root* is the session's privileged monitor: a user cannot start a root process, so
   it cannot plant one in its own ancestry (a process renamed ``sshd``, or an ``sshd`` the user
   runs itself, runs as the user and is passed over);
3. that process's established TCP socket (its descriptors' socket inodes matched against its own
   ``/proc/<pid>/net/tcp`` and ``tcp6``) is the client's connection: its remote address is the
   answer.

No such ancestor (a console, cron, a process the user detached from its session) is a local
login: :data:`LOOPBACK`.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Optional

#: The address of a caller that did not come through SSH.
LOOPBACK = "127.0.0.1"
#: Executables of OpenSSH's server processes (``sshd-session`` since OpenSSH 9.8).
SSHD_NAMES = frozenset({"sshd", "sshd-session"})
#: /proc/net/tcp's state of an established connection.
_ESTABLISHED = "01"
#: Ancestors looked at, at most (pid namespaces nest; a loop in /proc cannot happen, but bounded anyway).
MAX_DEPTH = 256


def parent_and_uid(pid: int, proc: str = "/proc") -> Optional[tuple]:
    """``(parent pid, real uid)`` of ``pid``, or None when it is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as fh:
            stat = fh.read()
        with open(f"{proc}/{pid}/status", "rb") as fh:
            status = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces and ')': the fields follow the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith(b"Uid:"))
    return int(fields[1]), uid


def is_sshd(pid: int, proc: str = "/proc") -> bool:
    """Whether ``pid`` runs the SSH server's executable (not merely a process that calls itself so)."""
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return False
    return os.path.basename(exe.removesuffix(" (deleted)")) in SSHD_NAMES


def socket_inodes(pid: int, proc: str = "/proc") -> set:
    """The inodes of the sockets ``pid`` holds open."""
    inodes = set()
    try:
        names = os.listdir(f"{proc}/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{proc}/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.add(int(target[8:-1]))
    return inodes


def _hex_address(text: str) -> str:
    """A /proc/net/tcp{,6} address (``0100007F:0016``) -> its IP address as text (IPv4-mapped -> IPv4)."""
    host = text.split(":")[0]
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(packed)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def connection_peer(pid: int, proc: str = "/proc") -> Optional[str]:
    """The remote address of an established TCP connection ``pid`` holds, or None."""
    inodes = socket_inodes(pid, proc)
    if not inodes:
        return None
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/{pid}/net/{table}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _ESTABLISHED and int(fields[9]) in inodes:
                return _hex_address(fields[2])
    return None


def login_address(pid: Optional[int], proc: str = "/proc") -> Optional[str]:
    """Blocking.  The address the process ``pid`` logged in from: its SSH session's client, else
    :data:`LOOPBACK` (see the module's docstring); None when ``pid`` is unknown or already gone
    (whoever holds the connection now cannot be placed)."""
    if pid is None or pid <= 0 or parent_and_uid(pid, proc) is None:
        return None
    seen = 0
    while pid > 1 and seen < MAX_DEPTH:
        seen += 1
        found = parent_and_uid(pid, proc)
        if found is None:
            return LOOPBACK
        parent, uid = found
        if uid == 0 and is_sshd(pid, proc):
            peer = connection_peer(pid, proc)
            if peer is not None:
                return peer
        pid = parent
    return LOOPBACK
