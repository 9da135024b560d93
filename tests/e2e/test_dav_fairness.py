"""One tenant (or one address) cannot stall the others: the attacks of issue 21 replayed against
a running server, another site's calls measured quiet and under attack.

Each measure compares the quiet median with the longest call under attack: at most 3x, plus
:data:`SLACK` seconds for a machine shared with other work (the failures these replay took
40-57 s against 0.01 s).
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time

import pytest

from tests.conftest import run_in_threads
from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home, xmlrpc_call

SITE_A, ADMIN_A, PASSWORD_A = "tenant-a.example.com", "tenanta", "Tenant-A-passw0rd"
SITE_B, ADMIN_B, PASSWORD_B = "tenant-b.example.com", "tenantb", "Tenant-B-passw0rd"
#: Seconds added to 3x the quiet median: scheduling noise of a shared test machine.
SLACK = 0.5


def timed(fn, times: int = 5, worst: bool = False) -> float:
    """Median (``worst``: longest) seconds of ``times`` calls of ``fn``."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return max(samples) if worst else statistics.median(samples)


def within_three_times(quiet: float, loaded: float) -> bool:
    return loaded <= 3 * quiet + SLACK


@pytest.fixture
def two_sites(server_factory):
    """A server with sites A and B; (server, session of A's administrator, DAV of A, DAV of B)."""
    server = server_factory({"anvil": {"min_attempts": "1000"}})
    sid_a = add_site(server, SITE_A, ADMIN_A, PASSWORD_A)
    add_site(server, SITE_B, ADMIN_B, PASSWORD_B)
    let_owner_reach(server)
    dav_a = Dav(server.url, f"{ADMIN_A}@{SITE_A}", PASSWORD_A, address="192.0.2.61")
    dav_b = Dav(server.url, f"{ADMIN_B}@{SITE_B}", PASSWORD_B, address="192.0.2.62")
    assert dav_b.propfind(depth="1").status_code == 207  # B's password is verified and remembered
    return server, sid_a, dav_a, dav_b


