"""Usage against a running server: what DAV and XML-RPC carried for a site shows in its bandwidth,
survives a restart (stored when the server stops), and the storage counted at start-up matches
``du`` of the site's home."""

from __future__ import annotations

import os
import subprocess
import time

from tests.conftest import start_server
from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home, xmlrpc_call, xmlrpc_post

DOMAIN, ADMIN, PASSWORD = "usage.example.com", "useadmin", "Usage-passw0rd"
OTHER = "quiet.example.com"


def usage(server, field: str) -> dict:
    return xmlrpc_call(server, "admin_get_usage", field, key=server.admin_key)


def du(path: str, *flags: str) -> int:
    return int(subprocess.run(["du", "-s", *flags, path], capture_output=True, text=True, check=True).stdout.split()[0])


def test_bandwidth_counts_dav_and_api_bodies_and_storage_matches_du(tmp_path):
    """A 300 KB PUT and its GET count both bodies for the site, a call in its session counts its
    request and answer, the administrator's own calls count for no site; after a restart the
    sum is still there and the storage figures are ``du``'s of the home."""
    server = start_server(str(tmp_path), {"usage": {"flush_interval": "3600"}})
    try:
        sid = add_site(server, DOMAIN, ADMIN, PASSWORD)
        add_site(server, OTHER, "quietadmin", PASSWORD)
        let_owner_reach(server)
        before = usage(server, "bandwidth")
        assert before["site1"]["sum"] == 0 and before["site2"]["sum"] == 0
        body = os.urandom(300_000)
        dav = Dav(server.url, f"{ADMIN}@{DOMAIN}", PASSWORD)
        assert dav.request("PUT", "var/www/html/big.bin", data=body).status_code == 201
        got = dav.request("GET", "var/www/html/big.bin")
        assert got.content == body
        after_dav = usage(server, "bandwidth")["site1"]["sum"]
        assert 600_000 <= after_dav < 600_000 + 5_000  # the bodies, not the headers

        call = xmlrpc_post(server, "common_whoami", sid=sid)
        assert call.status_code == 200
        sent = len(call.request.body)
        after_call = usage(server, "bandwidth")
        assert after_call["site1"]["sum"] == after_dav + sent + len(call.content)
        assert after_call["site2"]["sum"] == 0  # the administrator's calls count for no site

        server.restart()  # stopping stores what the meter holds
        restarted = usage(server, "bandwidth")
        assert restarted["site1"]["sum"] == after_call["site1"]["sum"]
        home = site_home(server, DOMAIN)
        deadline = time.monotonic() + 30
        storage = usage(server, "storage")
        while storage["site1"]["qused"] is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the recount at start-up is under way
            storage = usage(server, "storage")
        assert (storage["site1"]["qused"], storage["site1"]["fused"]) == (du(home), du(home, "--inodes"))
        assert storage["site1"]["qused"] >= 300
    finally:
        server.stop()
