"""Nothing of a DAV body before its credentials: a stranger's 150 MB uploads with a bogus
``Authorization`` are refused before they are read (the server writes almost nothing), they
count in Anvil, a blocked address is refused the same way, and an admitted upload still works
(``Expect: 100-continue`` answered only once admitted).  Bodies in flight are bounded in total."""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest

from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home, xmlrpc_call

DOMAIN, ADMIN, PASSWORD = "stranger.example.com", "stranger", "Stranger-passw0rd"
LOGIN = f"{ADMIN}@{DOMAIN}"
BODY = 150 * 1024 * 1024
PIECE = b"\0" * (1024 * 1024)
#: Most the server may write (temporary files included) while refusing three 150 MB uploads.
MAX_WRITTEN = 5 * 1024 * 1024


def written_bytes(pid: int) -> int:
    """Bytes process ``pid`` has passed to write(2) and friends so far (``wchar``: files and sockets)."""
    with open(f"/proc/{pid}/io") as fh:
        return int(next(line for line in fh if line.startswith("wchar:")).split()[1])


def address_of(server):
    host, port = server.url.split("//", 1)[1].split(":")
    return host, int(port)


def upload(server, password: str, size: int = BODY, address: str = "192.0.2.50", expect: bool = False,
           refused: bool = True) -> tuple:
    """A raw PUT of ``size`` bytes.  ``refused``: headers and the first MB, then the answer is read,
    then the rest is pushed until the server stops taking it; else the whole body, then the
    answer.  Returns (status line, bytes of the body the client got sent)."""
    token = base64.b64encode(f"{LOGIN}:{password}".encode()).decode()
    head = (f"PUT /dav/upload.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            f"X-Forwarded-For: {address}\r\nContent-Length: {size}\r\n"
            + ("Expect: 100-continue\r\n" if expect else "") + "\r\n").encode()
    sent = 0
    with socket.create_connection(address_of(server), timeout=30) as sock:
        sock.sendall(head)
        if expect:
            interim = sock.recv(4096)
            if not interim.startswith(b"HTTP/1.1 100 "):
                return interim.split(b"\r\n", 1)[0].decode(), 0
        status = None
        try:
            while sent < size:
                piece = PIECE[:min(len(PIECE), size - sent)]
                sock.sendall(piece)
                sent += len(piece)
                if refused and status is None:
                    status = sock.recv(4096).split(b"\r\n", 1)[0].decode()
        except OSError:  # the server closed: it would not take the body
            return status, sent
        answer = b""
        while status is None and b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return status or answer.split(b"\r\n", 1)[0].decode(), sent


def failed_logins(server) -> list:
    """The trail's failed logins at gate DAV, newest first."""
    events = xmlrpc_call(server, "admin_get_security_events", {"kind": "login_failed"}, key=server.admin_key)
    return [e for e in events if e["gate"] == "DAV"]


def until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll the running server until ``predicate()`` holds (it records the trail on the real clock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.1)


def test_bogus_credentials_store_nothing_and_count(server_factory):
    """Three 150 MB PUTs with a wrong password: 401 before the body, < 5 MB written, counted to a block."""
    server = server_factory({"anvil": {"limit": "3", "min_attempts": "1000"}})
    add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    before = written_bytes(server.process.pid)
    results = [upload(server, "not-the-password") for _ in range(3)]
    written = written_bytes(server.process.pid) - before
    assert [status for status, _ in results[:2]] == ["HTTP/1.1 401 Unauthorized"] * 2
    assert results[2][0] == "HTTP/1.1 429 Too Many Requests"  # the third failure starts the block
    assert all(sent < BODY for _, sent in results), "the server read a refused body to its end"
    assert written < MAX_WRITTEN, f"the server wrote {written} bytes while refusing three uploads"
    # Counted: the address is blocked now, even with the right password and before its body,
    # and each such attempt counts again.
    before = written_bytes(server.process.pid)
    for _ in range(2):
        status, sent = upload(server, PASSWORD)
        assert status == "HTTP/1.1 429 Too Many Requests" and sent < BODY
    assert written_bytes(server.process.pid) - before < 2 * MAX_WRITTEN
    until(lambda: len(failed_logins(server)) == 5, what="five failed DAV logins in the trail")
    assert [e["detail"] for e in failed_logins(server)][:2] == ["attempt while the address is blocked"] * 2
    assert not any(name.startswith("upload") for name in os.listdir(site_home(server, DOMAIN)))
    assert Dav(server.url, LOGIN, PASSWORD, address="192.0.2.51").propfind(depth="0").status_code == 207


