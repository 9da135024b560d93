"""SiteHome.resolve keeps every site path inside its home; SiteHomes makes and removes homes."""

from __future__ import annotations

import os

import pytest

from apiserver.errors import Exists, InvalidArgument, NotFound
from apiserver.sites.home import SiteHomes, site_owner_name, split_site_path


@pytest.fixture
def homes(tmp_path):
    """Homes under a temporary sites_root, owned by the user running the tests."""
    return SiteHomes(str(tmp_path / "sites"), _me())


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def test_create_makes_home_and_document_root(homes):
    """A new home has var/www/html inside it and resolves the site's paths there."""
    home = homes.create("example.com")
    assert os.path.isdir(os.path.join(home.root, "var", "www", "html"))
    assert home.resolve("/var/www/html") == os.path.realpath(home.document_root)
    assert home.resolve("var/www/html/new.txt").endswith("/var/www/html/new.txt")
    assert home.site_path(home.resolve("/var/www/html/x")) == "/var/www/html/x"


def test_create_refuses_an_existing_place(homes):
    """A second create of the same domain is Exists and leaves the first home as it was."""
    home = homes.create("example.com")
    marker = os.path.join(home.document_root, "keep")
    open(marker, "w").close()
    with pytest.raises(Exists) as refused:
        homes.create("example.com")
    assert os.path.exists(marker)
    assert homes.sites_root not in str(refused.value)  # a fault names no host path


@pytest.mark.parametrize("path", [
    "/var/www/../../../etc/passwd", "..", "/var/www/html/%2e%2e/x", "/var/www/html/%2E%2e%2fetc",
    "/var/www/html/a\x00b", "/var/www/html\\..\\x", "%2f", "/var/%00",
])
def test_escapes_are_invalid(homes, path):
    """Parent references, NUL bytes, backslashes and percent-encoded tricks are InvalidArgument."""
    home = homes.create("example.com")
    with pytest.raises(InvalidArgument):
        home.resolve(path)


def test_links_out_of_the_home_are_invalid(homes, tmp_path):
    """Absolute links, links to another site and dangling links out are refused; links inside are fine."""
    home = homes.create("example.com")
    other = homes.create("other.example")
    secret = os.path.join(other.document_root, "wp-config.php")
    open(secret, "w").close()
    docroot = home.document_root
    os.symlink("/etc", os.path.join(docroot, "etc"))
    os.symlink(secret, os.path.join(docroot, "theirs.php"))
    os.symlink("../../../../other.example/var/www/html", os.path.join(docroot, "rel"))
    os.symlink("/nonexistent/far/away", os.path.join(docroot, "dangling"))
    os.mkdir(os.path.join(docroot, "real"))
    os.symlink("real", os.path.join(docroot, "inside"))
    for name in ("etc/passwd", "theirs.php", "rel/wp-config.php", "dangling", "etc"):
        with pytest.raises(InvalidArgument):
            home.resolve(f"/var/www/html/{name}")
    assert home.resolve("/var/www/html/inside/f") == os.path.join(os.path.realpath(docroot), "real", "f")


def test_must_exist(homes):
    """must_exist turns a missing file into NotFound naming the site path."""
    home = homes.create("example.com")
    with pytest.raises(NotFound, match="/var/www/html/none"):
        home.resolve("/var/www/html/none", must_exist=True)


def test_non_strings_are_invalid():
    """Only strings are paths."""
    with pytest.raises(InvalidArgument):
        split_site_path(5)


def test_detach_and_purge_never_follow_links(homes, tmp_path):
    """Removing a home deletes its tree but not what a link in it points to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    home = homes.create("example.com")
    os.symlink(str(outside), os.path.join(home.document_root, "link"))
    trash = homes.detach("example.com")
    assert not os.path.exists(home.root)
    homes.purge(trash)
    assert not os.path.exists(trash)
    assert (outside / "precious").read_text() == "x"
    assert homes.detach("example.com") is None


def test_get_unknown_site_is_not_found(homes):
    """A site without a home on disk is NotFound."""
    with pytest.raises(NotFound):
        homes.get("missing.example")


def test_site_owner_is_never_root():
    """As root an empty [web] site_owner means the dedicated system user, otherwise the running user."""
    assert site_owner_name("", euid=0) == "apiserver"
    assert site_owner_name("", euid=33) == "www-data"
    assert site_owner_name("bob", euid=0) == "bob"


def test_reachability_survives_a_chmod_of_state_dir(tmp_path):
    """A chmod 0700 of state_dir (which empties the ACL mask) is noticed and the web user's search restored."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to act as www-data")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    parent = str(tmp_path)
    while parent != "/":  # pytest's own tmp folders are 0700
        subprocess.run(["setfacl", "-m", "u:www-data:x", parent], check=True)
        parent = os.path.dirname(parent)
    homes = SiteHomes(str(state / "sites"), _me(), web_user="www-data", state_dir=str(state))
    homes.ensure_reachable()
    as_web = ["runuser", "-u", "www-data", "--", "test", "-x", str(state / "sites")]
    assert subprocess.run(as_web).returncode == 0
    os.chmod(state, 0o700)
    assert subprocess.run(as_web).returncode != 0
    homes.ensure_reachable()
    assert subprocess.run(as_web).returncode == 0


def test_faults_name_no_host_path(tmp_path, monkeypatch):
    """A failed grant of search on state_dir, or a path out of the home, is a fault without a host path
    or raw control characters."""
    import errno

    from apiserver.errors import ServerError
    from apiserver.sites import acl

    def failing_setxattr(target, *args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported", str(tmp_path))

    monkeypatch.setattr(os, "setxattr", failing_setxattr)
    with pytest.raises(ServerError) as refused:
        acl.grant_search(str(tmp_path), "nobody")
    assert str(tmp_path) not in str(refused.value)
    monkeypatch.undo()
    home = SiteHomes(str(tmp_path / "sites"), _me()).create("example.com")
    os.symlink("/etc", os.path.join(home.document_root, "etc"))
    with pytest.raises(InvalidArgument) as escaped:
        home.resolve("/var/www/html/etc/\x1b[2Jpasswd")
    assert "\x1b" not in str(escaped.value) and "/etc/?[2Jpasswd" in str(escaped.value)
