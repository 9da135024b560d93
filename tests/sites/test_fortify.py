"""Fortification for real: ACLs set by the security module, checked by acting as the web server user."""

from __future__ import annotations

import os
import subprocess

import pytest

from apiserver.errors import Denied, InvalidArgument, NotFound
from apiserver.sites.fortify import detect
from tests.sites.fortify_support import (  # noqa: F401 - site, sites_root and wordpress_site are fixtures
    DOC, document_root, fortification, fortify, site, sites_root, wordpress_site, wordpress_tree,
)
from tests.sites.support import (
    WEB_USER, WORDPRESS, as_web, as_web_in, make_deep, make_tree, requires_root, stat_below,
    swap_for_link_before_listing, web_can_write, web_can_write_below,
)

pytestmark = requires_root()

def test_profiles_are_recognised_from_their_files(tmp_path):
    """Each application's marker files (and major version) select its profile; anything else is unknown."""
    cases = [(("wordpress", ""), ["wp-includes/version.php"]), (("wordpress", ""), ["wp-config-sample.php"]),
             (("joomla", "3"), ["configuration.php", "libraries/joomla/x", "libraries/src/Version.php"]),
             (("joomla", "4+"), ["configuration.php", "libraries/src/Version.php", "administrator/index.php"]),
             (("drupal", "8+"), ["core/lib/Drupal.php", "sites/default/x"]),
             (("drupal", "7"), ["includes/bootstrap.inc", "sites/default/x"]),
             (("magento", "2"), ["app/etc/di.xml", "bin/magento"]), (("magento", "1"), ["app/Mage.php"]),
             (("laravel", ""), ["artisan", "bootstrap/app.php"]), (None, ["index.php", "libraries/src/Version.php"])]
    for i, (want, files) in enumerate(cases):
        root = tmp_path / str(i)
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("x")
        found = detect(str(root))
        assert ((found.name, found.variant) if found else None) == want


def test_every_profile_path_has_a_reason_and_min_includes_max():
    """ApisCP's lists: each path says why the application writes there, and min is max plus more."""
    from apiserver.sites.profiles import PROFILES
    for profile in PROFILES:
        reasons = profile.reasons()
        assert set(profile.min) == set(reasons) and set(profile.max) <= set(profile.min), profile
        assert all(len(why) > 10 for why in reasons.values()), profile
    wordpress = detect_named("wordpress")
    assert {"wp-content/wflogs/", "wp-content/updraft/"} <= set(wordpress.max)
    assert {".htaccess", "wp-config.php", "wp-content/"} <= set(wordpress.min)


def detect_named(name):
    from apiserver.sites.profiles import by_name
    return by_name(name)


def test_max_lets_the_web_user_write_exactly_the_profile(wordpress_site):
    """After max the web user writes uploads and cache, never wp-config.php, the code or the document root."""
    h, admin, home, root = wordpress_site
    assert not web_can_write(os.path.join(root, "wp-content/uploads"))  # mode bits alone: read only
    assert fortify(h, admin, "", "max") is True
    uploads = os.path.join(root, "wp-content/uploads")
    assert web_can_write(os.path.join(uploads, "2026/photo.jpg"))
    assert web_can_write(os.path.join(uploads, "2026"))
    assert web_can_write(os.path.join(root, "wp-content/cache"))  # made by max, owned by the site's owner
    assert os.stat(os.path.join(root, "wp-content/cache")).st_uid == home.owner.uid
    for closed in ("wp-config.php", "index.php", "", "wp-content", "wp-content/plugins",
                   "wp-content/plugins/akismet/akismet.php", "wp-includes/version.php"):
        assert not web_can_write(os.path.join(root, closed)), closed
    info = fortification(h, admin)
    assert (info.app, info.mode, info.until, info.learned) == ("wordpress", "max", None, [])
    assert info.writable == [f"{DOC}/wp-content/{p}" for p in ("cache", "updraft", "uploads", "wflogs")]


