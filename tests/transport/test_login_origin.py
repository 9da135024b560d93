"""Where a local caller logged in from: its ancestry up to a root sshd, that process's TCP peer.

A /proc-shaped folder per test (stat, status, exe, fd/ links, net/tcp{,6}) gives each case exactly;
the last tests read the real /proc, and tests/e2e/test_cpcmd_site_users.py logs in through a real sshd."""

from __future__ import annotations

import os

import pytest

from apiserver.transport.login_origin import LOOPBACK, login_address

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


class FakeProc:
    """A /proc with the processes and TCP sockets a test adds."""

    def __init__(self, root):
        self.root = str(root)
        self.tcp = {"tcp": [], "tcp6": []}

    def process(self, pid, ppid, uid, exe, comm=None, sockets=()):
        base = os.path.join(self.root, str(pid))
        os.makedirs(os.path.join(base, "fd"))
        os.makedirs(os.path.join(base, "net"), exist_ok=True)
        comm = comm or os.path.basename(exe)
        with open(os.path.join(base, "stat"), "w") as fh:
            fh.write(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0\n")
        with open(os.path.join(base, "status"), "w") as fh:
            fh.write(f"Name:\t{comm}\nPPid:\t{ppid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        os.symlink(exe, os.path.join(base, "exe"))
        for number, inode in enumerate(sockets, 3):
            os.symlink(f"socket:[{inode}]", os.path.join(base, "fd", str(number)))

    def connection(self, table, local, remote, state, inode):
        self.tcp[table].append(f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0"
                               f"        0 {inode} 1 0000000000000000 20 4 30 10 -1\n")

    def write(self):
        for pid in os.listdir(self.root):
            for table, lines in self.tcp.items():
                with open(os.path.join(self.root, pid, "net", table), "w") as fh:
                    fh.write(HEADER + "".join(lines))


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path)


def ssh_session(proc, client_hex="0702000C:D431", monitor_uid=0, table="tcp", user_exe="/usr/sbin/sshd"):
    """listener 100 (root) -> monitor 200 -> user's sshd 300 -> shell 400 -> cpcmd 500, on socket 77."""
    proc.process(100, 1, 0, "/usr/sbin/sshd", sockets=[11])
    proc.process(200, 100, monitor_uid, "/usr/sbin/sshd", sockets=[77, 12])
    proc.process(300, 200, 1001, user_exe, sockets=[77])
    proc.process(400, 300, 1001, "/bin/bash")
    proc.process(500, 400, 1001, "/usr/bin/python3.11", comm="cpcmd")
    proc.connection(table, "0100007F:0016" if table == "tcp" else "00000000000000000000000001000000:0016",
                    "00000000:0000" if table == "tcp" else "0" * 32 + ":0000", "0A", 11)
    proc.connection(table, "0100007F:0016" if table == "tcp" else "00000000000000000000000001000000:0016",
                    client_hex, "01", 77)
    proc.write()


def test_an_ssh_login_is_placed_at_its_clients_address(proc):
    """cpcmd under bash under an SSH session: the address is the session connection's peer (192.0.2.12)."""
    ssh_session(proc, client_hex="0C0200C0:D431")
    assert login_address(500, proc.root) == "192.0.2.12"


def test_ipv6_and_ipv4_mapped_peers(proc, tmp_path):
    """An IPv6 client (2001:db8::5) and an IPv4-mapped one (::ffff:192.0.2.9 -> 192.0.2.9)."""
    ssh_session(proc, client_hex="B80D0120000000000000000005000000:D431", table="tcp6")
    assert login_address(500, proc.root) == "2001:db8::5"
    mapped = FakeProc(tmp_path / "mapped")
    ssh_session(mapped, client_hex="0000000000000000FFFF0000090200C0:D431", table="tcp6")
    assert login_address(500, mapped.root) == "192.0.2.9"


def test_an_sshd_the_user_runs_is_passed_over(proc):
    """A 'monitor' running as the user (an sshd it started, or a renamed program) proves nothing: loopback."""
    ssh_session(proc, client_hex="0C0200C0:D431", monitor_uid=1001)
    assert login_address(500, proc.root) == LOOPBACK


def test_a_root_process_named_sshd_but_not_sshd_is_passed_over(proc):
    """Only the sshd executable counts, not a command name: a root 'sshd' that runs python is no session."""
    proc.process(200, 1, 0, "/usr/bin/python3.11", comm="sshd", sockets=[77])
    proc.process(500, 200, 1001, "/usr/bin/python3.11", comm="cpcmd")
    proc.connection("tcp", "0100007F:0016", "0C0200C0:D431", "01", 77)
    proc.write()
    assert login_address(500, proc.root) == LOOPBACK


def test_a_listener_alone_is_not_a_session(proc):
    """A root sshd holding only its listening socket (state 0A) is passed; nothing above it: loopback."""
    proc.process(100, 1, 0, "/usr/sbin/sshd", sockets=[11])
    proc.process(500, 100, 1001, "/bin/sh")
    proc.connection("tcp", "0100007F:0016", "00000000:0000", "0A", 11)
    proc.write()
    assert login_address(500, proc.root) == LOOPBACK


def test_no_ssh_ancestor_is_a_local_login_and_a_gone_process_is_unknown(proc):
    """A console shell is loopback; a pid that does not exist is None (the caller cannot be placed)."""
    proc.process(400, 1, 1001, "/bin/bash")
    proc.process(500, 400, 1001, "/usr/bin/python3.11")
    proc.write()
    assert login_address(500, proc.root) == LOOPBACK
    assert login_address(999, proc.root) is None
    assert login_address(None, proc.root) is None


def test_the_real_proc():
    """On the real /proc: this process has an answer, a missing pid none, init is loopback."""
    assert login_address(os.getpid()) is not None
    assert login_address(2 ** 22 + 1) is None
    assert login_address(1) == LOOPBACK
