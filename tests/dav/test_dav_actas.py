"""DAV requests act as the site's own account: the kernel refuses what a lost path check would allow.

Real system users (one per site), real homes, WsgiDAV called as Twisted's WSGI resource calls it
(one thread runs the call and every step of the body).  The attack of issue 19: a site
administrator swaps a folder it may write for a link to another site's home while sending
MOVE and DELETE.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import datetime
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from twisted.internet.task import Clock

from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.dav.state import DavLimits, DavScope, DavState, storage_caller
from apiserver.dav.state_db import DbDavState
from apiserver.dav.provider import HomeFileResource, HomeProvider
from apiserver.dav.wsgi import DavAccount, DavApplication
from apiserver.sites.actas import SiteFiles, ThreadIdentity
from apiserver.sites.home import SiteHomes
from apiserver.storage import Storage
from tests.dav_support import RACE_SWAPPER, real_folder_back_with_a_decoy
from tests.dav_support import wsgi_call as call
from tests.host_accounts import host_accounts, requires_root

pytestmark = requires_root()

A, B = "a.example.com", "b.example.com"
SECRET = b"define('DB_PASSWORD', 'b-site-secret');"


@pytest.fixture(scope="module")
def users():
    """Two sites, each with its administrator and one more user."""
    with host_accounts(groups=2, users_per_group=2) as sites:
        yield {A: sites[0], B: sites[1]}


@pytest.fixture
def sites_root(users):
    """``<root>/<domain>`` homes owned by each site's administrator, 0750 with the site's group."""
    root = tempfile.mkdtemp(prefix="dav-actas-")
    os.chmod(root, 0o755)
    try:
        for domain, (admin, _user) in users.items():
            html = os.path.join(root, domain, "var/www/html")
            os.makedirs(html)
            for path in (os.path.join(root, domain), os.path.join(root, domain, "var"),
                         os.path.join(root, domain, "var/www"), html):
                os.chown(path, admin.uid, admin.gid)
                os.chmod(path, 0o750)
        victim = os.path.join(root, B, "var/www/html/wp-config.php")
        with open(victim, "wb") as fh:
            fh.write(SECRET)
        os.chown(victim, users[B][0].uid, users[B][0].gid)
        os.chmod(victim, 0o640)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def dav_app(sites_root, users, acting=True, state=None) -> DavApplication:
    """The DAV application over ``sites_root`` (``state``: its DAV state, default
    :func:`dav_state`); each account acts as its own system user."""
    def identity_of(home, user_name):
        admin, user = users[home.domain]
        return user.identity if user_name else admin.identity

    homes = SiteHomes(sites_root, "root")
    return DavApplication(homes, state or dav_state(sites_root), as_owner=acting,
                          site_files=SiteFiles(ThreadIdentity(), homes, identity_of))


def state_store(sites_root) -> Storage:
    """A SQLite file beside the sites (root's, 0600), which both sites are rows of."""
    store = Storage.from_url(f"sqlite:///{os.path.join(sites_root, 'state.db')}", pool_size=2)
    store.create_schema()
    for domain in (A, B):
        with store.write() as conn:
            conn.execute(store.tables.sites.insert().values(domain=domain, created_at=datetime.datetime(2026, 1, 1)))
    return store


def dav_state(sites_root) -> DavState:
    """Dead properties and locks in :func:`state_store`."""
    store = state_store(sites_root)
    database = DbDavState(store)
    settings = Config(BUILTIN_SECTIONS, {}, None)
    pool = concurrent.futures.ThreadPoolExecutor(1)  # the blocking pool: its thread stays the server

    def call_blocking(fn, *args):
        return pool.submit(fn, *args).result()

    return DavState(database, database, DavLimits(settings), Clock(), call_blocking)


def test_put_mkcol_copy_move_make_files_of_the_account(sites_root, users):
    """What the administrator and a user of the site create over DAV belongs to each of them (uid, site gid)."""
    app = dav_app(sites_root, users)
    admin, user = users[A]
    assert call(app, "PUT", "/var/www/html/index.php", DavAccount(A), b"<?php")[0] == 201
    assert call(app, "MKCOL", "/var/www/html/uploads", DavAccount(A))[0] == 201
    assert call(app, "COPY", "/var/www/html/index.php", DavAccount(A),
                destination="http://127.0.0.1/dav/var/www/html/uploads/copy.php")[0] == 201
    assert call(app, "MOVE", "/var/www/html/uploads/copy.php", DavAccount(A),
                destination="http://127.0.0.1/dav/var/www/html/moved.php")[0] == 201
    assert call(app, "PUT", "/notes.txt", DavAccount(A, user.name), b"mine")[0] == 201
    html = os.path.join(sites_root, A, "var/www/html")
    for name in ("index.php", "uploads", "moved.php"):
        info = os.stat(os.path.join(html, name))
        assert (info.st_uid, info.st_gid) == (admin.uid, admin.gid), name
    user_home = os.path.join(sites_root, A, "home", user.name)
    for path in (user_home, os.path.join(user_home, "notes.txt")):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (user.uid, user.gid)
    assert os.stat(user_home).st_mode & 0o777 == 0o700
    # the user's folder is the user's alone: its administrator's DAV cannot list into it
    assert call(app, "PROPFIND", f"/home/{user.name}/", DavAccount(A), depth="1")[0] == 403
    assert call(app, "GET", "/var/www/html/index.php", DavAccount(A))[1] == b"<?php"
    with open("/proc/thread-self/status") as fh:  # the thread that served them is root again
        ids = {line.split(":")[0]: line.split()[1:] for line in fh if line.startswith(("Uid:", "Gid:"))}
    assert ids == {"Uid": ["0", "0", "0", "0"], "Gid": ["0", "0", "0", "0"]}


def test_a_dav_thread_reads_locks_itself_as_the_server_and_honours_another_nodes(sites_root, users):
    """Lock lookups on the DAV thread, root for the call only (the 0600 database opens); another node's lock: 423."""
    store = state_store(sites_root)
    store.engine.dispose()  # no connection opened yet: the DAV thread opens the first
    database = DbDavState(store)
    seen = []
    live_locks = database.live_locks

    def recorded(site, now):
        with open("/proc/thread-self/status") as fh:
            fsuid = next(line.split()[4] for line in fh if line.startswith("Uid:"))
        seen.append((threading.get_ident(), fsuid))
        return live_locks(site, now)

    database.live_locks = recorded
    state = DavState(database, database, DavLimits(Config(BUILTIN_SECTIONS, {}, None)), Clock(), storage_caller(2))
    app = dav_app(sites_root, users, state=state)
    other_node = DbDavState(Storage.from_url(f"sqlite:///{os.path.join(sites_root, 'state.db')}"))
    site_a = DavScope.of(other_node.site_id(A), A, None)
    other_node.create_lock(site_a, {"token": "opaquelocktoken:other-node", "root": "/var/www/html/taken.php",
                                    "scope": "exclusive", "depth": "0", "principal": A, "owner": b"",
                                    "timeout": 600.0, "expire": 600.0}, 0.0, 10)
    assert call(app, "PUT", "/var/www/html/free.php", DavAccount(A), b"<?php")[0] == 201
    assert call(app, "PUT", "/var/www/html/taken.php", DavAccount(A), b"<?php")[0] == 423
    assert not os.path.exists(os.path.join(sites_root, A, "var/www/html/taken.php"))
    assert seen and all(entry == (threading.get_ident(), "0") for entry in seen)


def swap_before_acting(monkeypatch, folder: str, link_to: str) -> None:
    """The race lost at the worst moment, every time: every check has passed and, just before the
    file resource renames or unlinks its path, ``folder`` becomes a link to ``link_to``."""
    def swap():
        if not os.path.islink(folder):
            os.rename(folder, folder + ".real")
            os.symlink(link_to, folder)

    for method in ("move_recursive", "delete"):
        original = getattr(HomeFileResource, method)

        def swapped(self, *args, _original=original):
            swap()
            return _original(self, *args)

        monkeypatch.setattr(HomeFileResource, method, swapped)


@pytest.mark.parametrize("acting", [False, True], ids=["as-root", "as-the-account"])
@pytest.mark.parametrize("method", ["MOVE", "DELETE"])
def test_a_lost_path_check_never_reaches_the_other_site(sites_root, users, monkeypatch, acting, method):
    """Checks passed, folder then swapped for a link: neither root (descriptors) nor the account reaches B."""
    app = dav_app(sites_root, users, acting=acting)
    up = os.path.join(sites_root, A, "var/www/html/up")
    os.mkdir(up)
    os.chown(up, users[A][0].uid, users[A][0].gid)
    with open(os.path.join(up, "wp-config.php"), "wb") as fh:
        fh.write(b"decoy")
    swap_before_acting(monkeypatch, up, os.path.join(sites_root, B, "var/www/html"))
    status, _ = call(app, method, "/var/www/html/up/wp-config.php", DavAccount(A),
                     destination="http://127.0.0.1/dav/var/www/html/stolen.php")
    victim = os.path.join(sites_root, B, "var/www/html/wp-config.php")
    assert open(victim, "rb").read() == SECRET, status
    assert status == 403
    assert not os.path.exists(os.path.join(sites_root, A, "var/www/html/stolen.php"))


def searchable_by_all(sites_root, domain: str) -> None:
    """The folders down to ``domain``'s document root passable by every account (``o+x``), as a real
    host may have them: a check that strays there as another account meets the files."""
    path = os.path.join(sites_root, domain)
    for part in ("", "var", "www", "html"):
        path = os.path.join(path, part)
        os.chmod(path, os.stat(path).st_mode | 0o001)


@pytest.mark.parametrize("acting", [False, True], ids=["as-root", "as-the-account"])
def test_the_check_after_a_delete_meeting_a_swapped_link_answers_403(sites_root, users, monkeypatch, acting):
    """WsgiDAV's check after DELETE passes its path check, then the folder becomes a link to B's root: 403, not 500."""
    app = dav_app(sites_root, users, acting=acting)
    searchable_by_all(sites_root, B)
    up = os.path.join(sites_root, A, "var/www/html/up")
    os.mkdir(up)
    os.chown(up, users[A][0].uid, users[A][0].gid)
    with open(os.path.join(up, "wp-config.php"), "wb") as fh:
        fh.write(b"decoy")
    deleted = []
    delete, loc_to_file_path = HomeFileResource.delete, HomeProvider._loc_to_file_path

    def delete_and_note(self):
        delete(self)
        deleted.append(self.path)

    def checked_then_swapped(self, path, environ=None):
        file_path = loc_to_file_path(self, path, environ)
        if deleted and not os.path.islink(up):  # the check after the delete: its path check passed
            os.rename(up, up + ".real")
            os.symlink(os.path.join(sites_root, B, "var/www/html"), up)
        return file_path

    monkeypatch.setattr(HomeFileResource, "delete", delete_and_note)
    monkeypatch.setattr(HomeProvider, "_loc_to_file_path", checked_then_swapped)
    status, body = call(app, "DELETE", "/var/www/html/up/wp-config.php", DavAccount(A))
    assert deleted == ["/var/www/html/up/wp-config.php"] and os.path.islink(up)
    assert status == 403, body
    assert open(os.path.join(sites_root, B, "var/www/html/wp-config.php"), "rb").read() == SECRET
    assert os.listdir(up + ".real") == []  # A's own file was the one deleted


def test_a_file_made_at_the_name_after_a_delete_is_not_a_failed_delete(sites_root, users, monkeypatch):
    """A new file made at the deleted name before WsgiDAV's check (the race replay's decoy) leaves the DELETE a 204."""
    app = dav_app(sites_root, users)
    target = os.path.join(sites_root, A, "var/www/html/wp-config.php")
    with open(target, "wb") as fh:
        fh.write(b"first")
    delete = HomeFileResource.delete

    def delete_then_made_again(self):
        delete(self)
        with open(target, "wb") as fh:
            fh.write(b"made since")

    monkeypatch.setattr(HomeFileResource, "delete", delete_then_made_again)
    status, body = call(app, "DELETE", "/var/www/html/wp-config.php", DavAccount(A))
    assert status == 204, body
    assert open(target, "rb").read() == b"made since"


@pytest.mark.parametrize("method", ["MOVE", "DELETE"])
def test_a_link_swapped_while_its_path_is_resolved_answers_403(sites_root, users, monkeypatch, method):
    """The path check's realpath meeting a link that is one no more (readlink: EINVAL) answers 403, not 500."""
    app = dav_app(sites_root, users)
    html = os.path.join(sites_root, A, "var/www/html")
    os.mkdir(os.path.join(html, "real"))
    with open(os.path.join(html, "real/wp-config.php"), "wb") as fh:
        fh.write(b"decoy")
    os.symlink("real", os.path.join(html, "up"))
    readlink = os.readlink

    def swapped_back_meanwhile(path, *args, **kwargs):
        if os.fspath(path) == os.path.join(html, "up"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        return readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", swapped_back_meanwhile)
    status, body = call(app, method, "/var/www/html/up/wp-config.php", DavAccount(A),
                        destination="http://127.0.0.1/dav/var/www/html/moved.php")
    assert status == 403, body
    assert open(os.path.join(html, "real/wp-config.php"), "rb").read() == b"decoy"


def test_a_delete_that_left_its_file_is_still_a_failed_delete(sites_root, users, monkeypatch):
    """WsgiDAV's check after DELETE still answers 500 for a delete that removed nothing without raising."""
    app = dav_app(sites_root, users)
    target = os.path.join(sites_root, A, "var/www/html/kept.php")
    with open(target, "wb") as fh:
        fh.write(b"kept")
    monkeypatch.setattr(HomeFileResource, "delete", lambda self: None)  # fails silently
    status, _ = call(app, "DELETE", "/var/www/html/kept.php", DavAccount(A))
    assert status == 500 and open(target, "rb").read() == b"kept"


def test_move_and_delete_race_replay_never_wins(sites_root, users):
    """Issue 19's attack, replayed: A's folder swapped for a link to B's document root (another process,
    RENAME_EXCHANGE) while A sends 1,500 MOVEs and 1,500 DELETEs; B's file is never taken nor deleted."""
    if not hasattr(ctypes.CDLL(None), "renameat2"):
        pytest.skip("the C library has no renameat2")
    app = dav_app(sites_root, users)
    admin = users[A][0]
    html = os.path.join(sites_root, A, "var/www/html")
    up, alt = os.path.join(html, "up"), os.path.join(html, "up-alt")
    os.mkdir(up)
    os.symlink(os.path.join(sites_root, B, "var/www/html"), alt)
    for path in (up,):
        os.chown(path, admin.uid, admin.gid)
    stop = os.path.join(sites_root, "stop")
    swapper = subprocess.Popen([sys.executable, "-c", RACE_SWAPPER, up, alt, stop, "64"])
    victim = os.path.join(sites_root, B, "var/www/html/wp-config.php")
    statuses, failures = {}, []
    try:
        for attempt in range(1500):
            for method, headers in (("MOVE", {"destination": f"http://127.0.0.1/dav/var/www/html/stolen-{attempt}.php"}),
                                    ("DELETE", {})):
                status, body = call(app, method, "/var/www/html/up/wp-config.php", DavAccount(A), **headers)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 500:
                    failures.append((method, body[:300]))
    finally:
        open(stop, "w").close()
        swapper.wait(30)
    stolen = [name for name in os.listdir(html) if name.startswith("stolen-")
              and open(os.path.join(html, name), "rb").read() == SECRET]
    assert stolen == [] and open(victim, "rb").read() == SECRET, statuses
    assert failures == [], statuses  # refused is 403, never a failure of the server
    # The attack really raced: some requests were refused by the path checks (they saw the link), others
    # got past them (the decoy moved, deleted or gone, or the kernel refusing the account); how many of
    # each is the scheduler's choice, so neither count is asked for more than once.
    past_the_checks = sum(count for status, count in statuses.items() if status != 403)
    assert statuses.get(403, 0) > 0 and past_the_checks > 0, statuses
    # Once the swapping stops, the same MOVE of A's own file works: the refusals were the race, not the server.
    real_folder_back_with_a_decoy(up, alt, admin.uid, admin.gid)
    status, _ = call(app, "MOVE", "/var/www/html/up/wp-config.php", DavAccount(A),
                     destination="http://127.0.0.1/dav/var/www/html/moved.php")
    assert status == 201 and open(os.path.join(html, "moved.php"), "rb").read() == b"decoy"
