"""Acting as an account for file access, per thread: real users, real files, the kernel deciding."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import threading

import pytest

from apiserver.sites.actas import (
    MAX_GROUPS, ActingIterator, FsIdentity, IdentityError, SiteFiles, Syscalls, ThreadIdentity, server_step,
)
from tests.host_accounts import host_accounts, requires_root

pytestmark = requires_root()

CAP_DAC_OVERRIDE = 1


def thread_status() -> dict:
    with open("/proc/thread-self/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def fs_ids() -> tuple:
    status = thread_status()
    return int(status["Uid"].split()[3]), int(status["Gid"].split()[3]), status["Groups"].split()


def can_read(path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.read()
        return True
    except PermissionError:
        return False


@pytest.fixture(scope="module")
def two_sites():
    """Two "sites" (groups), each with one user."""
    with host_accounts(groups=2) as sites:
        yield sites[0][0], sites[1][0]


@pytest.fixture
def tmp_path():
    """A folder every account may enter (pytest's own lies in root's 0700 folder)."""
    path = tempfile.mkdtemp(prefix="actas-")
    os.chmod(path, 0o755)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_files(tmp_path, two_sites):
    """A 0600 file of each user in a folder everyone may enter."""
    a, b = two_sites
    os.chmod(tmp_path, 0o755)
    paths = {}
    for user in (a, b):
        path = tmp_path / f"{user.name}.txt"
        path.write_text(f"{user.name}'s secret")
        os.chown(path, user.uid, user.gid)
        os.chmod(path, 0o600)
        paths[user.name] = path
    return paths


def test_a_thread_acting_as_a_reads_only_a_while_another_stays_root(two_sites, private_files):
    """While one thread acts as A (reads A's 0600 file, not B's), a concurrent thread stays root and reads both."""
    a, b = two_sites
    threads = ThreadIdentity()
    inside, done = threading.Barrier(2, timeout=10), threading.Event()
    seen = {}

    def as_a():
        with threads.acting_as(a.identity):
            seen["ids"] = fs_ids()
            seen["a"], seen["b"] = can_read(private_files[a.name]), can_read(private_files[b.name])
            inside.wait()       # the root thread reads now, while this one is still A
            done.wait(10)
        seen["after"] = fs_ids()

    def as_root():
        inside.wait()
        seen["root"] = (fs_ids()[0], can_read(private_files[a.name]), can_read(private_files[b.name]))
        done.set()

    workers = [threading.Thread(target=as_a), threading.Thread(target=as_root)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert seen["ids"] == (a.uid, a.gid, [str(a.gid)])
    assert (seen["a"], seen["b"]) == (True, False)
    assert seen["root"] == (0, True, True)
    assert seen["after"][:2] == (0, 0)
    assert fs_ids()[:2] == (0, 0)


def test_files_made_while_acting_belong_to_the_account(two_sites, tmp_path):
    """A file and a folder made while acting as A are A's (uid and gid); root's folder refuses A."""
    a, _b = two_sites
    own = tmp_path / "a-folder"
    own.mkdir()
    os.chown(own, a.uid, a.gid)
    os.chmod(tmp_path, 0o755)
    with ThreadIdentity().acting_as(a.identity):
        (own / "new.txt").write_text("x")
        (own / "sub").mkdir()
        with pytest.raises(PermissionError):
            (tmp_path / "root-owned.txt").write_text("x")
    for made in (own / "new.txt", own / "sub"):
        assert (os.stat(made).st_uid, os.stat(made).st_gid) == (a.uid, a.gid)
    assert not (tmp_path / "root-owned.txt").exists()


def test_root_file_capabilities_are_gone_while_acting_and_back_after(two_sites):
    """CAP_DAC_OVERRIDE leaves the thread's effective set while acting, and returns afterwards."""
    a, _b = two_sites
    before = int(thread_status()["CapEff"], 16)
    assert before & (1 << CAP_DAC_OVERRIDE)
    with ThreadIdentity().acting_as(a.identity):
        assert not int(thread_status()["CapEff"], 16) & (1 << CAP_DAC_OVERRIDE)
    assert int(thread_status()["CapEff"], 16) == before
    assert fs_ids()[2] == thread_status()["Groups"].split()


