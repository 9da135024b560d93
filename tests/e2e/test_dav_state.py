"""DAV state that lasts, against running servers: litmus (Debian's package) passes all five suites,
again after a restart, and on a second node sharing the database (PostgreSQL) and the locks
(Redis, ``[anvil] backend=redis``); dead properties and locks survive the restart and reach the
other node; a LOCK flood is refused past the site's bounds without growing the server's memory."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
import redis

from apiserver.dav.state_redis import DEFAULT_PREFIX as LOCK_PREFIX
from tests.conftest import start_server
from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home, xmlrpc_call
from tests.storage.support import scratch_database

ADMIN, PASSWORD = "stateadmin", "State-passw0rd"
USER, USER_PASSWORD = "carol", "Carol-passw0rd"
SUITES = ("basic", "copymove", "props", "locks", "http")
REDIS_URL = "redis://127.0.0.1:6379/0"
NS = "http://example.com/state/"
_SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


def litmus(url: str, user: str, password: str, workdir) -> dict:
    """Run every litmus suite against ``url``; ``{suite: (run, passed)}`` and the output on failure."""
    os.makedirs(workdir, exist_ok=True)
    proc = subprocess.run(["litmus", url, user, password], cwd=workdir, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TESTS=" ".join(SUITES)))
    results = {m[1]: (int(m[2]), int(m[3])) for m in _SUMMARY.finditer(proc.stdout)}
    return results, proc.stdout + proc.stderr


def assert_litmus_passes(server, domain, workdir) -> None:
    results, output = litmus(f"{server.url}/dav/", f"{ADMIN}@{domain}", PASSWORD, workdir)
    assert set(results) == set(SUITES), output
    for suite, (run, passed) in results.items():
        assert run > 0 and passed == run, f"litmus {suite}: {passed} of {run}\n{output}"


def proppatch_body(values: dict) -> bytes:
    props = "".join(f"<s:{name}>{value}</s:{name}>" for name, value in values.items())
    return (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:s="{NS}">'
            f"<D:set><D:prop>{props}</D:prop></D:set></D:propertyupdate>").encode()


def lock_body(owner: str) -> bytes:
    return ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            f"<D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner></D:lockinfo>").encode()


def dead_properties(dav: Dav, path: str) -> dict:
    answer = dav.propfind(path, depth="0", body=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>'
                                                 b"</D:propfind>")
    assert answer.status_code == 207, answer.text
    return {e.tag[len(NS) + 2:]: e.text for e in ET.fromstring(answer.content).iter() if e.tag.startswith("{" + NS)}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("VmRSS:")).split()[1])


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One server (SQLite) with one site and a user of it; bodies up to 4 MB, so 1 MB lock owners reach DAV."""
    server = start_server(str(tmp_path_factory.mktemp("davstate")), {"soap": {"max_body_size": str(4 << 20)}})
    try:
        sid = add_site(server, "state.example.com", ADMIN, PASSWORD)
        xmlrpc_call(server, "user_add", USER, USER_PASSWORD, sid=sid)
        let_owner_reach(server)
        yield server
    finally:
        server.stop()


def test_litmus_passes_every_suite_before_and_after_a_restart(node, tmp_path):
    """litmus: 100% of basic, copymove, props, locks and http; the same after the server restarted."""
    assert_litmus_passes(node, "state.example.com", tmp_path / "first")
    node.restart()
    assert_litmus_passes(node, "state.example.com", tmp_path / "again")


def test_properties_and_locks_survive_a_restart(node):
    """Ten properties set by one PROPPATCH and a lock are there after a restart: the lock still refuses a
    write without its token and lets one with it."""
    dav = Dav(node.url, f"{ADMIN}@state.example.com", PASSWORD)
    assert dav.request("PUT", "kept.txt", data=b"kept").status_code in (201, 204)
    values = {f"prop{n}": f"value{n}" for n in range(10)}
    assert dav.request("PROPPATCH", "kept.txt", data=proppatch_body(values)).status_code == 207
    assert dead_properties(dav, "kept.txt") == values
    locked = dav.request("LOCK", "kept.txt", data=lock_body("me"), headers={"Timeout": "Second-600"})
    assert locked.status_code == 200, locked.text
    token = locked.headers["Lock-Token"]
    node.restart()
    assert dead_properties(dav, "kept.txt") == values
    assert dav.request("PUT", "kept.txt", data=b"no token").status_code == 423
    assert dav.request("PUT", "kept.txt", data=b"with token", headers={"If": f"({token})"}).status_code == 204
    assert dav.request("UNLOCK", "kept.txt", headers={"Lock-Token": token}).status_code == 204
    assert dav.request("PUT", "kept.txt", data=b"free").status_code == 204


def test_a_sites_user_and_administrator_share_properties_and_locks(node):
    """What a user of the site sets and locks in its folder, the site's administrator sees at
    /home/<user>/ and cannot overwrite without the token; the user's release frees it."""
    admin = Dav(node.url, f"{ADMIN}@state.example.com", PASSWORD)
    user = Dav(node.url, f"{USER}@state.example.com", USER_PASSWORD)
    assert user.request("PUT", "notes.txt", data=b"mine").status_code == 201
    assert user.request("PROPPATCH", "notes.txt", data=proppatch_body({"tag": "draft"})).status_code == 207
    locked = user.request("LOCK", "notes.txt", data=lock_body(USER), headers={"Timeout": "Second-600"})
    assert locked.status_code == 200, locked.text
    token = locked.headers["Lock-Token"]
    assert dead_properties(admin, f"home/{USER}/notes.txt") == {"tag": "draft"}
    assert token.strip("<>") in admin.propfind(f"home/{USER}/notes.txt", depth="0").text
    assert admin.request("PUT", f"home/{USER}/notes.txt", data=b"admin's").status_code == 423
    assert user.request("UNLOCK", "notes.txt", headers={"Lock-Token": token}).status_code == 204
    assert admin.request("PUT", f"home/{USER}/notes.txt", data=b"admin's").status_code == 204


