"""``/dav/`` against a running server with real clients: ``requests`` for the RFC 4918 methods
and status codes, ``cadaver`` for a session as a user would type it; isolation of sites, a
site's user in its own folder, and path escapes (``..``, encodings, links)."""

from __future__ import annotations

import os
import pwd
import socket
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import start_server
from tests.e2e.clients.dav_clients import DAV, Dav, add_site, cadaver, let_owner_reach, site_home, xmlrpc_call

DOMAIN, ADMIN, PASSWORD = "dav.example.com", "davadmin", "Dav-passw0rd"
OTHER, OTHER_ADMIN, OTHER_PASSWORD = "other.example.com", "otheradmin", "Other-passw0rd"
USER, USER_PASSWORD = "bob", "Bob-passw0rd"


@pytest.fixture(scope="module")
def dav_server(tmp_path_factory):
    """One server with two sites and a user of the first."""
    server = start_server(str(tmp_path_factory.mktemp("dav")), https=True)
    try:
        sid = add_site(server, DOMAIN, ADMIN, PASSWORD)
        add_site(server, OTHER, OTHER_ADMIN, OTHER_PASSWORD)
        xmlrpc_call(server, "user_add", USER, USER_PASSWORD, sid=sid)
        let_owner_reach(server)
        with open(os.path.join(site_home(server, OTHER), "var/www/html/secret.txt"), "w") as fh:
            fh.write("other site's secret")
        yield server
    finally:
        server.stop()


@pytest.fixture
def dav(dav_server):
    return Dav(dav_server.url, f"{ADMIN}@{DOMAIN}", PASSWORD)


def owner_uid() -> int:
    return pwd.getpwnam("apiserver").pw_uid if os.geteuid() == 0 else os.geteuid()


def test_options_advertises_classes_1_and_2(dav):
    """OPTIONS names DAV compliance 1 and 2 and the methods, LOCK and UNLOCK among them."""
    answer = dav.request("OPTIONS")
    assert answer.status_code == 200
    assert {c.strip() for c in answer.headers["DAV"].split(",")} >= {"1", "2"}
    allowed = {m.strip() for m in answer.headers["Allow"].split(",")}
    assert allowed >= {"PROPFIND", "PROPPATCH", "GET", "HEAD", "DELETE", "COPY", "MOVE", "LOCK", "UNLOCK"}
    unmapped = {m.strip() for m in dav.request("OPTIONS", "not-yet").headers["Allow"].split(",")}
    assert unmapped >= {"PUT", "MKCOL"}


def test_propfind_depths(dav):
    """Depth 0 is the resource alone, 1 its members; infinity (and no Depth) is 403 propfind-finite-depth."""
    assert dav.hrefs("", "0") == ["/dav/"]
    assert "/dav/var/" in dav.hrefs("", "1")
    assert dav.hrefs("var/www/", "1")[:2] == ["/dav/var/www/", "/dav/var/www/html/"]
    for depth in ("infinity", None):
        answer = dav.propfind("", depth)
        assert answer.status_code == 403
        assert ET.fromstring(answer.content).find(DAV + "propfind-finite-depth") is not None
    assert dav.propfind("", "2").status_code == 400


def test_put_get_head_delete_and_the_owner(dav, dav_server):
    """PUT creates (201) and replaces (204) a file owned by the sites' owner; GET/HEAD read it; DELETE removes it."""
    assert dav.request("PUT", "var/www/html/hello.txt", data=b"hello").status_code == 201
    assert dav.request("PUT", "var/www/html/hello.txt", data=b"hello again").status_code == 204
    got = dav.request("GET", "var/www/html/hello.txt")
    assert (got.status_code, got.content) == (200, b"hello again")
    head = dav.request("HEAD", "var/www/html/hello.txt")
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, "11", b"")
    host_path = os.path.join(site_home(dav_server, DOMAIN), "var/www/html/hello.txt")
    assert os.stat(host_path).st_uid == owner_uid() != (0 if os.geteuid() == 0 else -1)
    assert dav.request("DELETE", "var/www/html/hello.txt").status_code == 204
    assert dav.request("GET", "var/www/html/hello.txt").status_code == 404
    assert not os.path.exists(host_path)


