"""Our own PROPFIND answer says what WsgiDAV says: the same responses and properties for a
folder of files, subfolders, dead properties, locks and odd names, compared as parsed XML
(order aside) with WsgiDAV's answer to the same request; unusual requests are left to WsgiDAV."""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import re

import pytest
from lxml import etree
from twisted.internet.task import Clock

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.dav import propfind
from apiserver.dav.state import DavLimits, DavState
from apiserver.dav.state_db import DbDavState
from apiserver.dav.wsgi import DavAccount, DavApplication
from apiserver.sites.home import SiteHomes
from apiserver.storage import Storage
from tests.dav_support import wsgi_call

DOMAIN = "pf.example.com"
ACCOUNT = DavAccount(DOMAIN)
ODD = ["a b.txt", "100%.html", "ünïcødé.css", "x&y<z>.js", "q'(1),$-_|.tar.gz", "noext", ".hidden", "r\rs.txt",
       "semi;colon#hash?.png"]


@pytest.fixture
def app(tmp_path):
    """A DAV application (not acting as another account) over one site with a folder of odd names."""
    home = tmp_path / "sites" / DOMAIN
    listing = home / "list"
    (listing / "sub folder & co").mkdir(parents=True)
    (listing / "empty").mkdir()
    for i, name in enumerate(ODD + [f"file-{n:03d}.html" for n in range(20)]):
        (listing / name).write_bytes(b"x" * i)
    (listing / ".dav-upload-0123").write_bytes(b"in progress")
    os.symlink("/etc/passwd", listing / "link")
    os.mkfifo(listing / "fifo")
    store = Storage.from_url(f"sqlite:///{tmp_path / 'state.db'}", pool_size=2)
    store.create_schema()
    with store.write() as conn:
        conn.execute(store.tables.sites.insert().values(domain=DOMAIN, created_at=datetime.datetime(2026, 1, 1)))
    pool = concurrent.futures.ThreadPoolExecutor(1)
    database = DbDavState(store)
    state = DavState(database, database, DavLimits(Config(BUILTIN_SECTIONS, {}, None)), Clock(),
                     lambda fn, *args: pool.submit(fn, *args).result())
    yield DavApplication(SiteHomes(str(tmp_path / "sites"), "root"), state, as_owner=False)
    pool.shutdown()
    store.dispose()


def call(app, method, path, body=b"", **headers):
    """One request as Twisted's WSGIResource makes it (``path`` decoded, its UTF-8 as Latin-1)."""
    return wsgi_call(app, method, path.encode().decode("latin-1"), ACCOUNT, body, **headers)


def shape(element, tail: str = "") -> tuple:
    """An element as names in Clark notation (prefixes aside), attributes, text and children."""
    text = re.sub(r"Second-(-?\d+)", "Second-N", element.text or "")
    return (element.tag, tuple(sorted(element.attrib.items())), text,
            tuple(shape(child, child.tail or "") for child in element), tail)


def canonical(body: bytes) -> dict:
    """``{href: {(status, prop as canonical XML)}}``: the answer with the order of responses,
    propstats and properties set aside; a lock's remaining seconds (read from the clock at each answer) left out."""
    root = etree.fromstring(body)
    found = {}
    for response in root.iter("{DAV:}response"):
        href = response.findtext("{DAV:}href")
        assert href not in found, f"{href} answered twice"
        props = set()
        for propstat in response.iter("{DAV:}propstat"):
            status = propstat.findtext("{DAV:}status")
            for prop in propstat.find("{DAV:}prop"):
                props.add((status, shape(prop)))
        found[href] = props
    return found


def both(app, monkeypatch, path, body=b"", **headers):
    """Our answer and WsgiDAV's (the writer switched off) to the same request."""
    ours = call(app, "PROPFIND", path, body, **headers)
    with monkeypatch.context() as patch:
        patch.setattr(propfind, "answer", lambda *args: None)
        theirs = call(app, "PROPFIND", path, body, **headers)
    return ours, theirs


