"""``/dav/`` of a running server whose sites are real system accounts (issue 19 item 4).

Each request acts with the file-system identity of its account: what a site's administrator or
user makes belongs to that system user, and the attack of issue 19 - a site administrator's web
application swapping a folder it may write for a link to another site's document root while its
administrator sends DAV MOVE and DELETE - is replayed over HTTP against real accounts, the swap
run *as that administrator* (``runuser``): the kernel refuses every attempt that wins the race.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import start_server
from tests.dav_support import RACE_SWAPPER, real_folder_back_with_a_decoy
from tests.e2e.clients.dav_clients import Dav, add_site, xmlrpc_call
from tests.host.support import remove_accounts_with, requires_root

pytestmark = requires_root

A, A_ADMIN, A_PASSWORD = "victim-free.example.com", "attacker", "Attack-passw0rd"
B, B_ADMIN, B_PASSWORD = "victim.example.com", "victim", "Victim-passw0rd"
USER, USER_PASSWORD = "bob", "Bob-passw0rd"
SECRET = b"define('DB_PASSWORD', 'the-victims-secret');"
TRIES = 500  # MOVEs, and as many DELETEs (tests/dav/test_dav_actas.py replays 3,000 in process)


@pytest.fixture(scope="module")
def prefix():
    """A unique account prefix for this module; every account made with it is removed afterwards."""
    value = "t" + secrets.token_hex(4)
    yield value
    remove_accounts_with(value)


@pytest.fixture(scope="module")
def server(prefix):
    """A server with system accounts on, two sites and a user of the first; its state in a folder
    every account may pass (pytest's own are 0700)."""
    top = tempfile.mkdtemp(prefix="dav-accounts-", dir="/tmp")
    os.chmod(top, 0o755)
    running = start_server(top, {"web": {"system_accounts": "true", "account_prefix": prefix}})
    try:
        sid = add_site(running, A, A_ADMIN, A_PASSWORD)
        add_site(running, B, B_ADMIN, B_PASSWORD)
        xmlrpc_call(running, "user_add", USER, USER_PASSWORD, sid=sid)
        yield running
    finally:
        running.stop()
        shutil.rmtree(top, ignore_errors=True)


def docroot(server, domain: str) -> str:
    return os.path.join(os.path.realpath(os.path.join(server.state_dir, "sites", domain)), "fst/var/www/html")


def host_user(server, domain: str, user: str) -> pwd.struct_passwd:
    """The system user of ``user`` of ``domain`` (``<prefix>-<user>.<N>``)."""
    site_dir = os.path.basename(os.path.realpath(os.path.join(server.state_dir, "sites", domain)))
    matches = [e for e in pwd.getpwall() if e.pw_name.endswith(f"-{user}.{site_dir[4:]}")]
    assert len(matches) == 1, matches
    return matches[0]


def test_what_dav_makes_belongs_to_the_account_that_made_it(server):
    """PUT and MKCOL by the administrator are its system user's; a user's PUT in its home is the user's."""
    admin = Dav(server.url, f"{A_ADMIN}@{A}", A_PASSWORD)
    bob = Dav(server.url, f"{USER}@{A}", USER_PASSWORD)
    assert admin.request("PUT", "var/www/html/index.php", data=b"<?php").status_code == 201
    assert admin.request("MKCOL", "var/www/html/uploads").status_code == 201
    assert bob.request("PUT", "notes.txt", data=b"bob's").status_code == 201
    a_admin, a_bob = host_user(server, A, A_ADMIN), host_user(server, A, USER)
    for path in ("index.php", "uploads"):
        info = os.stat(os.path.join(docroot(server, A), path))
        assert (info.st_uid, info.st_gid) == (a_admin.pw_uid, a_admin.pw_gid), path
    info = os.stat(os.path.join(docroot(server, A), "../../../home", USER, "notes.txt"))
    assert (info.st_uid, info.st_gid) == (a_bob.pw_uid, a_bob.pw_gid)
    assert a_bob.pw_uid != a_admin.pw_uid and a_bob.pw_gid == a_admin.pw_gid


def test_the_move_and_delete_race_replayed_over_http_never_reaches_another_site(server, tmp_path):
    """Issue 19's attack against real accounts: A's folder swapped (by A's own system user) for a link to
    B's document root during 500 MOVEs and 500 DELETEs; B's wp-config.php is never taken nor deleted."""
    a_admin, b_admin = host_user(server, A, A_ADMIN), host_user(server, B, B_ADMIN)
    victim = os.path.join(docroot(server, B), "wp-config.php")
    with open(victim, "wb") as fh:
        fh.write(SECRET)
    os.chown(victim, b_admin.pw_uid, b_admin.pw_gid)
    os.chmod(victim, 0o640)
    dav = Dav(server.url, f"{A_ADMIN}@{A}", A_PASSWORD)
    assert dav.request("MKCOL", "var/www/html/up").status_code == 201
    html = docroot(server, A)
    up, alt = os.path.join(html, "up"), os.path.join(html, "up-alt")
    control = tempfile.mkdtemp(prefix="race-", dir="/tmp")
    os.chmod(control, 0o755)
    stop = os.path.join(control, "stop")
    setup = subprocess.run(["runuser", "-u", a_admin.pw_name, "--", "/usr/bin/python3", "-c",
                            "import os,sys; os.symlink(sys.argv[1], sys.argv[2]); "
                            "open(os.path.join(sys.argv[3], 'wp-config.php'), 'w').write('decoy')",
                            docroot(server, B), alt, up], capture_output=True, text=True)
    assert setup.returncode == 0, setup.stderr
    swapper = subprocess.Popen(["runuser", "-u", a_admin.pw_name, "--", "/usr/bin/python3", "-c", RACE_SWAPPER,
                                up, alt, stop, "32"])
    statuses: dict = {}
    try:
        for attempt in range(TRIES):
            for method, headers in (("MOVE", {"Destination": dav.url(f"var/www/html/stolen-{attempt}.php")}),
                                    ("DELETE", {})):
                status = dav.request(method, "var/www/html/up/wp-config.php", headers=headers).status_code
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        open(stop, "w").close()
        swapper.wait(30)
        shutil.rmtree(control, ignore_errors=True)
    stolen = [name for name in os.listdir(html) if name.startswith("stolen-")
              and open(os.path.join(html, name), "rb").read() == SECRET]
    assert stolen == [], statuses
    with open(victim, "rb") as fh:
        assert fh.read() == SECRET, statuses
    assert not [status for status in statuses if status >= 500], statuses  # refused is 403, never a failure
    # It raced: some requests were refused by the path checks (they met the link), others got past them
    # (the decoy moved, deleted or gone, or the kernel refusing A's account); how many of each is the
    # scheduler's choice, so neither count is asked for more than once.
    past_the_checks = sum(count for status, count in statuses.items() if status != 403)
    assert statuses.get(403, 0) > 0 and past_the_checks > 0, statuses
    # Once the swapping stops, the same MOVE of A's own file works: the refusals were the race, not the server.
    real_folder_back_with_a_decoy(up, alt, a_admin.pw_uid, a_admin.pw_gid)
    moved = dav.request("MOVE", "var/www/html/up/wp-config.php",
                        headers={"Destination": dav.url("var/www/html/moved.php")})
    assert moved.status_code == 201, moved.text
    with open(os.path.join(html, "moved.php"), "rb") as fh:
        assert fh.read() == b"decoy"
