"""A plain GET's file opened on the calling (reactor) thread once its account's root was located:
as the account (the kernel refuses what it may not read), never waiting on a FIFO, never through a
link, and back to a DAV thread when the root is not remembered, expired or re-created.

Real system users and homes (the fixtures of :mod:`tests.dav.test_dav_actas`)."""

from __future__ import annotations

import os
import time

import pytest
from twisted.internet.task import Clock

from apiserver.dav import beneath, located
from apiserver.dav.located import LOCATED_TTL, MISSING, LocatedRoots
from apiserver.dav.wsgi import DavAccount
from tests.dav.test_dav_actas import A, dav_app, sites_root, users  # noqa: F401 (fixtures)
from tests.host_accounts import requires_root

pytestmark = requires_root()

HTML = "/var/www/html"


def own_file(sites_root, users, name: str, data: bytes, owner=None, mode=0o640) -> str:
    """A file in A's document root, owned by A's administrator (or ``owner``'s uid/gid)."""
    path = os.path.join(sites_root, A, HTML.lstrip("/"), name)
    with open(path, "wb") as fh:
        fh.write(data)
    uid, gid = owner or (users[A][0].uid, users[A][0].gid)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def thread_ids() -> dict:
    with open("/proc/thread-self/status") as fh:
        return {line.split(":")[0]: line.split()[1:] for line in fh if line.startswith(("Uid:", "Gid:"))}


@pytest.fixture(params=["openat2", "folder by folder"])
def opened_by(request, monkeypatch):
    """Both ways walk_open reaches a file: openat2 beneath the root, and (a kernel without it) folder by folder."""
    if request.param == "openat2":
        assert beneath.opener(located._FILE) is not None  # this kernel has it: the test means something
    else:
        monkeypatch.setattr(located, "beneath_opener", lambda flags: None)
    return request.param


def test_opened_here_as_the_account_once_located(sites_root, users, opened_by):
    """Not located: MISSING; after a DAV thread located it, opened here as the account, the thread root again."""
    own_file(sites_root, users, "page.html", b"<p>a</p>")
    own_file(sites_root, users, "root-only.txt", b"secret", owner=(0, 0), mode=0o600)
    roots, account = LocatedRoots(dav_app(sites_root, users), Clock()), DavAccount(A)
    assert roots.open_now(account, f"{HTML}/page.html") is MISSING
    first = roots.open_located(account, f"{HTML}/page.html", read_small=True)
    assert first.content == b"<p>a</p>" and first.fileobj is None
    answer = roots.open_now(account, f"{HTML}/page.html")
    try:
        assert answer.content is None and answer.fileobj.read() == b"<p>a</p>" and answer.size == 8
        assert ("Content-Length", "8") in answer.headers and ("Content-Type", "text/html") in answer.headers
    finally:
        answer.fileobj.close()
    # root could open it, the account may not: left to WsgiDAV on a thread (which refuses it too)
    assert roots.open_now(account, f"{HTML}/root-only.txt") is MISSING
    assert roots.open_located(account, f"{HTML}/root-only.txt", read_small=True) is None
    assert roots.open_now(account, f"{HTML}/absent.txt") is MISSING
    assert thread_ids() == {"Uid": ["0", "0", "0", "0"], "Gid": ["0", "0", "0", "0"]}


