"""File audit: what the web server user owns or may write, checked against what it can really do."""

from __future__ import annotations

import os
import subprocess

import pytest

from apiserver.errors import InvalidArgument, NotFound
from tests.sites.support import (  # noqa: F401 - sites_root is a fixture
    WEB_USER, WORDPRESS, as_web, make_deep, make_tree, requires_root, sites_root, swap_for_link_before_listing,
    web_can_write,
)
from tests.sites.fortify_support import site  # noqa: F401 - the fixture

pytestmark = requires_root()

DOC = "/var/www/html"


def _audit(h, admin, *args):
    return h.call(admin, "security_audit", *args)


def _probe(root, home):
    """Site paths the web user owns or can really write under root (by trying, as the web user)."""
    import pwd

    web_uid = pwd.getpwnam(WEB_USER).pw_uid
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            if path != dirpath and os.path.isdir(path):
                continue  # folders are probed as dirpath
            if os.lstat(path).st_uid == web_uid or web_can_write(path):
                found.add(home.site_path(path))
    return found


def test_audit_matches_what_the_web_user_can_really_write(site):
    """Default audit equals the paths the web user owns or can write, found by trying each as www-data."""
    h, admin, home = site
    root = os.path.realpath(home.document_root)
    make_tree(root, WORDPRESS, home.owner)
    assert _audit(h, admin) == []
    h.call(admin, "security_fortify", "example.com", "", "max")
    assert as_web('echo x > "$1"', os.path.join(root, "wp-content/uploads/new.jpg")).returncode == 0
    private = os.path.join(root, "private")
    os.mkdir(private, 0o700)
    with open(os.path.join(private, "open.txt"), "w"):
        pass
    os.chmod(os.path.join(private, "open.txt"), 0o666)  # world-writable, but the web user cannot reach it
    for made in (private, os.path.join(private, "open.txt")):  # the site's, as everything in its home
        os.chown(made, home.owner.uid, home.owner.gid)
    os.chmod(os.path.join(root, "index.php"), 0o646)    # others may write: the web user may
    listed = _audit(h, admin)
    assert set(listed) == _probe(root, home)
    assert f"{DOC}/index.php" in listed and f"{DOC}/wp-content/uploads/new.jpg" in listed
    assert f"{DOC}/private/open.txt" not in listed and f"{DOC}/wp-config.php" not in listed


def test_after_release_everything_and_after_reset_nothing(site):
    """release makes the whole tree writable; reset leaves nothing the web user owns or writes."""
    h, admin, home = site
    root = os.path.realpath(home.document_root)
    make_tree(root, WORDPRESS, home.owner)
    h.call(admin, "security_fortify", "example.com", "", "release")
    as_web('echo x > "$1"', os.path.join(root, "dropped.php"))
    everything = _audit(h, admin)
    assert f"{DOC}/wp-config.php" in everything and f"{DOC}" in everything
    assert set(everything) == _probe(root, home)
    h.call(admin, "security_fortify", "example.com", "", "reset")
    assert _audit(h, admin) == []


def test_requirements_select_by_owner_mode_and_name(site):
    """user, perm and name requirements, any of them (union) or all of them."""
    h, admin, home = site
    root = os.path.realpath(home.document_root)
    make_tree(root, {"a.php": "", "b.txt": "", "up/": None}, home.owner)
    h.call(admin, "security_fortify", "example.com", "", "release")
    as_web('echo x > "$1/up/web.php" && echo y > "$1/up/web.txt" && chmod 666 "$1/up/web.txt"', root)
    os.chmod(os.path.join(root, "b.txt"), 0o666)
    os.symlink("b.txt", os.path.join(root, "link.txt"))  # a link's 0777 is not a permission
    web = {"user": WEB_USER}
    assert _audit(h, admin, DOC, web) == [f"{DOC}/up/web.php", f"{DOC}/up/web.txt"]
    assert _audit(h, admin, DOC, {"perm": "o+w"}) == [f"{DOC}/b.txt", f"{DOC}/up/web.txt"]
    assert _audit(h, admin, DOC, {"user": WEB_USER, "perm": "o+w"}, False) == [f"{DOC}/up/web.txt"]
    assert _audit(h, admin, DOC, {"user": WEB_USER, "perm": "o+w"}, True) == [
        f"{DOC}/b.txt", f"{DOC}/up/web.php", f"{DOC}/up/web.txt"]
    assert _audit(h, admin, f"{DOC}/up", {"name": "*.php"}) == [f"{DOC}/up/web.php"]
    assert _audit(h, admin, DOC, {"perm": ["u+w", "o-w"], "name": "*.php"}, False) == [
        f"{DOC}/a.php", f"{DOC}/up/web.php"]