def test_supplementary_groups_are_the_identitys_and_put_back(two_sites, tmp_path):
    """Extra groups let the thread into a group-only folder; after the block the thread's own groups are back."""
    a, b = two_sites
    shared = tmp_path / "b-group-only"
    shared.mkdir()
    (shared / "f").write_text("b's group")
    os.chown(shared, 0, b.gid)
    os.chmod(shared, 0o070)
    groups_before = fs_ids()[2]
    threads = ThreadIdentity()
    with threads.acting_as(a.identity):
        assert not can_read(shared / "f")
    with threads.acting_as(FsIdentity(a.uid, a.gid, (a.gid, b.gid), a.name)):
        assert can_read(shared / "f")
    assert fs_ids()[2] == groups_before


def test_nested_blocks_restore_the_outer_identity(two_sites):
    """Acting as B inside A's block returns to A, then to root."""
    a, b = two_sites
    threads = ThreadIdentity()
    with threads.acting_as(a.identity):
        with threads.acting_as(b.identity):
            assert fs_ids()[:2] == (b.uid, b.gid) and threads.depth() == 2
        assert fs_ids()[:2] == (a.uid, a.gid) and threads.depth() == 1
    assert fs_ids()[:2] == (0, 0) and threads.depth() == 0


def test_root_is_never_taken_as_an_account():
    """An identity with uid or gid 0 is refused before anything changes."""
    threads = ThreadIdentity()
    for identity in (FsIdentity(0, 1000), FsIdentity(1000, 0)):
        with pytest.raises(IdentityError):
            with threads.acting_as(identity):
                pass  # pragma: no cover - never entered
    with pytest.raises(ValueError):
        FsIdentity(-1, 5)


class FailingRestore(Syscalls):
    """setgroups fails on the second call: taking the identity works, putting it back does not."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def setgroups(self, groups):
        self.calls += 1
        return 1 if self.calls == 2 else super().setgroups(groups)


def test_a_thread_that_cannot_be_put_back_stops_the_process(two_sites):
    """When restoring fails, the 'lost' handler runs (the process would stop) instead of serving on."""
    a, _b = two_sites
    lost = []
    syscalls = FailingRestore()

    def run():
        with ThreadIdentity(syscalls, lost=lost.append).acting_as(a.identity):
            pass
        # what the handler left: put it back by hand so this test thread ends clean
        Syscalls().setgroups((0,))
        Syscalls().setfsuid(0)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert len(lost) == 1 and "cannot take back uid 0" in lost[0]


class FailingTake(Syscalls):
    """setgroups fails the first time: the identity cannot be taken."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def setgroups(self, groups):
        self.calls += 1
        return 1 if self.calls == 1 else super().setgroups(groups)


def test_an_identity_that_cannot_be_taken_is_an_error_and_the_thread_stays_root(two_sites):
    """A failed switch raises IdentityError; the block never runs and the thread is still root."""
    a, _b = two_sites
    ran = []
    with pytest.raises(IdentityError, match="setgroups errno 1"):
        with ThreadIdentity(FailingTake(), lost=pytest.fail).acting_as(a.identity):
            ran.append(True)  # pragma: no cover - never entered
    assert ran == [] and fs_ids()[:2] == (0, 0)


def test_without_root_only_the_servers_own_uid_is_allowed(monkeypatch):
    """A server that is not root acts as itself (nothing to change) and refuses any other account."""
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    threads = ThreadIdentity()
    with threads.acting_as(FsIdentity(4321, 4321)):
        assert fs_ids()[:2] == (0, 0)  # really root here: nothing was changed
    with pytest.raises(PermissionError, match="cannot act as"):
        with threads.acting_as(FsIdentity(4322, 4322)):
            pass  # pragma: no cover - never entered


def test_acting_iterator_runs_each_step_as_the_account(two_sites):
    """Every next() and close() of a WSGI body runs as the account; between steps the thread is root."""
    a, _b = two_sites
    steps = []

    def body():
        try:
            for _ in range(3):
                steps.append(fs_ids()[0])
                yield b"x"
        finally:
            steps.append(("closed", fs_ids()[0]))

    between = []
    acting = ActingIterator(body(), a.identity, ThreadIdentity())
    for _chunk in acting:
        between.append(fs_ids()[0])
        if len(between) == 2:
            break
    acting.close()
    assert steps == [a.uid, a.uid, ("closed", a.uid)]
    assert between == [0, 0] and fs_ids()[0] == 0


class CountingThreads(ThreadIdentity):
    """A ThreadIdentity that counts the blocks entered."""

    blocks = 0

    def acting_as(self, identity):
        self.blocks += 1
        return super().acting_as(identity)


