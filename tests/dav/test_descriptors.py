"""MOVE, COPY, DELETE and MKCOL act through descriptors of checked folders: a folder swapped for
a link after the check changes nothing outside the home; GET never waits on a FIFO and never
serves a file with other hard links (real files)."""

from __future__ import annotations

import os
import threading

import pytest
from wsgidav.dav_error import DAVError

from apiserver.dav import descriptors
from apiserver.dav.provider import HomeProvider
from tests.dav_support import environ_for, home_provider


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    (root / "a").mkdir(parents=True)
    (root / "a/file.txt").write_text("inside")
    (root / "b").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/victim.txt").write_text("victim")
    return root


@pytest.fixture
def provider(home):
    return home_provider(home)


def swap_folder_after_check(monkeypatch, home, outside, folder="a"):
    """Replace home/<folder> with a link to ``outside`` right after the provider resolved a path."""
    resolve = HomeProvider._loc_to_file_path

    def resolved_then_swapped(self, path, environ=None):
        result = resolve(self, path, environ)
        target = home / folder
        if target.is_dir() and not target.is_symlink():
            os.rename(target, home / f"{folder}-moved")
            os.symlink(outside, target)
        return result

    monkeypatch.setattr(HomeProvider, "_loc_to_file_path", resolved_then_swapped)


def test_delete_through_a_folder_swapped_for_a_link_changes_nothing_outside(provider, home, tmp_path):
    """DELETE of a/victim.txt after a/ became a link to an outside folder: 403, the outside file stays."""
    (home / "a/victim.txt").write_text("inside copy")
    res = provider.get_resource_inst("/a/victim.txt", environ_for(provider, "DELETE"))
    os.rename(home / "a", home / "a-moved")  # the race: after WsgiDAV resolved the path
    os.symlink(tmp_path / "outside", home / "a")
    with pytest.raises(DAVError) as refused:
        res.delete()
    assert refused.value.value == 403
    assert (tmp_path / "outside/victim.txt").read_text() == "victim"


def test_move_into_a_folder_swapped_for_a_link_is_refused(provider, home, tmp_path, monkeypatch):
    """MOVE to b/x.txt after b/ became a link out: 403, nothing appears outside, the source stays."""
    res = provider.get_resource_inst("/a/file.txt", environ_for(provider, "MOVE"))
    swap_folder_after_check(monkeypatch, home, tmp_path / "outside", folder="b")
    with pytest.raises(DAVError) as refused:
        res.move_recursive("/b/x.txt")
    assert refused.value.value == 403
    assert sorted(os.listdir(tmp_path / "outside")) == ["victim.txt"]
    assert (home / "a/file.txt").read_text() == "inside"


def test_move_never_replaces_what_appeared_meanwhile(provider, home):
    """The rename is RENAME_NOREPLACE: a target made after WsgiDAV's check gets 412, not replaced."""
    res = provider.get_resource_inst("/a/file.txt", environ_for(provider, "MOVE"))
    (home / "b/x.txt").write_text("appeared")
    with pytest.raises(DAVError) as refused:
        res.move_recursive("/b/x.txt")
    assert refused.value.value == 412
    assert (home / "b/x.txt").read_text() == "appeared"
    res.move_recursive("/b/y.txt")
    assert (home / "b/y.txt").read_text() == "inside" and not (home / "a/file.txt").exists()


def test_folder_delete_never_follows_links_inside(provider, home, tmp_path):
    """DELETE of a folder holding a link to an outside folder removes the link, not what it points to."""
    os.symlink(tmp_path / "outside", home / "a/out")
    provider.get_resource_inst("/a", environ_for(provider, "DELETE")).delete()
    assert not (home / "a").exists() and (tmp_path / "outside/victim.txt").read_text() == "victim"
    with pytest.raises(DAVError) as refused:
        provider.get_resource_inst("/", environ_for(provider, "DELETE")).delete()
    assert refused.value.value == 403 and home.is_dir()


def test_mkcol_and_folder_copy_in_checked_folders(provider, home, tmp_path, monkeypatch):
    """MKCOL and a folder COPY make their folder in the checked parent; through a swapped link, 403."""
    provider.get_resource_inst("/", environ_for(provider, "MKCOL")).create_collection("new")
    assert (home / "new").is_dir()
    provider.get_resource_inst("/a", environ_for(provider, "COPY")).copy_move_single("/b/a-copy", is_move=False)
    assert (home / "b/a-copy").is_dir()
    folder = provider.get_resource_inst("/b", environ_for(provider, "MKCOL"))
    swap_folder_after_check(monkeypatch, home, tmp_path / "outside", folder="b")
    with pytest.raises(DAVError) as refused:
        folder.create_collection("evil")
    assert refused.value.value == 403 and not (tmp_path / "outside/evil").exists()


def test_get_never_waits_on_a_fifo(provider, home):
    """A file swapped for a FIFO after the check: GET is refused at once (O_NONBLOCK), no thread hangs."""
    res = provider.get_resource_inst("/a/file.txt", environ_for(provider, "GET"))
    os.unlink(home / "a/file.txt")
    os.mkfifo(home / "a/file.txt")
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_refusal(res.get_content)), daemon=True)
    worker.start()
    worker.join(10)
    assert outcome == [403], "GET of a FIFO did not return"


def test_a_file_with_other_hard_links_is_not_served(provider, home, tmp_path):
    """A hard link to an outside file planted in the home: GET 403, its content never read."""
    os.link(tmp_path / "outside/victim.txt", home / "a/planted.txt")
    res = provider.get_resource_inst("/a/planted.txt", environ_for(provider, "GET"))
    assert _refusal(res.get_content) == 403


def test_rename_noreplace_itself(tmp_path):
    """renameat2 with RENAME_NOREPLACE renames, and refuses an existing target with FileExistsError."""
    (tmp_path / "x").write_text("x")
    (tmp_path / "y").write_text("y")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            descriptors.rename_noreplace(fd, "x", fd, "y")
        descriptors.rename_noreplace(fd, "x", fd, "z")
    finally:
        os.close(fd)
    assert (tmp_path / "z").read_text() == "x" and (tmp_path / "y").read_text() == "y"


def _refusal(fn):
    try:
        fn().close()
    except DAVError as exc:
        return exc.value
    return 200
