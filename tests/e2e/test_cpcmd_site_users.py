"""cpcmd as a site's system user through a real SSH login (issue 19 item 5).

A server with system accounts; an ``sshd`` the test starts on a loopback port with keys it makes;
the site's users log in with ``ssh`` (from 127.0.0.1, or from 127.0.0.2 with ``ssh -b``) and run
the real ``cpcmd`` over the local socket.  The server knows the caller from the kernel: its uid
(``SO_PEERCRED``) and the address of its SSH session (its process ancestry), so gate CLI's IP
restrictions apply to where the user logged in from, whatever the environment says.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import ROOT, free_port, start_server, stop_process
from tests.e2e.clients.dav_clients import add_site, xmlrpc_call
from tests.host.support import remove_accounts_with, requires_root

pytestmark = requires_root

DOMAIN, ADMIN, PASSWORD = "shell.example.com", "shelladmin", "Shell-passw0rd"
USER, USER_PASSWORD = "carol", "Carol-passw0rd"


def _sshd() -> str:
    path = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.access(path, os.X_OK):
        pytest.skip("openssh-server is not installed (scripts/test.sh installs it)")
    return path


@pytest.fixture(scope="module")
def place():
    """A folder every account may pass: the server's state, keys, cpcmd's config."""
    top = tempfile.mkdtemp(prefix="cpcmd-users-", dir="/tmp")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def server(place):
    """System accounts on (a unique prefix, removed afterwards); the cpcmd socket in its default place
    (state_dir, which site users may pass with system accounts on)."""
    prefix = "t" + secrets.token_hex(4)
    running = start_server(place, {"web": {"system_accounts": "true", "account_prefix": prefix}})
    try:
        sid = add_site(running, DOMAIN, ADMIN, PASSWORD)
        xmlrpc_call(running, "user_add", USER, USER_PASSWORD, sid=sid)
        xmlrpc_call(running, "admin_edit_site", DOMAIN, {"ssh.enabled": True}, key=running.admin_key)
        running.sid = sid
        running.cpcmd_config = os.path.join(place, "cpcmd.ini")
        with open(running.cpcmd_config, "w") as fh:
            fh.write(f"[core]\nstate_dir = {running.state_dir}\n")  # the socket's default place in it
        os.chmod(running.cpcmd_config, 0o644)
        yield running
    finally:
        running.stop()
        remove_accounts_with(prefix)


def host_name(server, user: str) -> str:
    site_dir = os.path.basename(os.path.realpath(os.path.join(server.state_dir, "sites", DOMAIN)))
    (entry,) = [e for e in pwd.getpwall() if e.pw_name.endswith(f"-{user}.{site_dir[4:]}")]
    return entry.pw_name


def _reach_python(users: list) -> list:
    """Let ``users`` run this test's Python and import apiserver (search ACLs on the folders that lack
    o+x: /root holds pyenv here); the ACLs given, to take back."""
    given = []
    for target in (os.path.realpath(sys.executable), os.path.realpath(ROOT), os.path.realpath(sys.prefix)):
        path = os.path.dirname(target) if os.path.isfile(target) else target
        while path != "/":
            if not os.stat(path).st_mode & 0o001:
                for user in users:
                    subprocess.run(["setfacl", "-m", f"u:{user}:x", path], check=True)
                    given.append((path, user))
            path = os.path.dirname(path)
    return given


@pytest.fixture(scope="module")
def sshd(server, place):
    """``ssh(user, command, source)``: a real SSH login of a site user to an sshd on a loopback port."""
    binary = _sshd()
    keys = os.path.join(place, "keys")
    os.mkdir(keys, 0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(place, "host_key")], check=True)
    client_key = os.path.join(place, "client_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", client_key], check=True)
    users = [host_name(server, ADMIN), host_name(server, USER)]
    for user in users:
        shutil.copy(client_key + ".pub", os.path.join(keys, user))
        os.chmod(os.path.join(keys, user), 0o644)
    port = free_port()
    config = os.path.join(place, "sshd_config")
    with open(config, "w") as fh:
        fh.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {place}/host_key\nPidFile {place}/sshd.pid\n"
                 f"AuthorizedKeysFile {keys}/%u\nStrictModes no\nPasswordAuthentication no\n"
                 "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", 0o755, exist_ok=True)  # OpenSSH's privilege separation folder
    process = subprocess.Popen([binary, "-D", "-e", "-f", config], stderr=subprocess.PIPE)
    given = _reach_python(users + ["nobody"])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"sshd did not start: {process.stderr.read(4000) if process.poll() else ''}")
                time.sleep(0.1)

        def ssh(user: str, command: str, source: str = "127.0.0.1") -> subprocess.CompletedProcess:
            return subprocess.run(["ssh", "-i", client_key, "-p", str(port), "-b", source, "-o", "BatchMode=yes",
                                   "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                   "-o", "LogLevel=ERROR", f"{host_name(server, user)}@127.0.0.1", command],
                                  capture_output=True, text=True, timeout=120)

        yield ssh
    finally:
        stop_process(process)
        for path, user in given:
            subprocess.run(["setfacl", "-x", f"u:{user}", path], capture_output=True)


def cpcmd_line(server, *argv: str, env: str = "") -> str:
    """The shell command that runs the real cpcmd over the local socket."""
    words = " ".join(f"'{word}'" for word in argv)
    return f"cd '{ROOT}' && {env} '{sys.executable}' -m apiserver.cli.cpcmd --config '{server.cpcmd_config}' {words}"


def test_a_site_user_logged_in_over_ssh_calls_as_itself(server, sshd):
    """cpcmd common:whoami over SSH answers as that user (and as the site's administrator for its account)."""
    done = sshd(USER, cpcmd_line(server, "-o", "json", "common:whoami"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"role": "user", "username": USER, "site": DOMAIN}
    done = sshd(ADMIN, cpcmd_line(server, "-o", "json", "common:whoami"))
    assert json.loads(done.stdout)["username"] == ADMIN and json.loads(done.stdout)["role"] == "site"
    denied = sshd(USER, cpcmd_line(server, "-d", DOMAIN, "common:whoami"))
    assert denied.returncode != 0 and "only the appliance administrator" in denied.stderr


def test_a_cli_ip_restriction_applies_to_the_ssh_client_address(server, sshd):
    """Restricted to 127.0.0.2 at gate CLI: the login from 127.0.0.2 may call, the one from 127.0.0.1 is refused,
    even with SSH_CONNECTION claiming 127.0.0.2; the restriction removed, both may call again."""
    assert sshd(USER, cpcmd_line(server, "auth:restrict-ip", "127.0.0.2", "CLI")).stdout.strip() == "true"
    try:
        allowed = sshd(USER, cpcmd_line(server, "common:whoami"), source="127.0.0.2")
        assert allowed.returncode == 0 and USER in allowed.stdout, allowed.stderr
        refused = sshd(USER, cpcmd_line(server, "common:whoami"))
        assert refused.returncode != 0 and "Client.Denied" in refused.stderr, refused
        forged = sshd(USER, cpcmd_line(server, "common:whoami",
                                       env="SSH_CONNECTION='127.0.0.2 50000 127.0.0.1 22' SSH_CLIENT=127.0.0.2"))
        assert forged.returncode != 0 and "Client.Denied" in forged.stderr, forged
        # a process started outside any SSH session (a console) is loopback: refused too
        console = subprocess.run(["runuser", "-u", host_name(server, USER), "--", "sh", "-c",
                                  cpcmd_line(server, "common:whoami")], capture_output=True, text=True, timeout=60)
        assert console.returncode != 0 and "Client.Denied" in console.stderr, console
    finally:
        done = sshd(USER, cpcmd_line(server, "auth:remove-ip-restriction", "127.0.0.2", "CLI"), source="127.0.0.2")
        assert done.returncode == 0, done.stderr
    assert sshd(USER, cpcmd_line(server, "common:whoami")).returncode == 0


def test_a_local_account_that_is_no_sites_user_is_refused_by_name(server, sshd):
    """nobody (uid 65534) on the socket: refused, the message naming its uid and what to use instead."""
    done = subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", cpcmd_line(server, "common:whoami")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "uid 65534 is neither root nor the system user of a site's account" in done.stderr, done.stderr


def test_a_suspended_sites_users_are_refused_at_the_cli_and_over_ssh(server, sshd):
    """Suspended: SSH login refused, cpcmd on the socket told the site is suspended; activated: both work again."""
    assert xmlrpc_call(server, "admin_deactivate_site", DOMAIN, {"reason": "Overdue on Payment"},
                       key=server.admin_key) is True
    try:
        login = sshd(USER, cpcmd_line(server, "common:whoami"))
        assert login.returncode != 0 and USER not in login.stdout, login
        assert pwd.getpwnam(host_name(server, USER)).pw_shell.endswith("nologin")
        console = subprocess.run(["runuser", "-u", host_name(server, USER), "--", "sh", "-c",
                                  cpcmd_line(server, "common:whoami")], capture_output=True, text=True, timeout=60)
        assert console.returncode != 0 and f"site {DOMAIN} is suspended" in console.stderr, console
    finally:
        assert xmlrpc_call(server, "admin_activate_site", DOMAIN, key=server.admin_key) is True
    done = sshd(USER, cpcmd_line(server, "-o", "json", "common:whoami"))
    assert done.returncode == 0 and json.loads(done.stdout)["username"] == USER, done.stderr