def test_mkcol_copy_move(dav, dav_server):
    """MKCOL makes a folder owned by the owner; COPY and MOVE (with Overwrite) behave as RFC 4918 says."""
    assert dav.request("MKCOL", "work").status_code == 201
    assert dav.request("MKCOL", "work").status_code == 405          # exists
    assert dav.request("MKCOL", "missing/child").status_code == 409  # no parent
    home = site_home(dav_server, DOMAIN)
    assert os.stat(os.path.join(home, "work")).st_uid == owner_uid()
    assert dav.request("PUT", "work/a.txt", data=b"A").status_code == 201
    dest = {"Destination": dav.url("work/b.txt")}
    assert dav.request("COPY", "work/a.txt", headers=dest).status_code == 201
    assert dav.request("COPY", "work/a.txt", headers={**dest, "Overwrite": "F"}).status_code == 412
    assert dav.request("MOVE", "work/b.txt", headers={"Destination": dav.url("work/c.txt")}).status_code == 201
    assert dav.request("GET", "work/c.txt").content == b"A"
    assert dav.request("GET", "work/b.txt").status_code == 404
    assert os.stat(os.path.join(home, "work/c.txt")).st_uid == owner_uid()
    assert dav.request("COPY", "work", headers={"Destination": dav.url("work2/")}).status_code == 201
    assert dav.request("GET", "work2/a.txt").content == b"A"
    assert dav.request("DELETE", "work2").status_code == 204
    assert not os.path.exists(os.path.join(home, "work2"))


def test_proppatch_sets_and_removes_a_dead_property(dav):
    """PROPPATCH stores a dead property that PROPFIND returns, and removes it again."""
    dav.request("PUT", "props.txt", data=b"p")
    body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:example">'
            b'<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>')
    answer = dav.request("PROPPATCH", "props.txt", data=body, headers={"Content-Type": "application/xml"})
    assert answer.status_code == 207 and b"200 OK" in answer.content
    query = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:example">'
             b'<D:prop><Z:colour/></D:prop></D:propfind>')
    found = ET.fromstring(dav.propfind("props.txt", "0", query).content)
    assert found.find(".//{urn:example}colour").text == "blue"
    remove = body.replace(b"<D:set>", b"<D:remove>").replace(b"</D:set>", b"</D:remove>")
    xml = {"Content-Type": "application/xml"}
    assert dav.request("PROPPATCH", "props.txt", data=remove, headers=xml).status_code == 207
    found = ET.fromstring(dav.propfind("props.txt", "0", query).content)
    assert b"404" in ET.tostring(found)


LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b'<D:locktype><D:write/></D:locktype><D:owner>tests</D:owner></D:lockinfo>')