def dress(app):
    """Dead properties (one with XML inside, one per odd name) and locks (on a file, an infinite one on a folder)."""
    for name in ODD[:4] + ["sub folder & co"]:
        href = "/list/" + name
        body = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
                f'<Z:note>for {name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}</Z:note>'
                f'<Z:tree><Z:a x="1">é</Z:a></Z:tree></D:prop></D:set></D:propertyupdate>').encode()
        assert call(app, "PROPPATCH", href, body)[0] == 207
    lock = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            b'<D:locktype><D:write/></D:locktype><D:owner><D:href>mailto:a@b</D:href></D:owner></D:lockinfo>')
    assert call(app, "LOCK", "/list/noext", lock, timeout="Second-600", depth="0")[0] == 200
    assert call(app, "LOCK", "/list/empty", lock, timeout="Second-600", depth="infinity")[0] == 200


ALLPROP = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
NAMED = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><D:getcontentlength/>'
         b'<D:resourcetype/><D:getetag/><D:displayname/><D:lockdiscovery/><Z:note/><Z:absent/>'
         b'<D:getlastmodified/><D:creationdate/><D:getcontenttype/><D:supportedlock/></D:prop></D:propfind>')


@pytest.mark.parametrize("body", [b"", ALLPROP, NAMED], ids=["empty", "allprop", "prop"])
@pytest.mark.parametrize("path, depth", [("/list/", "1"), ("/list/", "0"), ("/list/x&y<z>.js", "0"),
                                         ("/list/noext", "1"), ("/", "1")])
def test_our_answer_is_wsgidavs(app, monkeypatch, body, path, depth):
    """Every response and property (dead ones, locks, odd names) is the one WsgiDAV gives."""
    dress(app)
    (status, ours), (their_status, theirs) = both(app, monkeypatch, path, body, depth=depth)
    assert status == their_status == 207
    assert canonical(ours) == canonical(theirs)
    if path == "/list/" and depth == "1":
        assert len(canonical(ours)) == len(ODD) + 20 + 3  # the folder, its files and two subfolders


def test_the_comparison_sees_a_changed_property(app, monkeypatch):
    """Undressed, the answers agree; a property our writer got wrong (a size changed by one) would not."""
    (_, ours), (_, theirs) = both(app, monkeypatch, "/list/", depth="1")
    assert canonical(ours) == canonical(theirs)
    wrong = ours.replace(b"<D:getcontentlength>3</D:getcontentlength>", b"<D:getcontentlength>4</D:getcontentlength>")
    assert wrong != ours
    assert canonical(wrong) != canonical(theirs)


def test_plain_members_are_written_without_wsgidav(app, monkeypatch):
    """A plain file's response is written by the writer, not by WsgiDAV's property machinery."""
    written = []
    real = propfind._wsgidav_response
    monkeypatch.setattr(propfind, "_wsgidav_response", lambda res, *a: written.append(res.path) or real(res, *a))
    status, _ = call(app, "PROPFIND", "/list/", depth="1")
    assert status == 207 and written == ["/list/"]  # the folder asked for alone


@pytest.mark.parametrize("body, headers", [
    (b'<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>', {"depth": "1"}),
    (b'<D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/></D:prop></D:propfind>', {"depth": "1"}),
    (b"<not xml", {"depth": "1"}),
    (b"", {"depth": "infinity"}),
    (b"", {"depth": "1", "if_none_match": "*"}),
])
def test_unusual_requests_get_wsgidavs_answer(app, monkeypatch, body, headers):
    """propname, other live properties, bad XML, Depth infinity and conditions: WsgiDAV's own answer."""
    (status, ours), (their_status, theirs) = both(app, monkeypatch, "/list/", body, **headers)
    assert status == their_status
    if status == 207:
        assert canonical(ours) == canonical(theirs)


def test_a_folder_outside_the_home_is_not_listed(tmp_path):
    """The listing's folder descriptor is checked: one outside the home is refused (403), one inside passes."""
    from wsgidav.dav_error import DAVError

    from apiserver.dav.provider import HomeProvider

    (tmp_path / "home/inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    provider = HomeProvider(str(tmp_path / "home"))
    for name, refused in (("home/inside", False), ("outside", True)):
        fd = os.open(tmp_path / name, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if refused:
                with pytest.raises(DAVError) as caught:
                    provider.check_inside(fd)
                assert caught.value.value == 403
            else:
                provider.check_inside(fd)
        finally:
            os.close(fd)