def test_a_fifo_a_link_or_a_hard_link_is_left_to_a_thread_without_waiting(sites_root, users, opened_by):
    """A FIFO is not waited on, links (last part or folder), hard links and upload names are not
    served here: MISSING, and on a DAV thread WsgiDAV refuses them (None)."""
    roots, account = LocatedRoots(dav_app(sites_root, users), Clock()), DavAccount(A)
    target = own_file(sites_root, users, "target.txt", b"t")
    html = os.path.dirname(target)
    os.mkfifo(os.path.join(html, "pipe"))
    os.chown(os.path.join(html, "pipe"), users[A][0].uid, users[A][0].gid)
    os.symlink(target, os.path.join(html, "link.txt"))
    os.link(target, os.path.join(html, "hard.txt"))
    own_file(sites_root, users, ".dav-upload-x", b"partial")
    os.symlink(html, os.path.join(sites_root, A, "var/www/linked"))
    assert roots.locate(account) is not None
    started = time.monotonic()
    assert roots.open_now(account, f"{HTML}/pipe") is MISSING
    assert time.monotonic() - started < 5  # a blocking open would never return at all
    for name in ("pipe", "link.txt", "hard.txt", ".dav-upload-x"):
        assert roots.open_now(account, f"{HTML}/{name}") is MISSING, name
        assert roots.open_located(account, f"{HTML}/{name}", read_small=True) is None, name
    assert roots.open_now(account, "/var/www/linked/target.txt") is MISSING  # a folder link: WsgiDAV decides
    os.unlink(os.path.join(html, "hard.txt"))
    answer = roots.open_now(account, f"{HTML}/target.txt")
    try:
        assert answer.fileobj.read() == b"t"
    finally:
        answer.fileobj.close()


def test_expired_or_recreated_roots_go_back_to_a_thread(sites_root, users):
    """After LOCATED_TTL, or once the home was replaced by another folder, open_now answers MISSING."""
    clock = Clock()
    roots, account = LocatedRoots(dav_app(sites_root, users), clock), DavAccount(A)
    own_file(sites_root, users, "p.txt", b"p")
    assert roots.locate(account) is not None
    roots.open_now(account, f"{HTML}/p.txt").fileobj.close()
    clock.advance(LOCATED_TTL)
    assert roots.open_now(account, f"{HTML}/p.txt") is MISSING
    assert roots.locate(account) is not None
    home = os.path.join(sites_root, A)
    os.rename(home, home + ".old")
    os.makedirs(os.path.join(home, HTML.lstrip("/")))
    assert roots.open_now(account, f"{HTML}/p.txt") is MISSING  # another folder at the same path
    assert roots.open_now(account, f"{HTML}/p.txt") is MISSING  # and forgotten, not retried here


def test_headers_as_wsgidav_writes_them_and_content_types_by_name(sites_root, users):
    """open_now's Last-Modified is WsgiDAV's format, it adds no Date (Twisted does), and mime_type is WsgiDAV's type."""
    from wsgidav import util as wsgidav_util

    from apiserver.dav.located import mime_type

    path = own_file(sites_root, users, "page.html", b"<p>a</p>")
    roots, account = LocatedRoots(dav_app(sites_root, users), Clock()), DavAccount(A)
    roots.open_located(account, f"{HTML}/page.html", read_small=True)
    answer = roots.open_now(account, f"{HTML}/page.html")
    try:
        headers = dict(answer.headers)
    finally:
        answer.fileobj.close()
    assert headers["Last-Modified"] == wsgidav_util.get_rfc1123_time(os.stat(path).st_mtime)
    assert "Date" not in headers and headers["Content-Type"] == "text/html"
    for name in ("a.html", "b.TXT", "x.tar.gz", "data:text,x.png", "noext", "a.mp4", ".hidden"):
        assert mime_type(name) == wsgidav_util.guess_mime_type(f"{HTML}/{name}", {}), name


def test_openat2_stays_beneath_the_folder_and_follows_no_link(tmp_path):
    """BeneathOpener: a file below opens; '..' out of the folder is EXDEV, a link (even inside) ELOOP."""
    import errno

    opener = beneath.opener(located._FILE)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "f").write_bytes(b"f")
    (tmp_path / "outside").write_bytes(b"o")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "in" / "sub")
    folder = os.open(tmp_path / "in", located._FOLDER)
    try:
        fd = opener.open(folder, "sub/f")
        assert os.read(fd, 10) == b"f"
        os.close(fd)
        for path, code in (("../outside", errno.EXDEV), ("link/f", errno.ELOOP), ("sub/missing", errno.ENOENT)):
            with pytest.raises(OSError) as raised:
                opener.open(folder, path)
            assert raised.value.errno == code, path
    finally:
        os.close(folder)
