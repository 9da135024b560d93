"""Plain GETs over plain TCP opened on the reactor once the account's root was located: the same
answers as the first GET (opened on a DAV thread), and everything it does not serve (links, hard
links, FIFOs, files the account may not read, missing files) answered by WsgiDAV as before."""

from __future__ import annotations

import os

import pytest

from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home

SITE, ADMIN, PASSWORD = "reactor-get.example.com", "reactorget", "Reactor-passw0rd"


@pytest.mark.parametrize("sendfile", ["false", "true"], ids=["mapped", "sendfile"])
def test_repeated_gets_answer_alike_and_refusals_stay(server_factory, sendfile):
    """Second and later GETs (reactor) match the first (thread); links, FIFOs, hard links, unreadable stay refused."""
    server = server_factory({"dav": {"sendfile": sendfile}})
    add_site(server, SITE, ADMIN, PASSWORD)
    let_owner_reach(server)
    dav = Dav(server.url, f"{ADMIN}@{SITE}", PASSWORD)
    html = os.path.join(site_home(server, SITE), "var/www/html")
    data = os.urandom(9 * 1024 * 1024 + 1234)  # more than two 4 MiB windows of the mapping
    with open(os.path.join(html, "page.html"), "wb") as fh:
        fh.write(data)
    answers = [dav.request("GET", "var/www/html/page.html") for _ in range(3)]
    for got in answers:
        assert (got.status_code, got.content) == (200, data)
        assert got.headers["Content-Type"] == "text/html"
        assert got.headers["Date"].count("GMT") == 1  # one Date (Twisted's), not a second one
        for name in ("Content-Length", "ETag", "Last-Modified"):
            assert got.headers[name] == answers[0].headers[name], name
    os.symlink(os.path.join(html, "page.html"), os.path.join(html, "link.html"))
    os.link(os.path.join(html, "page.html"), os.path.join(html, "hard.html"))
    os.mkfifo(os.path.join(html, "pipe"))
    for name in ("link.html", "hard.html", "pipe"):
        assert dav.request("GET", f"var/www/html/{name}", timeout=30).status_code == 403, name
    assert dav.request("GET", "var/www/html/missing.html").status_code == 404
    if os.geteuid() == 0:  # the server acts as the site's account: a root-only file stays closed
        secret = os.path.join(html, "root-only.txt")
        with open(secret, "w") as fh:
            fh.write("root's")
        os.chown(secret, 0, 0)
        os.chmod(secret, 0o600)
        assert dav.request("GET", "var/www/html/root-only.txt").status_code == 403
    os.unlink(os.path.join(html, "hard.html"))
    assert dav.request("GET", "var/www/html/page.html").content == data
