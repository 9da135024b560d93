"""Web App Manifests (.webapp.yml): validation naming the line and key, precedence over detection, the
ACLs they give (checked as the web server user), and the manifest learning writes out."""

from __future__ import annotations

import os

import pytest

from apiserver.errors import InvalidArgument
from apiserver.sites import manifest
from tests.sites.fortify_support import document_root, fortification, running_site
from tests.sites.support import (  # noqa: F401 - sites_root is a fixture
    WORDPRESS, as_web, make_tree, sites_root, web_can_write,
)

DOC = "/var/www/html"

GOOD = """\
# a shop that is no known application
name: Shop
fortification:
  max:
    - var/cache/
    - sitemap.xml
  min:
    - ./plugins/
database:
  type: mysql
"""


def test_a_manifest_gives_name_and_paths_per_mode():
    """ApisCP's layout is read: name, max and min (min includes max), ApisCP's other keys accepted."""
    found = manifest.parse(GOOD)
    profile = found.profile()
    assert (profile.name, profile.max, profile.min) == ("Shop", ("var/cache/", "sitemap.xml"),
                                                        ("var/cache/", "sitemap.xml", "plugins/"))


def test_a_base_adds_a_built_in_profile():
    """base: wordpress stacks the manifest's paths on WordPress's profile."""
    profile = manifest.parse("base: wordpress\nfortification:\n  max: [wp-content/backup/]\n").profile()
    assert profile.name == "wordpress"
    assert "wp-content/uploads/" in profile.max and "wp-content/backup/" in profile.max
    assert "wp-config.php" in profile.min


@pytest.mark.parametrize("text, where", [
    ("name: Shop\nfortification:\n  max:\n    - ../etc/\n", "line 4, fortification.max"),
    ("fortification:\n  max:\n    - /etc/passwd\n", "line 3, fortification.max"),
    ("fortification:\n  lockdown: [a]\n", "line 2, fortification.lockdown"),
    ("fortification:\n  max: [a]\nbogus: 1\n", "line 3, bogus"),
    ("fortification:\n  max: cache/\n", "line 2, fortification.max"),
    ("fortification:\n  max:\n    - a\n    - .webapp.yml\n", "line 4, fortification.max"),
    ("fortification:\n  max:\n    - [a, b]\n", "line 3, fortification.max"),
    ("base: typo3\n", "line 1, base"),
    ("fortification:\n  max: [a\n", "line 3"),
    ("- a\n- b\n", "line 1, the document"),
    ("name: Shop\n", ".webapp.yml: names no writable paths"),
])
def test_a_bad_manifest_is_refused_naming_the_line_and_key(text, where):
    """Every mistake is an InvalidArgument whose message says where it is."""
    with pytest.raises(InvalidArgument) as caught:
        manifest.parse(text)
    assert where in str(caught.value)


@pytest.fixture
def site(tmp_path, sites_root):
    """(harness, site administrator, document root) of example.com."""
    if os.geteuid() != 0:
        pytest.skip("acts as the web server user through runuser (root)")
    with running_site(tmp_path, sites_root) as (h, admin, home):
        yield h, admin, home, document_root(home)


def test_a_manifest_for_an_unknown_application_is_applied(site):
    """An application no profile knows gets its manifest's max, not learn; min adds the min paths."""
    h, admin, home, root = site
    make_tree(root, {"index.php": "<?php", "var/cache/": None, "plugins/p.php": "<?php", "sitemap.xml": "<x/>",
                     ".webapp.yml": GOOD}, home.owner)
    assert h.call(admin, "security_fortify", "example.com", "", "max") is True
    info = fortification(h, admin)
    assert (info.app, info.mode) == ("Shop", "max")
    assert info.writable == [f"{DOC}/sitemap.xml", f"{DOC}/var/cache"]
    assert web_can_write(os.path.join(root, "var/cache")) and web_can_write(os.path.join(root, "sitemap.xml"))
    for closed in ("index.php", "plugins/p.php", "", ".webapp.yml"):
        assert not web_can_write(os.path.join(root, closed)), closed
    h.call(admin, "security_fortify", "example.com", "", "min")
    assert web_can_write(os.path.join(root, "plugins/p.php"))