def test_lock_refuses_writes_without_the_token(dav, dav_server):
    """A locked file refuses PUT and DELETE without its token (423), accepts them with it; UNLOCK frees it."""
    dav.request("PUT", "locked.txt", data=b"v1")
    lock = dav.request("LOCK", "locked.txt", data=LOCK_BODY, headers={"Content-Type": "application/xml",
                                                                      "Timeout": "Second-600"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    assert ET.fromstring(lock.content).find(f".//{DAV}locktoken/{DAV}href").text == token.strip("<>")
    assert dav.request("PUT", "locked.txt", data=b"v2").status_code == 423
    assert dav.request("DELETE", "locked.txt").status_code == 423
    other = Dav(dav_server.url, f"{USER}@{DOMAIN}", USER_PASSWORD)  # another root: never sees this lock
    assert other.request("PUT", "locked.txt", data=b"mine").status_code == 201
    assert dav.request("PUT", "locked.txt", data=b"v2", headers={"If": f"({token})"}).status_code == 204
    assert dav.request("UNLOCK", "locked.txt", headers={"Lock-Token": token}).status_code == 204
    assert dav.request("PUT", "locked.txt", data=b"v3").status_code == 204
    assert dav.request("GET", "locked.txt").content == b"v3"


def test_lock_of_an_unmapped_url_makes_an_empty_file(dav):
    """LOCK on a name that does not exist creates an empty locked resource (RFC 4918 9.10.4)."""
    lock = dav.request("LOCK", "reserved.txt", data=LOCK_BODY, headers={"Content-Type": "application/xml"})
    assert lock.status_code == 201
    assert dav.request("GET", "reserved.txt").content == b""
    assert dav.request("UNLOCK", "reserved.txt", headers={"Lock-Token": lock.headers["Lock-Token"]}).status_code == 204


def test_interrupted_put_leaves_the_old_file(dav, dav_server):
    """A PUT whose body stops half-way leaves the old content and no temporary file."""
    dav.request("PUT", "keep.txt", data=b"old content")
    host, port = dav_server.url.split("//", 1)[1].split(":")
    import base64

    token = base64.b64encode(f"{ADMIN}@{DOMAIN}:{PASSWORD}".encode()).decode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"PUT /dav/keep.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                     f"Content-Length: 1000000\r\n\r\n".encode() + b"n" * 400000)
    assert dav.request("GET", "keep.txt").content == b"old content"
    assert not [n for n in os.listdir(site_home(dav_server, DOMAIN)) if n.startswith(".dav-upload-")]


def test_site_sees_only_its_home(dav_server, dav):
    """Each administrator sees its own home; the other site's files are not reachable by any path."""
    assert dav.request("GET", "var/www/html/secret.txt").status_code == 404
    other = Dav(dav_server.url, f"{OTHER_ADMIN}@{OTHER}", OTHER_PASSWORD)
    assert other.request("GET", "var/www/html/secret.txt").content == b"other site's secret"
    # the other site's password with this site's name is a wrong password
    assert Dav(dav_server.url, f"{ADMIN}@{DOMAIN}", OTHER_PASSWORD).propfind().status_code == 401


def test_user_of_a_site_gets_its_own_folder(dav_server):
    """A site's user works in /home/<user> of the site (made on first use), not in the whole home."""
    bob = Dav(dav_server.url, f"{USER}@{DOMAIN}", USER_PASSWORD)
    assert bob.hrefs("", "0") == ["/dav/"]
    assert bob.request("PUT", "notes.txt", data=b"bob's").status_code in (201, 204)
    folder = os.path.join(site_home(dav_server, DOMAIN), "home", USER)
    with open(os.path.join(folder, "notes.txt"), "rb") as fh:
        assert fh.read() == b"bob's"
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert bob.request("GET", "var/www/html").status_code == 404


def test_appliance_administrator_has_no_site_home(dav_server):
    """The appliance administrator's password is checked but it has no home to serve: 403 saying user@domain."""
    assert Dav(dav_server.url, "admin", "Appliance-passw0rd").propfind().status_code == 401
    assert xmlrpc_call(dav_server, "auth_change_password", "Appliance-passw0rd", key=dav_server.admin_key) is True
    answer = Dav(dav_server.url, "admin", "Appliance-passw0rd").propfind()
    assert answer.status_code == 403 and "user@domain" in answer.text


def test_get_of_a_folder_and_dav_without_slash(dav):
    """GET on a folder (no HTML browser here) is refused cleanly; /dav without its slash is the root."""
    folder = dav.request("GET", "var/www/")
    assert 400 <= folder.status_code < 500
    bare = dav.session.request("PROPFIND", dav.base.rstrip("/"), headers={"Depth": "0"}, timeout=30)
    assert bare.status_code == 207


@pytest.mark.parametrize("raw_path", [
    "/dav/%2e%2e/%2e%2e/etc/passwd", "/dav/var/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/dav/var%2f..%2f..%2fetc/passwd",
    "/dav/..%5c..%5cetc%5cpasswd", "/dav/../../../etc/passwd", "/dav/var/%00/x",
])
def test_encoded_and_dotted_paths_never_leave_the_home(dav_server, raw_path):
    """``..`` and percent-encoded separators are refused (403) or not found (404), never a file of the host."""
    import base64

    host, port = dav_server.url.split("//", 1)[1].split(":")
    token = base64.b64encode(f"{ADMIN}@{DOMAIN}:{PASSWORD}".encode()).decode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
                     .encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 403, 404), answer[:300]
    assert b"root:" not in answer


def test_links_out_of_the_home_are_never_followed(dav_server, dav):
    """A link in the home to /etc, to /etc/passwd or to another site is not listed, read, written or a destination."""
    html = os.path.join(site_home(dav_server, DOMAIN), "var/www/html")
    other_secret = os.path.join(site_home(dav_server, OTHER), "var/www/html/secret.txt")
    os.symlink("/etc", os.path.join(html, "etc-link"))
    os.symlink("/etc/passwd", os.path.join(html, "passwd-link"))
    os.symlink(other_secret, os.path.join(html, "other-link"))
    os.symlink(os.path.dirname(other_secret), os.path.join(html, "other-dir"))
    listed = dav.hrefs("var/www/html/")
    assert not [h for h in listed if "link" in h or "other-dir" in h]
    for path in ("var/www/html/etc-link/passwd", "var/www/html/passwd-link", "var/www/html/other-link",
                 "var/www/html/other-dir/secret.txt"):
        answer = dav.request("GET", path)
        assert answer.status_code in (403, 404), path
        assert b"root:" not in answer.content and b"secret" not in answer.content
    assert dav.request("PUT", "var/www/html/other-link", data=b"overwritten").status_code == 403
    assert dav.request("PUT", "var/www/html/other-dir/new.txt", data=b"x").status_code == 403
    dav.request("PUT", "src.txt", data=b"copied")
    to_link = {"Destination": dav.url("var/www/html/other-link")}
    into_link = {"Destination": dav.url("var/www/html/other-dir/x.txt")}
    assert dav.request("COPY", "src.txt", headers=to_link).status_code == 403
    assert dav.request("MOVE", "src.txt", headers=into_link).status_code == 403
    assert dav.request("DELETE", "var/www/html/other-link").status_code == 403
    with open(other_secret) as fh:
        assert fh.read() == "other site's secret"
    assert os.path.islink(os.path.join(html, "other-link"))


def test_destination_outside_dav_is_refused(dav):
    """COPY to a URL outside /dav/ or with .. does not write anywhere else."""
    dav.request("PUT", "d.txt", data=b"d")
    for destination in (dav.base.replace("/dav/", "/soap"), dav.url("../../../tmp/evil.txt"),
                        "http://elsewhere.example/dav/x.txt"):
        answer = dav.request("COPY", "d.txt", headers={"Destination": destination})
        assert answer.status_code in (400, 403, 502), (destination, answer.status_code)
    assert not os.path.exists("/tmp/evil.txt")


def test_cadaver_session(dav_server, tmp_path):
    """cadaver (commands on stdin, credentials from ~/.netrc) lists, uploads, downloads, makes folders,
    locks and moves."""
    local = tmp_path / "upload.txt"
    local.write_text("from cadaver\n")
    os.chmod(tmp_path, 0o755)
    out = cadaver(dav_server.url + "/dav/", f"{ADMIN}@{DOMAIN}", PASSWORD, [
        "ls", f"put {local} cadaver.txt", "mkcol cadir", "copy cadaver.txt cadir/copy.txt",
        "move cadir/copy.txt cadir/moved.txt", "lock cadaver.txt", "discover cadaver.txt", "unlock cadaver.txt",
        f"get cadaver.txt {tmp_path / 'back.txt'}", "propset cadaver.txt colour red", "propget cadaver.txt colour",
        "ls cadir", "delete cadir/moved.txt", "rmcol cadir",
    ], home=str(tmp_path))
    assert "var" in out, out
    assert (tmp_path / "back.txt").read_text() == "from cadaver\n", out
    assert "moved.txt" in out and "red" in out, out
    assert "failed" not in out.lower(), out
    home = site_home(dav_server, DOMAIN)
    assert os.path.exists(os.path.join(home, "cadaver.txt")) and not os.path.exists(os.path.join(home, "cadir"))


def test_cadaver_over_https(dav_server, tmp_path):
    """cadaver over the HTTPS listener (self-signed certificate accepted for the run)."""
    os.chmod(tmp_path, 0o755)
    out = cadaver(dav_server.https_url + "/dav/var/www/", f"{ADMIN}@{DOMAIN}", PASSWORD, ["ls"], home=str(tmp_path),
                  insecure=True)
    assert "html" in out, out


def test_fortification_acls_apply_to_what_dav_writes(dav, dav_server):
    """A folder's default ACL (as Fortification sets it) reaches files PUT into it; a replaced file keeps its ACL."""
    import shutil
    import subprocess

    if shutil.which("setfacl") is None:
        pytest.skip("the acl package (setfacl, getfacl) is not installed")
    html = os.path.join(site_home(dav_server, DOMAIN), "var/www/html")
    assert dav.request("MKCOL", "var/www/html/uploads").status_code == 201
    uploads = os.path.join(html, "uploads")
    subprocess.run(["setfacl", "-d", "-m", "u:www-data:rwx", uploads], check=True)
    assert dav.request("PUT", "var/www/html/uploads/photo.jpg", data=b"jpg").status_code == 201
    acl = subprocess.run(["getfacl", "--omit-header", os.path.join(uploads, "photo.jpg")], capture_output=True,
                         text=True, check=True).stdout
    assert "user:www-data:rwx" in acl
    assert dav.request("PUT", "var/www/html/config.php", data=b"<?php // v1").status_code == 201
    config = os.path.join(html, "config.php")
    subprocess.run(["setfacl", "-m", "u:www-data:r", config], check=True)
    assert dav.request("PUT", "var/www/html/config.php", data=b"<?php // v2").status_code == 204
    acl = subprocess.run(["getfacl", "--omit-header", config], capture_output=True, text=True, check=True).stdout
    assert "user:www-data:r--" in acl
    assert os.stat(config).st_uid == owner_uid()


BOMB = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY e "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
        b'<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&e;&e;&e;&e;</D:displayname></D:prop></D:propfind>')