def test_new_files_in_writable_folders_inherit_the_acl(wordpress_site):
    """A folder the web user makes in uploads carries the default ACL, so what it puts there stays writable."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "max")
    made = os.path.join(root, "wp-content/uploads/2027")
    assert as_web('mkdir "$1" && echo a > "$1/a.txt"', made).returncode == 0
    acl = subprocess.run(["getfacl", "-n", "-p", made], capture_output=True, text=True).stdout
    assert f"default:user:{_uid()}:rwx" in acl
    assert os.stat(os.path.join(made, "a.txt")).st_uid == _uid()


def _uid():
    import pwd

    return pwd.getpwnam(WEB_USER).pw_uid


def test_min_adds_wp_content_htaccess_and_wp_config(wordpress_site):
    """min (ApisCP's): plugins and themes, .htaccess and wp-config.php too; never the code or the document root."""
    h, admin, home, root = wordpress_site
    make_tree(root, {".htaccess": "# BEGIN WordPress"}, home.owner)
    fortify(h, admin, "", "min")
    assert web_can_write(os.path.join(root, "wp-content/plugins/akismet/akismet.php"))
    assert web_can_write(os.path.join(root, "wp-content/themes"))
    assert web_can_write(os.path.join(root, "wp-config.php")) and web_can_write(os.path.join(root, ".htaccess"))
    for closed in ("index.php", "wp-includes/version.php", ""):
        assert not web_can_write(os.path.join(root, closed)), closed
    assert f"{DOC}/wp-content" in fortification(h, admin).writable


def test_release_opens_everything_and_reset_closes_it_and_hands_files_back(wordpress_site):
    """release: the web user writes anything; reset: nothing, and what it made belongs to the owner."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "release")
    assert web_can_write(os.path.join(root, "wp-config.php"))
    assert as_web('echo x > "$1"', os.path.join(root, "shell.php")).returncode == 0
    assert os.stat(os.path.join(root, "shell.php")).st_uid == _uid()
    assert fortification(h, admin).writable == [DOC]
    fortify(h, admin, "", "reset")
    assert os.stat(os.path.join(root, "shell.php")).st_uid == home.owner.uid
    for path in ("wp-config.php", "shell.php", "", "wp-content/uploads", "wp-content/uploads/2026/photo.jpg"):
        assert not web_can_write(os.path.join(root, path)), path
    assert fortification(h, admin).writable == []
    assert as_web('cat "$1"', os.path.join(root, "index.php")).returncode == 0  # reading stays


def test_max_after_release_takes_back_what_the_web_user_made_outside_the_profile(wordpress_site):
    """A file the web user made in the code while released is no longer its own after max."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "release")
    as_web('echo x > "$1"', os.path.join(root, "wp-content/backdoor.php"))
    fortify(h, admin, "", "max")
    assert not web_can_write(os.path.join(root, "wp-content/backdoor.php"))
    assert web_can_write(os.path.join(root, "wp-content/uploads"))


def test_links_and_foreign_files_are_never_touched(wordpress_site, tmp_path):
    """A link to an outside file, and a hard link to a root-owned file, get no ACL even on release."""
    h, admin, home, root = wordpress_site
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    hard = tmp_path / "rootfile.txt"
    hard.write_text("root's")
    os.symlink(str(outside), os.path.join(root, "wp-content/uploads/link.txt"))
    os.link(str(hard), os.path.join(root, "hard.txt"))
    fortify(h, admin, "", "release")
    for path in (outside, hard):
        assert "user:" + WEB_USER not in subprocess.run(["getfacl", "-p", str(path)], capture_output=True,
                                                        text=True).stdout


def test_learn_window_turns_what_the_web_user_wrote_into_the_profile(site):
    """Unknown application: learn; when the window ends, what the web user made (not the owner's edits) is added."""
    h, admin, home = site
    root = document_root(home)
    make_tree(root, {"index.php": "<?php", "counter.txt": "0", "cache/": None, "lib/code.php": "<?php"}, home.owner)
    start = h.clock.seconds()
    assert fortify(h, admin, "", "max") is True
    info = fortification(h, admin)
    assert (info.app, info.mode, info.writable, info.learned) == ("unknown", "learn", [DOC], [])
    assert info.until.timestamp() == pytest.approx(start + 1800)
    made = as_web('echo c > "$1/cache/page.html" && mkdir -p "$1/data/x" && echo d > "$1/data/x/y"', root)
    assert made.returncode == 0, made.stderr
    with open(os.path.join(root, "lib/code.php"), "a") as fh:  # the owner's own edit during the window
        fh.write("// edited")
    h.advance(1799)
    assert fortification(h, admin).mode == "learn"
    h.advance(1)
    assert fortification(h, admin).mode == "max"
    info = fortification(h, admin)
    assert info.until is None
    assert info.writable == info.learned == [f"{DOC}/cache/page.html", f"{DOC}/data"]
    assert web_can_write(os.path.join(root, "cache/page.html"))
    assert web_can_write(os.path.join(root, "data/x"))
    for closed in ("index.php", "lib/code.php", "lib", "", "cache", "counter.txt"):
        assert not web_can_write(os.path.join(root, closed)), closed
    # max again keeps what was learned; reset forgets it
    fortify(h, admin, "", "max")
    assert fortification(h, admin).writable == info.writable
    fortify(h, admin, "", "reset")
    assert fortification(h, admin).learned == [] and not web_can_write(os.path.join(root, "data/x"))
    assert os.stat(os.path.join(root, "data/x/y")).st_uid == home.owner.uid


def test_learning_counts_only_what_the_web_user_made_or_changed_in_the_window(site):
    """What the web user made before the window (while released) is not learned unless it changes in the window."""
    h, admin, home = site
    root = document_root(home)
    make_tree(root, {"index.php": "<?php", "data/": None}, home.owner)
    fortify(h, admin, "", "release")
    assert as_web('echo a > "$1/old.php" && echo b > "$1/touched.txt" && mkdir "$1/data/old"', root).returncode == 0
    fortify(h, admin, "", "learn")
    assert as_web('echo c > "$1/new.php" && echo more >> "$1/touched.txt" && echo d > "$1/data/old/x"',
                  root).returncode == 0
    h.advance(1800)
    assert fortification(h, admin).mode == "max"
    assert fortification(h, admin).learned == [f"{DOC}/data/old", f"{DOC}/new.php", f"{DOC}/touched.txt"]
    assert not web_can_write(os.path.join(root, "old.php"))
    assert os.stat(os.path.join(root, "old.php")).st_uid == home.owner.uid  # given back by max


def test_learning_adds_to_the_profile_never_replacing_it(wordpress_site):
    """WordPress after a learn window: uploads and cache stay writable, a new folder is added, wp-content is not."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "learn")
    assert as_web('mkdir -p "$1/wp-content/uploads/2026/12" "$1/wp-content/backup-db" && '
                  'echo x > "$1/wp-content/backup-db/a.sql"', root).returncode == 0
    h.advance(1800)
    assert fortification(h, admin).mode == "max"
    info = fortification(h, admin)
    assert info.learned == [f"{DOC}/wp-content/backup-db"]  # the new month is under uploads/ already
    assert {f"{DOC}/wp-content/uploads", f"{DOC}/wp-content/cache", f"{DOC}/wp-content/backup-db"} <= set(info.writable)
    assert web_can_write(os.path.join(root, "wp-content/uploads/2026/12"))
    assert as_web('mkdir "$1/wp-content/uploads/2027"', root).returncode == 0
    for closed in ("wp-content", "wp-config.php", ".htaccess"):
        assert not web_can_write(os.path.join(root, closed)) or not os.path.exists(os.path.join(root, closed)), closed
    # min is the profile's wider set plus what was learned; learning after min never learns the
    # control file min gave the web user
    control = os.path.join(root, "wp-admin/includes/file.php")
    os.makedirs(os.path.dirname(control))
    with open(control, "w") as fh:
        fh.write("<?php")
    os.chown(control, home.owner.uid, home.owner.gid)
    fortify(h, admin, "", "min")
    assert os.stat(control).st_uid == _uid()
    fortify(h, admin, "", "learn")
    h.advance(1800)
    assert fortification(h, admin).mode == "max"
    assert fortification(h, admin).learned == [f"{DOC}/wp-content/backup-db"]
    assert os.stat(control).st_uid == home.owner.uid
    fortify(h, admin, "", "min")
    assert f"{DOC}/wp-content/backup-db" in fortification(h, admin).writable
    assert web_can_write(os.path.join(root, "wp-config.php"))


def test_bad_calls_are_client_faults(wordpress_site):
    """Unknown modes list the modes; escapes, files, missing folders and other sites are refused."""
    h, admin, home, root = wordpress_site
    with pytest.raises(InvalidArgument, match="max, min, learn, write, release, reset"):
        fortify(h, admin, "", "lockdown")
    for path in ("../..", "/etc", "wp-content/../../..", "%2e%2e", "wp-config.php", "/var/www"):
        with pytest.raises(InvalidArgument):
            fortify(h, admin, path, "max")
    os.symlink("/etc", os.path.join(root, "etc"))
    with pytest.raises(InvalidArgument):
        fortify(h, admin, "etc", "release")
    with pytest.raises(NotFound):
        fortify(h, admin, "no/such/folder", "max")
    with pytest.raises(NotFound):
        h.call(admin, "security_fortify", "other.example", "", "max")
    with pytest.raises(NotFound):
        h.call(admin, "security_fortification_info", "other.example")
    with pytest.raises(Denied):
        fortify(h, h.admin, "", "max")  # appliance: hijack first


def test_a_subfolder_is_fortified_on_its_own(site):
    """path names a folder of the document root, relative or as the site sees it, with its own profile."""
    h, admin, home = site
    blog = os.path.join(document_root(home), "blog")
    os.mkdir(blog)
    make_tree(blog, WORDPRESS, home.owner)
    fortify(h, admin, f"{DOC}/blog", "max")
    info = fortification(h, admin, "blog")
    assert (info.app, info.mode) == ("wordpress", "max")
    assert info.writable == [f"{DOC}/blog/wp-content/{p}" for p in ("cache", "updraft", "uploads", "wflogs")]
    assert fortification(h, admin).mode == "none"
    assert web_can_write(os.path.join(blog, "wp-content/uploads"))
    assert not web_can_write(os.path.join(blog, "wp-config.php"))


def test_what_the_web_user_opened_to_the_world_is_closed_when_given_back(wordpress_site):
    """A folder the web user made 0777 and a file it made 0666 are the owner's, without group/other write."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "release")
    script = 'mkdir "$1/open" && chmod 777 "$1/open" && echo x > "$1/open/f" && chmod 666 "$1/open/f"'
    assert as_web(script, root).returncode == 0
    fortify(h, admin, "", "reset")
    for rel, mode in (("open", 0o755), ("open/f", 0o644)):
        st = os.stat(os.path.join(root, rel))
        assert (st.st_uid, st.st_mode & 0o777) == (home.owner.uid, mode), rel
        assert not web_can_write(os.path.join(root, rel)), rel


def test_learning_never_follows_a_folder_swapped_for_a_link(tmp_path, monkeypatch):
    """What a learn window records comes from the site's folder only, even when a folder becomes a link mid-walk."""
    from apiserver.sites.fortify import learn
    from apiserver.sites.home import SiteHomes

    home = SiteHomes(str(tmp_path / "sites"), "root").create("example.com")
    outside = tmp_path / "outside"
    (outside / "elsewhere").mkdir(parents=True)
    (outside / "elsewhere" / "written.php").write_text("x")
    docroot = os.path.realpath(home.document_root)
    os.makedirs(os.path.join(docroot, "cache", "elsewhere"))
    swap_for_link_before_listing(monkeypatch, os.path.join(docroot, "cache"), str(outside))
    web_uid = os.stat(outside).st_uid + 12345
    os.chown(outside / "elsewhere" / "written.php", web_uid, 0)
    with open(os.path.join(docroot, "made.txt"), "w"):
        pass
    os.chown(os.path.join(docroot, "made.txt"), web_uid, 0)
    learned = learn(docroot, web_uid, home.real_root, -1)
    assert os.path.islink(os.path.join(docroot, "cache"))
    assert learned == ["made.txt"]  # nothing of what lies behind the link


def test_info_never_looks_through_a_link_for_a_learned_path(site, tmp_path):
    """A learned entry whose folder became a link out of the site is not listed: info is no oracle for host paths."""
    h, admin, home = site
    docroot = document_root(home)
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    os.makedirs(os.path.join(docroot, "kept", "b"))
    site_id, _row = h.app.fortifier._load("example.com", "")
    h.app.fortifier._save(site_id, "", "unknown", "max", None, None, ["a/b/", "kept/b/"], 0.0)
    os.symlink(str(outside), os.path.join(docroot, "a"))
    assert fortification(h, admin).writable == [f"{DOC}/kept/b"]
    fortify(h, admin, "", "release")
    assert fortification(h, admin).writable == [DOC]  # the folder itself stands for everything in it


def test_a_hard_link_made_while_released_does_not_keep_wp_config_writable(wordpress_site):
    """The web user hard-links wp-config.php into uploads while everything is writable; after max the
    file is closed under both names (a hard link is the same file, so it is never granted)."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "release")
    linked = os.path.join(root, "wp-content/uploads/config.php")
    assert as_web('ln "$1" "$2"', os.path.join(root, "wp-config.php"), linked).returncode == 0
    fortify(h, admin, "", "max")
    assert os.path.samefile(linked, os.path.join(root, "wp-config.php"))
    assert not web_can_write(os.path.join(root, "wp-config.php"))
    assert web_can_write(os.path.join(root, "wp-content/uploads/2026/photo.jpg"))


@pytest.mark.parametrize("depth", [300, 2000])
def test_a_folder_hundreds_deep_is_fortified_and_audited_like_a_shallow_one(wordpress_site, depth):
    """300 and 2,000 folders down, a file in uploads is writable after max and one in plugins is not,
    what the web user made there while released is taken back, audit lists exactly the deep writable
    file, and reset closes everything: the same as for the shallow files beside them."""
    h, admin, home, root = wordpress_site
    chain = "/".join(["d"] * depth)
    uploads, plugins = f"wp-content/uploads/{chain}", f"wp-content/plugins/{chain}"
    for base in ("wp-content/uploads", "wp-content/plugins"):
        fd = os.open(os.path.join(root, base), os.O_RDONLY | os.O_DIRECTORY)
        make_deep(fd, depth, leaf="deep.php", owner=home.owner)
        os.close(fd)
    assert not web_can_write_below(root, uploads, "deep.php")
    fortify(h, admin, "", "release")
    for rel in (uploads, plugins):
        assert web_can_write_below(root, rel, "deep.php") and web_can_write_below(root, rel)
    assert as_web_in(root, plugins, "echo x > web.php").returncode == 0
    assert stat_below(root, f"{plugins}/web.php").st_uid == _uid()

    fortify(h, admin, "", "max")
    assert web_can_write_below(root, uploads, "deep.php") and web_can_write_below(root, uploads)
    assert web_can_write(os.path.join(root, "wp-content/uploads/2026/photo.jpg"))
    for name in ("deep.php", "web.php", ""):
        assert not web_can_write_below(root, plugins, name), name
    assert not web_can_write(os.path.join(root, "wp-content/plugins/akismet/akismet.php"))
    assert stat_below(root, f"{plugins}/web.php").st_uid == home.owner.uid  # taken back, as at the top
    listed = _audit(h, admin)
    assert f"{DOC}/{uploads}/deep.php" in listed and f"{DOC}/{uploads}" in listed
    assert f"{DOC}/wp-content/uploads/2026/photo.jpg" in listed
    assert not [path for path in listed if path.startswith(f"{DOC}/wp-content/plugins")]

    fortify(h, admin, "", "reset")
    for rel in (uploads, plugins):
        assert not web_can_write_below(root, rel, "deep.php") and not web_can_write_below(root, rel)
    assert _audit(h, admin) == []


def _audit(h, admin, *args):
    return h.call(admin, "security_audit", *args)


def test_a_hard_link_to_a_web_user_file_outside_the_home_changes_nothing_outside(wordpress_site, tmp_path):
    """A hard link planted to a PHP session file (the web user's, outside the home): reset does not
    chown it, nothing gains an ACL, and the default audit reports the link."""
    h, admin, home, root = wordpress_site
    session = tmp_path / "sess_abc"
    session.write_text("user|s:5:\"admin\";")
    os.chown(session, _uid(), _uid())
    os.chmod(session, 0o600)
    planted = os.path.join(root, "wp-content/uploads/sess.txt")
    os.link(str(session), planted)
    before = os.stat(session)
    acl_before = subprocess.run(["getfacl", "-p", str(session)], capture_output=True, text=True).stdout
    for mode in ("release", "reset", "max"):
        fortify(h, admin, "", mode)
        after = os.stat(session)
        assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode), mode
        assert subprocess.run(["getfacl", "-p", str(session)], capture_output=True, text=True).stdout == acl_before
    assert f"{DOC}/wp-content/uploads/sess.txt" in _audit(h, admin)


def test_drupal_files_of_every_site_are_writable_never_through_a_link(site, tmp_path):
    """Drupal's sites/*/files: each site's files folder is writable, settings.php is not, a link is never followed."""
    h, admin, home = site
    root = document_root(home)
    make_tree(root, {"core/lib/Drupal.php": "<?php", "sites/default/settings.php": "<?php",
                     "sites/default/files/a.png": "png", "sites/shop.example/files/": None,
                     "modules/contrib/x.module": "<?php"}, home.owner)
    outside = tmp_path / "outside" / "files"
    outside.mkdir(parents=True)
    os.symlink(str(outside.parent), os.path.join(root, "sites", "evil"))
    fortify(h, admin, "", "max")
    info = fortification(h, admin)
    assert (info.app, info.writable) == ("drupal", [f"{DOC}/sites/default/files", f"{DOC}/sites/shop.example/files"])
    assert web_can_write(os.path.join(root, "sites/default/files/a.png"))
    assert web_can_write(os.path.join(root, "sites/shop.example/files"))
    for closed in ("sites/default/settings.php", "sites/default", "modules/contrib/x.module", ""):
        assert not web_can_write(os.path.join(root, closed)), closed
    assert f"user:{WEB_USER}" not in subprocess.run(["getfacl", "-p", str(outside)], capture_output=True,
                                                   text=True).stdout
    fortify(h, admin, "", "min")
    assert web_can_write(os.path.join(root, "modules/contrib/x.module"))


@pytest.mark.parametrize("files, app, writable, closed", [
    ({"configuration.php": "<?php", "libraries/src/Version.php": "<?php", "administrator/index.php": "<?php",
      "images/logo.png": "png"}, "joomla", ["administrator/cache", "administrator/logs", "cache", "log", "logs", "tmp"],
     ["configuration.php", "images/logo.png", "administrator/index.php"]),
    ({"app/Mage.php": "<?php", "app/etc/local.xml": "<x/>", "media/catalog/p.jpg": "jpg", "var/": None}, "magento",
     ["downloader", "media/downloadable", "var/cache", "var/log", "var/session"],
     ["app/etc/local.xml", "media/catalog/p.jpg", "app/Mage.php"]),
    ({"artisan": "#!php", "bootstrap/app.php": "<?php", "storage/framework/": None, "storage/app/": None},
     "laravel", ["bootstrap/cache", "storage/framework/cache", "storage/framework/sessions",
                 "storage/framework/views", "storage/logs"],
     ["artisan", "bootstrap/app.php", "storage/app"]),
])
def test_joomla_4_magento_1_and_laravel_get_apiscp_s_max(site, files, app, writable, closed):
    """The profiles ApisCP's detection missed (Joomla 4/5, Magento 1) and Laravel: exactly their max paths."""
    h, admin, home = site
    root = document_root(home)
    make_tree(root, files, home.owner)
    fortify(h, admin, "", "max")
    info = fortification(h, admin)
    assert (info.app, info.writable) == (app, [f"{DOC}/{p}" for p in writable])
    for rel in writable:
        assert web_can_write(os.path.join(root, rel)), rel
    for rel in closed:
        assert not web_can_write(os.path.join(root, rel)), rel