def test_unread_gets_leave_other_sites_fast(two_sites):
    """Ten GETs of a 50 MB file whose answers are never read: site B's PROPFIND (and A's) stays within 3x."""
    server, _, dav_a, dav_b = two_sites
    with open(os.path.join(site_home(server, SITE_A), "big.bin"), "wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    assert dav_a.propfind(depth="0").status_code == 207
    quiet = timed(lambda: dav_b.propfind(depth="1"))
    host, port = server.url.split("//", 1)[1].split(":")
    request = dav_a.session.prepare_request(__import__("requests").Request("GET", dav_a.url("big.bin")))
    head = (f"GET /dav/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {request.headers['Authorization']}\r\n"
            "X-Forwarded-For: 192.0.2.61\r\n\r\n").encode()
    stalled = []
    try:
        for _ in range(10):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(head)
            stalled.append(sock)
        stalled[0].recv(1)  # the answers have started (threads are busy sending)
        loaded = timed(lambda: dav_b.propfind(depth="1"), worst=True)
        own = timed(lambda: dav_a.propfind(depth="1"), worst=True)  # the GETs hold no thread, even of A's
    finally:
        for sock in stalled:
            sock.close()
    assert within_three_times(quiet, loaded), f"PROPFIND of B: quiet {quiet:.3f}s, under attack {loaded:.3f}s"
    assert within_three_times(quiet, own), f"PROPFIND of A: quiet {quiet:.3f}s, under its own GETs {own:.3f}s"


def test_a_file_swapped_for_a_fifo_never_holds_a_thread(two_sites):
    """Site A's GETs race a file against a FIFO in its place: all answered, B's PROPFIND stays within 3x."""
    server, _, dav_a, dav_b = two_sites
    path = os.path.join(site_home(server, SITE_A), "swap.txt")
    with open(path, "w") as fh:
        fh.write("plain")
    quiet = timed(lambda: dav_b.propfind(depth="1"))
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            os.unlink(path)
            os.mkfifo(path)
            os.unlink(path)
            with open(path, "w") as fh:
                fh.write("plain")

    def getter():
        for _ in range(20):
            assert dav_a.request("GET", "swap.txt", timeout=30).status_code in (200, 403, 404)

    racing = threading.Thread(target=swapper, daemon=True)
    racing.start()
    try:
        attack = threading.Thread(target=lambda: run_in_threads(getter, [()] * 10, timeout=120), daemon=True)
        attack.start()
        loaded = timed(lambda: dav_b.propfind(depth="1"), worst=True)
        attack.join(120)
        assert not attack.is_alive(), "GETs of a FIFO hung"
    finally:
        stop.set()
        racing.join(10)
    assert within_three_times(quiet, loaded), f"PROPFIND of B: quiet {quiet:.3f}s, under attack {loaded:.3f}s"
    assert within_three_times(quiet, timed(lambda: dav_b.propfind(depth="1")))  # and after it


def test_parallel_audits_of_one_site_leave_others_fast(two_sites):
    """Ten parallel security_audit calls of site A over 40,000 files: B's auth_create_api_key stays within 3x."""
    server, sid_a, _, dav_b = two_sites
    sid_b = xmlrpc_call(server, "admin_hijack", SITE_B, key=server.admin_key)
    docroot = os.path.join(site_home(server, SITE_A), "var/www/html")
    for i in range(400):
        folder = os.path.join(docroot, f"d{i}")
        os.makedirs(folder, exist_ok=True)
        for j in range(100):
            open(os.path.join(folder, f"f{j}.php"), "w").close()
    quiet = timed(lambda: xmlrpc_call(server, "auth_create_api_key", "quiet", sid=sid_b))
    attack = threading.Thread(daemon=True, target=lambda: run_in_threads(
        lambda: xmlrpc_call(server, "security_audit", "/var/www/html", sid=sid_a), [()] * 10, timeout=300))
    attack.start()
    loaded = timed(lambda: xmlrpc_call(server, "auth_create_api_key", "loaded", sid=sid_b), worst=True)
    attack.join(300)
    assert within_three_times(quiet, loaded), f"auth_create_api_key of B: quiet {quiet:.3f}s, loaded {loaded:.3f}s"


def test_a_login_burst_from_one_address_is_cut_before_it_is_hashed(server_factory):
    """120 concurrent wrong DAV logins from one address (real hashing cost): a login from another
    address meanwhile takes under 3 s (3x a quiet login on a slower machine), and at most about
    Anvil's limit of them were hashed."""
    server = server_factory({"auth": {"pbkdf2_iterations": "210000"}, "anvil": {"limit": "20", "min_attempts": "1000"}})
    add_site(server, SITE_A, ADMIN_A, PASSWORD_A)
    add_site(server, SITE_B, ADMIN_B, PASSWORD_B)
    let_owner_reach(server)
    started = time.perf_counter()  # a first login (hashed) of another account, for the machine's pace
    first = Dav(server.url, f"{ADMIN_A}@{SITE_A}", PASSWORD_A, address="192.0.2.72").propfind(depth="0")
    assert first.status_code == 207
    quiet = time.perf_counter() - started
    answers = []

    def wrong(i):
        answers.append(Dav(server.url, f"{ADMIN_B}@{SITE_B}", f"wrong-{i}", address="192.0.2.70")
                       .propfind(depth="0").status_code)

    burst = threading.Thread(daemon=True, target=lambda: run_in_threads(wrong, [(i,) for i in range(120)],
                                                                        timeout=300))
    burst.start()
    while len(answers) < 3:  # the burst is being answered
        time.sleep(0.01)  # polling another thread's progress, not timing logic
    started = time.perf_counter()
    legit = Dav(server.url, f"{ADMIN_B}@{SITE_B}", PASSWORD_B, address="192.0.2.71").propfind(depth="0")
    took = time.perf_counter() - started
    burst.join(300)
    assert legit.status_code == 207
    # 3 s, the bound, unless the machine is so loaded that a quiet login takes over 1 s.
    assert took < max(3, 3 * quiet + SLACK), f"a legitimate login took {took:.2f}s during the burst " \
                                             f"(quiet: {quiet:.2f}s)"
    assert sorted(set(answers)) == [401, 429] and answers.count(401) <= 21, answers.count(401)
