"""DAV and the log: a client's data cannot flood it, credentials in a request line never reach
it, a client gone mid-transfer is one line (no traceback), and error pages name neither WsgiDAV
nor an exception (a running server, real clients)."""

from __future__ import annotations

import os
import socket

from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home

DOMAIN, ADMIN, PASSWORD = "logs.example.com", "logsadmin", "Logs-passw0rd"
LOGIN = f"{ADMIN}@{DOMAIN}"
#: 900 KB of a property value with an entity no DTD declares.
HUGE = "a" * (900 * 1024) + "&undeclared;"


def dav_server(server_factory, overrides=None):
    server = server_factory(overrides)
    add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    return server, Dav(server.url, LOGIN, PASSWORD)


def log_size(server) -> int:
    return os.path.getsize(server.log_path)


def test_huge_bad_properties_do_not_flood_the_log(server_factory):
    """A 900 KB property with an undeclared entity, set and asked for 20 times: the log grows < 100 KB."""
    server, dav = dav_server(server_factory)
    before = log_size(server)
    body = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
            f'<Z:big xmlns:Z="urn:x">{HUGE}</Z:big></D:prop></D:set></D:propertyupdate>').encode()
    for _ in range(20):
        assert dav.request("PROPPATCH", "", data=body, headers={"Content-Type": "application/xml"}).status_code < 500
        assert dav.propfind(depth="0").status_code == 207
        asked = (f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:big xmlns:Z="urn:x">{HUGE}'
                 f'</Z:big></D:prop></D:propfind>').encode()
        assert dav.propfind(depth="0", body=asked).status_code in (207, 400)
    grown = log_size(server) - before
    assert grown < 100 * 1024, f"the log grew by {grown} bytes"


def test_a_client_gone_mid_transfer_is_one_line(server_factory):
    """GET read in part, then closed; a PUT whose client leaves before the answer: no traceback in the log."""
    server, dav = dav_server(server_factory)
    with open(os.path.join(site_home(server, DOMAIN), "big.bin"), "wb") as fh:
        fh.write(os.urandom(1024 * 1024) * 30)
    assert dav.propfind(depth="0").status_code == 207
    with dav.request("GET", "big.bin", stream=True) as answer:
        assert answer.status_code == 200
        answer.raw.read(1024 * 1024)
    host, port = server.url.split("//", 1)[1].split(":")
    auth = dav.session.prepare_request(__import__("requests").Request("PUT", dav.url("x"))).headers["Authorization"]
    size = 20 * 1024 * 1024
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"PUT /dav/left.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        piece = b"p" * (1024 * 1024)
        for _ in range(size // len(piece)):
            sock.sendall(piece)
    # The server notices both: a PROPFIND after them is answered once the threads are done.
    for _ in range(3):
        assert dav.propfind(depth="1").status_code == 207
    log = server.log()
    assert "Traceback" not in log and "I/O operation on closed file" not in log, log[-3000:]
    assert "byte copy failed" not in log


def test_error_pages_name_neither_wsgidav_nor_exceptions(server_factory):
    """404, 403, 400 and 415-class answers are plain text with no WsgiDAV name, version or exception."""
    server, dav = dav_server(server_factory)
    os.symlink("/etc/passwd", os.path.join(site_home(server, DOMAIN), "link"))
    answers = [dav.request("GET", "missing.txt"), dav.request("GET", "link"),
               dav.propfind(depth="0", body=b"<not-xml"), dav.request("MKCOL", "a/b/c")]
    assert [a.status_code for a in answers] == [404, 403, 400, 409]
    for answer in answers:
        text = answer.text
        assert "wsgidav" not in text.lower() and "exception" not in text.lower() and "Traceback" not in text, text
        assert answer.headers["Content-Type"].startswith("text/plain")


def test_credentials_in_an_absolute_request_target_are_masked(server_factory):
    """GET http://user:password@host/dav/ with the access log on: the log never holds the password."""
    server, _ = dav_server(server_factory, {"core": {"access_log": "true"}})
    host, port = server.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET http://bob:Sup3rSecret@{host}:{port}/dav/?password=Other5ecret HTTP/1.1\r\n"
                     f"Host: {host}\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass
    Dav(server.url, LOGIN, PASSWORD).propfind(depth="0")  # one more line: the first is written by now
    log = server.log()
    assert "Sup3rSecret" not in log and "Other5ecret" not in log
    assert "http://***@" in log