def test_a_manifest_takes_precedence_over_detection(site):
    """A WordPress tree whose manifest names only its own paths gets exactly those."""
    h, admin, home, root = site
    make_tree(root, dict(WORDPRESS, **{".webapp.yml": "name: Blog\nfortification:\n  max: [wp-content/media/]\n"}),
              home.owner)
    h.call(admin, "security_fortify", "example.com", "", "max")
    assert fortification(h, admin).app == "Blog"
    assert web_can_write(os.path.join(root, "wp-content/media"))
    assert not web_can_write(os.path.join(root, "wp-content/uploads/2026"))


def test_a_bad_or_web_owned_manifest_stops_fortify(site):
    """fortify refuses a bad manifest naming the line; one the web server made or may write is never trusted."""
    h, admin, home, root = site
    make_tree(root, {"index.php": "<?php", ".webapp.yml": "fortification:\n  max:\n    - ../../\n"}, home.owner)
    with pytest.raises(InvalidArgument, match="line 3, fortification.max"):
        h.call(admin, "security_fortify", "example.com", "", "max")
    os.unlink(os.path.join(root, ".webapp.yml"))
    h.call(admin, "security_fortify", "example.com", "", "release")
    assert as_web('printf "fortification:\\n  max: [index.php]\\n" > "$1/.webapp.yml"', root).returncode == 0
    with pytest.raises(InvalidArgument, match="web server user owns it"):
        h.call(admin, "security_fortify", "example.com", "", "max")
    h.call(admin, "security_fortify", "example.com", "", "reset")  # gives it to the owner
    assert os.stat(os.path.join(root, ".webapp.yml")).st_uid == home.owner.uid
    h.call(admin, "security_fortify", "example.com", "", "max")
    assert web_can_write(os.path.join(root, "index.php"))


def test_release_never_lets_the_web_server_edit_the_manifest(site):
    """Even released, the web server cannot rewrite the owner's manifest to widen its own profile."""
    h, admin, home, root = site
    make_tree(root, {"index.php": "<?php", ".webapp.yml": GOOD}, home.owner)
    h.call(admin, "security_fortify", "example.com", "", "release")
    assert web_can_write(os.path.join(root, "index.php"))
    assert not web_can_write(os.path.join(root, ".webapp.yml"))


def test_manifest_create_writes_what_was_learned_for_the_owner(site):
    """After learning, manifest_create writes the profile and the learned paths; it is then what applies."""
    h, admin, home, root = site
    make_tree(root, {"index.php": "<?php", "data/": None}, home.owner)
    with pytest.raises(InvalidArgument, match="nothing to write"):
        h.call(admin, "security_manifest_create", "example.com", "")
    h.call(admin, "security_fortify", "example.com", "", "learn")
    assert as_web('mkdir "$1/data/cache" && echo x > "$1/counter.txt"', root).returncode == 0
    h.advance(1800)
    assert fortification(h, admin).mode == "max"
    assert h.call(admin, "security_manifest_create", "example.com", "") == f"{DOC}/.webapp.yml"
    path = os.path.join(root, ".webapp.yml")
    assert os.stat(path).st_uid == home.owner.uid and os.stat(path).st_mode & 0o777 == 0o644
    written = manifest.parse(open(path).read()).profile()
    assert written.max == ("counter.txt", "data/cache/")
    h.call(admin, "security_fortify", "example.com", "", "reset")  # forgets the learned paths...
    h.call(admin, "security_fortify", "example.com", "", "max")  # ...which the manifest keeps
    assert web_can_write(os.path.join(root, "data/cache")) and web_can_write(os.path.join(root, "counter.txt"))
    with pytest.raises(InvalidArgument, match="already exists"):
        h.call(admin, "security_manifest_create", "example.com", "")