def test_acting_iterator_of_call_makes_the_body_in_its_first_step_and_closes_it_in_its_last(two_sites):
    """of_call: the application is called as the account with the first step; the step that ends the body closes it."""
    a, _b = two_sites
    steps = []

    def app():
        steps.append(("called", fs_ids()[0]))

        def body():
            try:
                yield b"x"
            finally:
                steps.append(("closed", fs_ids()[0]))

        return body()

    threads = CountingThreads()
    acting = ActingIterator.of_call(app, a.identity, threads)
    assert steps == [] and threads.blocks == 0
    assert list(acting) == [b"x"]
    assert steps == [("called", a.uid), ("closed", a.uid)] and threads.blocks == 2
    acting.close()  # nothing left to close: no third block
    assert threads.blocks == 2 and fs_ids()[0] == 0
    never = ActingIterator.of_call(app, a.identity, threads)
    never.close()  # never started: the application is not called
    assert len(steps) == 2 and threads.blocks == 2


def test_a_server_step_inside_a_block_is_root_for_an_opened_file_then_the_account_again(two_sites, tmp_path):
    """server_step: root's fchown on a descriptor opened as A (to B's group), then A again; outside a block a no-op."""
    a, b = two_sites
    folder = tmp_path / "a-folder"
    folder.mkdir()
    os.chown(folder, a.uid, a.gid)
    threads = ThreadIdentity()
    with threads.acting_as(a.identity):
        fd = os.open(folder / "f", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            with pytest.raises(PermissionError):
                os.fchown(fd, -1, b.gid)  # A is no member of B's group
            with server_step():
                assert fs_ids()[:2] == (0, 0)
                os.fchown(fd, -1, b.gid)
            assert fs_ids()[:2] == (a.uid, a.gid)
        finally:
            os.close(fd)
    assert os.stat(folder / "f").st_gid == b.gid
    with server_step():
        assert fs_ids()[:2] == (0, 0)


def test_site_files_run_as_the_homes_account(two_sites, tmp_path):
    """SiteFiles.run calls the function as identity_of(home) says; acting() with a user as that user."""
    a, b = two_sites

    class Home:
        owner = None

    files = SiteFiles(ThreadIdentity(), site_homes=None,
                      identity_of=lambda home, user: b.identity if user else a.identity)
    files._reachable_by.update({a.uid, b.uid})  # nothing above sites_root to open here
    assert files.run(Home(), fs_ids)[:2] == (a.uid, a.gid)
    with files.acting(Home(), "someone") as identity:
        assert identity == b.identity and fs_ids()[:2] == (b.uid, b.gid)
    assert fs_ids()[:2] == (0, 0)


def test_a_block_is_entered_once_and_its_groups_come_back_alike(two_sites):
    """One acting_as block object cannot be entered twice; repeated blocks keep switching and restoring exactly."""
    a, b = two_sites
    threads = ThreadIdentity()
    before = fs_ids()
    block = threads.acting_as(a.identity)
    with block:
        with pytest.raises(RuntimeError, match="entered once"):
            with block:
                pass  # pragma: no cover - never entered
        assert fs_ids() == (a.uid, a.gid, [str(a.gid)])
    for identity in (a.identity, b.identity, a.identity):  # the C arrays of the groups are reused
        with threads.acting_as(identity):
            assert fs_ids() == (identity.uid, identity.gid, [str(identity.gid)])
        assert fs_ids() == before and threads.depth() == 0


class NoGroupsBack(Syscalls):
    """getgroups answers a list no identity may hold (more than MAX_GROUPS): nothing sure to put back."""

    def getgroups(self):
        return (1,) * (MAX_GROUPS + 1)


def test_a_switch_whose_identity_before_is_not_valid_stops_the_process(two_sites):
    """When what the thread had cannot be kept to put back, the 'lost' handler runs (the process would stop)."""
    a, _b = two_sites
    lost = []

    def run():
        with pytest.raises(ValueError):
            with ThreadIdentity(NoGroupsBack(), lost=lost.append).acting_as(a.identity):
                pass  # pragma: no cover - never entered
        Syscalls().setgroups(())  # what the handler left: put it back by hand so this test thread ends clean
        Syscalls().setfsgid(0)
        Syscalls().setfsuid(0)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert len(lost) == 1 and "no identity to take back" in lost[0]