@pytest.mark.parametrize("expect", [False, True])
def test_admitted_uploads_are_read_and_stored(server_factory, expect):
    """With the right password the body is read after admission (100 Continue only then) and stored whole."""
    server = server_factory()
    add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    status, sent = upload(server, PASSWORD, size=3 * len(PIECE) + 7, expect=expect, refused=False)
    assert status == "HTTP/1.1 201 Created" and sent == 3 * len(PIECE) + 7
    with open(f"{site_home(server, DOMAIN)}/upload.bin", "rb") as fh:
        assert len(fh.read()) == 3 * len(PIECE) + 7
    small = Dav(server.url, LOGIN, PASSWORD).request("PUT", "small.txt", data=b"x" * 100)
    assert small.status_code == 201  # a body that arrives with the headers, held then stored


def test_bodies_in_flight_are_bounded_in_total(server_factory):
    """While one upload is being received, another that would pass [dav] max_bodies_in_flight gets 503
    with Retry-After before its body; one larger than the whole bound 413; all is given back after."""
    server = server_factory({"dav": {"max_bodies_in_flight": str(2 * 1024 * 1024)}})
    add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    dav = Dav(server.url, LOGIN, PASSWORD)
    assert dav.request("PUT", "fits.bin", data=b"y" * (1024 * 1024)).status_code == 201
    token = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
    with socket.create_connection(address_of(server), timeout=30) as pending:
        pending.sendall(f"PUT /dav/slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                        f"Content-Length: {1536 * 1024}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert pending.recv(4096).startswith(b"HTTP/1.1 100 ")  # admitted: its 1.5 MB are counted
        pending.sendall(b"s" * 1024)
        busy = dav.request("PUT", "second.bin", data=b"y" * (1024 * 1024))
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) > 0
        chunked = dav.request("PUT", "chunked.bin", data=iter([b"z" * (256 * 1024)] * 4))
        assert chunked.status_code == 503
        pending.sendall(b"s" * (1536 * 1024 - 1024))
        assert pending.recv(4096).startswith(b"HTTP/1.1 201 ")
    assert dav.request("PUT", "too-big.bin", data=b"y" * (3 * 1024 * 1024)).status_code == 413
    assert dav.request("PUT", "fits-again.bin", data=b"y" * (1024 * 1024)).status_code == 201  # all given back


def test_over_https_bodies_also_wait_for_admission(server_factory):
    """Over TLS: a 3 MB PUT with the right password is stored whole; with a wrong one it gets 401."""
    from tests.scopes.clients import certificate_path

    server = server_factory(https=True)
    add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    body = os.urandom(3 * 1024 * 1024 + 5)
    secure = Dav(server.https_url, LOGIN, PASSWORD, verify=certificate_path(server))
    assert secure.request("PUT", "tls.bin", data=body).status_code == 201
    with open(os.path.join(site_home(server, DOMAIN), "tls.bin"), "rb") as fh:
        assert fh.read() == body
    wrong = Dav(server.https_url, LOGIN, "wrong-password", verify=certificate_path(server))
    status = wrong.request("PUT", "tls2.bin", data=body).status_code  # the refused body is drained: no reset
    assert status == 401 and not os.path.exists(os.path.join(site_home(server, DOMAIN), "tls2.bin"))