@pytest.mark.parametrize("method, path, headers, body", [
    ("PROPFIND", "", {"Depth": "soon"}, None),
    ("PROPFIND", "", {"Depth": "0", "Content-Type": "application/xml"}, b"<not-xml"),
    ("PROPFIND", "", {"Depth": "0", "Content-Type": "application/xml"}, BOMB),
    ("PROPPATCH", "var", {"Content-Type": "application/xml"}, b"<D:propertyupdate xmlns:D='DAV:'><D:set/>"),
    ("LOCK", "var", {"Content-Type": "application/xml", "Timeout": "Second-x"}, b"<garbage/>"),
    ("COPY", "var", {"Destination": "::::"}, None),
    ("MOVE", "var", {}, None),
    ("PUT", "var/www/html/x.txt", {"Content-Range": "bytes 0-1/2"}, b"xy"),
    ("PUT", "var/www/html/x.txt", {"Content-Encoding": "gzip"}, b"xy"),
    ("GET", "%ff%fe", {}, None),
    ("GET", "a" * 3000, {}, None),
    ("UNLOCK", "var", {"Lock-Token": "<nope>"}, None),
    ("BREW", "", {}, None),
])
def test_bad_requests_never_fail_the_server(dav, method, path, headers, body):
    """Malformed DAV requests of every kind get an answer that is no 500 (a 4xx; 501 for an unknown method or
    encoding; 502 for a Destination on another server, as RFC 4918 says; an entity never expands)."""
    answer = dav.request(method, path, headers=headers, data=body, timeout=30)
    assert answer.status_code != 500 and answer.status_code >= 400 or body is BOMB, \
        (answer.status_code, answer.text[:300])
    assert b"aaaaaaaaaaaaaaaaaaaa" not in answer.content


def test_no_host_disk_figures_in_properties(dav):
    """PROPFIND does not report the host disk's used and free bytes (they are no site's quota)."""
    answer = dav.propfind("", "1")
    assert answer.status_code == 207 and b"quota-used-bytes" not in answer.content
    assert b"quota-available-bytes" not in answer.content