def test_a_lock_flood_is_refused_past_the_bound_without_growing_memory(node):
    """200 LOCKs with 1 MB owners and infinite timeouts: every one 403, no file left; 200 with small owners:
    the first [dav] max_locks (100) granted for at most max_lock_timeout, the rest 507; RSS grows < 20 MB."""
    dav = Dav(node.url, f"{ADMIN}@state.example.com", PASSWORD)
    assert dav.request("MKCOL", "flood").status_code == 201
    for n in range(3):  # warm-up: what the first requests load is not growth
        dav.request("LOCK", f"flood/warm{n}", data=lock_body("x" * (1 << 20)), headers={"Timeout": "Infinite"})
    before = rss_kib(node.process.pid)
    big = lock_body("x" * (1 << 20))
    statuses = {dav.request("LOCK", f"flood/big{n}", data=big, headers={"Timeout": "Infinite"}).status_code
                for n in range(200)}
    assert statuses == {403}
    assert os.listdir(os.path.join(site_home(node, "state.example.com"), "flood")) == []
    granted, refused = [], []
    for n in range(200):
        answer = dav.request("LOCK", f"flood/small{n}", data=lock_body("owner"), headers={"Timeout": "Infinite"})
        (granted if answer.status_code == 201 else refused).append(answer)
    assert len(granted) == 100 and {a.status_code for a in refused} == {507}
    left = set(os.listdir(os.path.join(site_home(node, "state.example.com"), "flood")))
    assert left == {f"small{n}" for n in range(100)}  # refused LOCKs of new names made no file
    timeout = ET.fromstring(granted[0].content).find(".//{DAV:}timeout").text
    assert timeout.startswith("Second-") and 86000 < int(timeout[7:]) <= 86400, timeout
    growth_mib = (rss_kib(node.process.pid) - before) / 1024
    assert growth_mib < 20, f"RSS grew {growth_mib:.1f} MB"
    for answer in granted:
        token = answer.headers["Lock-Token"]
        path = answer.url.split("/dav/", 1)[1]
        assert dav.request("UNLOCK", path, headers={"Lock-Token": token}).status_code == 204
    assert dav.request("LOCK", "flood/after", data=lock_body("owner")).status_code == 201


@pytest.fixture
def two_nodes(tmp_path):
    """Two servers sharing a PostgreSQL database, the secret, the sites' folder and, through [anvil] backend=redis,
    the DAV locks in Redis; one site with a domain no other run uses (its Redis keys are deleted after)."""
    url, drop = scratch_database("postgresql")
    domain = f"n{secrets.token_hex(4)}.example.com"
    shared = {"db": {"url": url}, "anvil": {"backend": "redis", "redis_url": REDIS_URL}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    started = []
    try:
        first = start_server(str(tmp_path / "a"), shared)
        started.append(first)
        add_site(first, domain, ADMIN, PASSWORD)
        sites = os.path.join(first.state_dir, "sites")
        os.makedirs(tmp_path / "b" / "state", mode=0o700)
        shutil.copy2(os.path.join(first.state_dir, "secret"), tmp_path / "b" / "state" / "secret")  # nodes share it
        second = start_server(str(tmp_path / "b"), dict(shared, web={"sites_root": sites}))
        started.append(second)
        let_owner_reach(first)
        let_owner_reach(second)
        yield first, second, domain
    finally:
        for server in started:
            server.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{LOCK_PREFIX}{domain}:*"):
            client.delete(key)
        client.close()
        drop()


def test_a_second_node_sharing_the_storage_passes_litmus_and_shares_the_state(two_nodes, tmp_path):
    """litmus passes on both nodes; properties set on one are read on the other; a lock taken on one
    refuses the other's write without its token and is released there."""
    first, second, domain = two_nodes
    assert_litmus_passes(first, domain, tmp_path / "litmus-a")
    assert_litmus_passes(second, domain, tmp_path / "litmus-b")
    on_a = Dav(first.url, f"{ADMIN}@{domain}", PASSWORD)
    on_b = Dav(second.url, f"{ADMIN}@{domain}", PASSWORD)
    assert on_a.request("PUT", "shared.txt", data=b"a").status_code == 201
    assert on_a.request("PROPPATCH", "shared.txt", data=proppatch_body({"color": "blue"})).status_code == 207
    assert dead_properties(on_b, "shared.txt") == {"color": "blue"}
    locked = on_a.request("LOCK", "shared.txt", data=lock_body("a"), headers={"Timeout": "Second-600"})
    token = locked.headers["Lock-Token"]
    assert on_b.request("PUT", "shared.txt", data=b"b").status_code == 423
    discovery = on_b.propfind("shared.txt", depth="0").text
    assert token.strip("<>") in discovery
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert any(client.scan_iter(f"{LOCK_PREFIX}{domain}:*"))
    finally:
        client.close()
    assert on_b.request("UNLOCK", "shared.txt", headers={"Lock-Token": token}).status_code == 204
    assert on_a.request("PUT", "shared.txt", data=b"a again").status_code == 204
