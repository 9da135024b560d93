"""The one walker: any depth, bounded descriptors, never a link, never a folder skipped silently."""

from __future__ import annotations

import errno
import os
import pathlib
import tempfile

import pytest

from apiserver.sites import walk as walk_module
from apiserver.sites.walk import MAX_OPEN, WalkError, walk
from tests.sites.support import make_deep, remove_tree


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def tmp_path():
    """A fresh folder outside pytest's own (whose clean-up recurses, and these trees are deeper than
    Python's recursion limit), in memory where there is a tmpfs (thousands of folders are removed
    afterwards, which a disk mounted with discard makes slow)."""
    path = tempfile.mkdtemp(prefix="apiserver-walk-", dir="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    yield pathlib.Path(path)
    remove_tree(path)


@pytest.fixture
def top(tmp_path):
    """A descriptor of the empty folder tmp_path, closed afterwards."""
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_a_2000_deep_comb_is_walked_whole_in_bounded_descriptors(top, tmp_path):
    """Every folder of a 2,000-deep tree with a side folder at each level is visited, the deepest
    file is listed, and the walk never holds more than MAX_OPEN descriptors, even in the worst order."""
    make_deep(top, 2000, side_folders=True, leaf="deep.txt")
    before = _open_fds()
    seen, most, deepest = set(), 0, None
    for folder in walk(top, str(tmp_path)):
        folder.subfolders.sort()  # "d" before "side": every parent still has a folder to come
        seen.add(folder.rel)
        most = max(most, _open_fds() - before)
        if any(e.name == "deep.txt" for e in folder.entries):
            deepest = folder.rel
    assert len(seen) == 1 + 2000 * 2
    assert deepest == "/".join(["d"] * 2000)
    assert most <= MAX_OPEN + 1  # + the listing's own descriptor while scandir runs
    assert _open_fds() == before


def test_a_chain_of_single_folders_holds_one_descriptor_or_two(top, tmp_path):
    """Without side folders nothing needs a parent again: two descriptors at most, at any depth."""
    make_deep(top, 2000, side_folders=False, leaf="deep.txt")
    before = _open_fds()
    most = 0
    for _folder in walk(top, str(tmp_path)):
        most = max(most, _open_fds() - before)
    assert most <= 2


def test_stopping_early_closes_every_descriptor(top, tmp_path):
    """A caller that leaves the walk half-way (an error, a limit) leaks no descriptor."""
    make_deep(top, 500, side_folders=True)
    before = _open_fds()
    walker = walk(top, str(tmp_path))
    for folder in walker:
        folder.subfolders.sort()
        if folder.rel.count("/") == 400:
            break
    walker.close()
    assert _open_fds() == before


def test_a_folder_moved_while_its_descriptor_was_let_go_fails_the_walk_naming_it(top, tmp_path):
    """The walk comes back to a folder it had to let go of and finds it moved: WalkError naming the
    folder (relative to the top, as the caller shows it), not a silent skip of what is below."""
    make_deep(top, 1000, side_folders=True)
    moved = "/".join(["d"] * 501)  # an odd depth: among the first descriptors let go
    with pytest.raises(WalkError) as failed:
        for folder in walk(top, str(tmp_path), shown="/var/www/html"):
            folder.subfolders.sort()
            if folder.rel == "/".join(["d"] * 1000):  # the bottom: every shallow descriptor let go
                parent = walk_module.open_below(top, moved.rsplit("/", 1)[0])
                os.rename("d", "elsewhere", src_dir_fd=parent, dst_dir_fd=parent)
                os.close(parent)
    assert failed.value.rel == moved
    message = str(failed.value)  # a long path is cut in the middle: its end names the folder
    assert message.startswith("folder '/var/www/html/d/d/") and len(message) < 320
    assert message.endswith(f"{moved[-149:]}' was moved while it was walked; try again")


def test_an_unreadable_folder_is_an_error_naming_it(top, tmp_path, monkeypatch):
    """A folder that cannot be listed raises WalkError naming it; with onerror the walk reports it
    and goes on with the others."""
    for rel in ("a/locked/inner", "b"):
        os.makedirs(tmp_path / rel)
    real_scandir = os.scandir

    def scandir(path="."):
        if isinstance(path, int) and os.readlink(f"/proc/self/fd/{path}").endswith("/locked"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(WalkError, match="cannot list folder 'site/a/locked': Permission denied"):
        list(walk(top, str(tmp_path), shown="site"))
    errors = []
    seen = [f.rel for f in walk(top, str(tmp_path), onerror=errors.append)]
    assert sorted(seen) == ["", "a", "b"]
    assert [(e.rel, e.strerror) for e in errors] == [("a/locked", "Permission denied")]


def test_links_are_listed_never_entered(tmp_path):
    """A link to a folder is an entry of its folder, not a subfolder, and nothing behind it is walked."""
    (tmp_path / "outside" / "secret").mkdir(parents=True)
    (tmp_path / "site" / "real").mkdir(parents=True)
    os.symlink(str(tmp_path / "outside"), tmp_path / "site" / "real" / "link")
    fd = os.open(str(tmp_path / "site"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        folders = {f.rel: f for f in walk(fd, str(tmp_path / "site"))}
    finally:
        os.close(fd)
    assert sorted(folders) == ["", "real"]
    assert [e.name for e in folders["real"].entries] == ["link"]
    assert folders["real"].subfolders == []


def test_open_below_never_follows_a_link(top, tmp_path):
    """open_below refuses a link anywhere on the way (ELOOP or ENOTDIR), and opens real folders."""
    os.makedirs(tmp_path / "a" / "b")
    os.symlink("a", tmp_path / "l")
    fd = walk_module.open_below(top, "a/b")
    os.close(fd)
    for rel in ("l/b", "l"):
        with pytest.raises(OSError) as refused:
            walk_module.open_below(top, rel)
        assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)