def test_bad_requirements_and_paths_are_client_faults(site):
    """Unknown keys, bad perm strings, unknown users, missing paths and escapes are refused."""
    h, admin, _home = site
    cases = [({"colour": "red"}, "use user, group, perm, name, writable"), ({"perm": "o=w"}, "not like"),
             ({"user": "no-such-user-x"}, "does not exist"), ({"group": "no-such-group-x"}, "does not exist")]
    for requirements, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            _audit(h, admin, DOC, requirements)
    with pytest.raises(NotFound):
        _audit(h, admin, f"{DOC}/none")
    for path in ("/var/www/html/../../../..", "/var/www/%2e%2e/x"):
        with pytest.raises(InvalidArgument):
            _audit(h, admin, path)


def test_a_folder_swapped_for_a_link_mid_walk_is_not_entered(tmp_path, monkeypatch):
    """A folder replaced by a link out of the home just before it is listed: nothing beyond the link is listed."""
    from apiserver.sites import audit
    from apiserver.sites.home import SiteHomes

    home = SiteHomes(str(tmp_path / "sites"), "root").create("example.com")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "other-site-secret.php").write_text("x")
    docroot = os.path.realpath(home.document_root)
    sub = os.path.join(docroot, "sub")
    os.mkdir(sub)
    swap_for_link_before_listing(monkeypatch, sub, str(outside))
    found = audit.audit(home, DOC, WEB_USER, {"name": "*"}, True)
    assert os.path.islink(sub)
    assert found == [DOC, f"{DOC}/sub"]


def test_a_file_300_folders_deep_is_audited_like_any_other(site):
    """What the web user may write 300 folders down (a world-writable file, a folder granted to it)
    is listed, exactly as trying each path as www-data finds."""
    h, admin, home = site
    root = os.path.realpath(home.document_root)
    make_tree(root, {"index.php": "<?php"}, home.owner)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    make_deep(top, 300, leaf="open.txt", owner=home.owner)
    os.close(top)
    deep = os.path.join(root, *["d"] * 300)
    os.chmod(os.path.join(deep, "open.txt"), 0o666)
    subprocess.run(["setfacl", "-m", f"u:{WEB_USER}:rwx", os.path.dirname(deep)], check=True)
    listed = _audit(h, admin)
    chain = "/".join(["d"] * 300)
    assert listed == sorted([f"{DOC}/{chain}/open.txt", f"{DOC}/{chain[:-2]}"])
    assert set(listed) == _probe(root, home)


def test_acl_entries_decide_where_mode_bits_would_not(site):
    """A named entry that denies beats world-write, a named group that grants beats closed other bits,
    a narrowed mask takes a grant away: audit agrees with trying each file as www-data."""
    h, admin, home = site
    root = os.path.realpath(home.document_root)
    files = {name: "" for name in ("denied.txt", "group.txt", "masked.txt", "plain.txt", "open.txt")}
    make_tree(root, files, home.owner)
    os.chmod(os.path.join(root, "denied.txt"), 0o666)
    os.chmod(os.path.join(root, "open.txt"), 0o666)
    steps = [["setfacl", "-m", f"u:{WEB_USER}:r", "denied.txt"], ["chmod", "640", "group.txt"],
             ["setfacl", "-m", f"g:{WEB_USER}:rw", "group.txt"], ["setfacl", "-m", f"u:{WEB_USER}:rw", "masked.txt"],
             ["chmod", "g-w", "masked.txt"]]
    for step in steps:
        subprocess.run(step[:-1] + [os.path.join(root, step[-1])], check=True)
    listed = _audit(h, admin)
    assert listed == [f"{DOC}/group.txt", f"{DOC}/open.txt"]
    assert set(listed) == _probe(root, home)


def test_in_a_writable_folder_each_file_s_own_acl_decides(site):
    """Inside a folder with a default ACL (uploads after max): an inherited grant, a narrowed mask, a removed
    ACL with or without world-write, a link and the web user's own file; audit agrees with trying each."""
    h, admin, home = site
    root = os.path.realpath(home.document_root)
    make_tree(root, WORDPRESS, home.owner)
    h.call(admin, "security_fortify", "example.com", "", "max")
    uploads = os.path.join(root, "wp-content/uploads")
    make_tree(uploads, {name: "" for name in ("granted.jpg", "masked.jpg", "bare.jpg", "bare-open.jpg")}, home.owner)
    subprocess.run(["chmod", "664", os.path.join(uploads, "granted.jpg")], check=True)  # the mask: rw
    subprocess.run(["chmod", "644", os.path.join(uploads, "masked.jpg")], check=True)   # the mask: r
    for name, mode in (("bare.jpg", "644"), ("bare-open.jpg", "646")):
        subprocess.run(["setfacl", "-b", os.path.join(uploads, name)], check=True)
        subprocess.run(["chmod", mode, os.path.join(uploads, name)], check=True)
    os.symlink("/etc/passwd", os.path.join(uploads, "link.jpg"))
    assert as_web('echo x > "$1"', os.path.join(uploads, "own.jpg")).returncode == 0
    listed = _audit(h, admin, f"{DOC}/wp-content/uploads")
    assert set(listed) == _probe(uploads, home)
    names = {path.rsplit("/", 1)[-1] for path in listed}
    assert {"granted.jpg", "bare-open.jpg", "own.jpg"} <= names
    assert not names & {"masked.jpg", "bare.jpg", "link.jpg"}
