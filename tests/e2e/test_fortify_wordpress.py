"""Fortification end to end: Debian's real WordPress package in a site's document root, served by a real
Apache with mod_php as the web server user; PHP does what WordPress does (an upload into a new month's
folder, a page cache, a wp-config.php edit, a plugin install, permalinks in .htaccess, a core file) and
succeeds or fails exactly as each mode's profile says, before and after learning.  Also a manifest for an
unknown application, and the lockdown of binaries as PHP under Apache sees it.

The modes are set through the API's dispatcher on an in-process application whose clock the test drives,
so learn and write windows close by themselves without waiting."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse

import pytest

from apiserver.errors import InvalidArgument
from tests.accounts.support import Harness, wait
from tests.sites.apache_support import MODULES, ApacheServer, load_modules
from tests.sites.support import WEB_USER, lockdown_machine, remove_tree

WORDPRESS_PACKAGE = "/usr/share/wordpress"
PHP_MODULE = (sorted(glob.glob(os.path.join(MODULES, "libphp*.so"))) or [os.path.join(MODULES, "libphp.so")])[-1]
SITE_USER = "nobody"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runs Apache as root and acts as other users (runuser)"),
    pytest.mark.skipif(not os.path.isdir(WORDPRESS_PACKAGE) or not os.path.exists(PHP_MODULE),
                       reason="needs Debian's wordpress and libapache2-mod-php (scripts/test.sh installs them)"),
]

#: What the probe does, as WordPress does it: wp_mkdir_p + move_uploaded_file, a page cache file, WP Super
#: Cache's edit of wp-config.php, save_mod_rewrite_rules, the plugin installer (unpack into upgrade/, move
#: into plugins/), and a write to a core file (what a backdoor needs).
PROBE = r"""<?php
header('Content-Type: text/plain');
$root = __DIR__;
$arg = isset($_GET['arg']) ? basename($_GET['arg']) : 'x';
function ok($r) { echo $r === false ? 'fail: ' . (error_get_last()['message'] ?? '?') : 'ok'; }
switch ($_GET['op'] ?? '') {
case 'upload':
    $dir = "$root/wp-content/uploads/2031/$arg";
    ok(@is_dir($dir) || @mkdir($dir, 0755, true) ? @file_put_contents("$dir/photo.jpg", 'jpeg') : false);
    break;
case 'cache':
    $dir = "$root/wp-content/cache/supercache/$arg";
    ok(@is_dir($dir) || @mkdir($dir, 0755, true) ? @file_put_contents("$dir/index.html", '<html>') : false);
    break;
case 'config':
    $text = @file_get_contents("$root/wp-config.php");
    ok($text === false ? false : @file_put_contents("$root/wp-config.php", $text . "\n// $arg"));
    break;
case 'htaccess':
    ok(@file_put_contents("$root/.htaccess", "# BEGIN WordPress $arg\n# END WordPress\n"));
    break;
case 'plugin':
    $tmp = "$root/wp-content/upgrade/$arg";
    $r = @mkdir($tmp, 0755, true) && @file_put_contents("$tmp/$arg.php", "<?php /* Plugin Name: $arg */")
         && @rename($tmp, "$root/wp-content/plugins/$arg");
    ok($r ? true : false);
    break;
case 'core':
    ok(@file_put_contents("$root/wp-includes/version.php", "<?php /* $arg */", FILE_APPEND));
    break;
case 'fsmethod':
    // WordPress's own choice: write directly, or ask for FTP credentials (its plugin installer asks this)
    define('ABSPATH', "$root/");
    define('WPINC', 'wp-includes');
    define('WP_CONTENT_DIR', "$root/wp-content");
    define('WP_LANG_DIR', WP_CONTENT_DIR . '/languages');
    foreach (['load', 'plugin', 'formatting', 'functions', 'l10n', 'pomo/translations'] as $f) {
        require ABSPATH . WPINC . "/$f.php";
    }
    require ABSPATH . 'wp-admin/includes/file.php';
    echo get_filesystem_method(array(), WP_CONTENT_DIR . '/plugins');
    break;
case 'exec':
    exec($_GET['bin'] . ' 2>&1', $out, $rc);
    echo "$rc:" . implode("\n", $out);
    break;
default:
    echo 'unknown op';
}
"""
OPS = ("upload", "cache", "config", "htaccess", "plugin", "core")
#: What WordPress may do in each mode, as the profiles say (ApisCP's max and min).
MAX = {"upload": True, "cache": True, "config": False, "htaccess": False, "plugin": False, "core": False}
MIN = {"upload": True, "cache": True, "config": True, "htaccess": True, "plugin": True, "core": False}
ALL = dict.fromkeys(OPS, True)
NONE = dict.fromkeys(OPS, False)


class Apache(ApacheServer):
    """One Apache (prefork, mod_php) in the foreground as a child of the test, serving ``document_root``."""

    def __init__(self, directory: str, document_root: str):
        super().__init__(directory, f"""{load_modules(("mpm_prefork", "authz_core", "mime", "dir"))}
LoadModule php_module {PHP_MODULE}
StartServers 1
MinSpareServers 1
MaxSpareServers 2
MaxRequestWorkers 4
TypesConfig /etc/mime.types
DirectoryIndex index.php
DocumentRoot {document_root}
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory {document_root}>
  AllowOverride None
  Require all granted
</Directory>
<FilesMatch "\\.php$">
  SetHandler application/x-httpd-php
</FilesMatch>
php_admin_flag display_errors off
""", WEB_USER)

    def get(self, path: str) -> tuple:
        """(status, body as text) of a GET of ``path``."""
        status, body = super().get(path, timeout=30)
        return status, body.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def world():
    """(harness, site administrator, site home, document root, Apache) with Debian's WordPress as example.com."""
    top = tempfile.mkdtemp(prefix="apiserver-wp-", dir="/tmp")
    os.chmod(top, 0o711)
    sites_root = os.path.join(top, "sites")
    empty = os.path.join(top, "no-binaries")
    os.mkdir(empty)
    # The lockdown's own settings find nothing: only the lockdown test points it (per call) at copies.
    h = Harness(os.path.join(top, "state"), {"web": {"sites_root": sites_root}, "security": {
        "lockdown_search_path": empty, "lockdown_trees": "", "template_root": empty}})
    apache = None
    try:
        admin = h.add_site()
        home = h.app.site_homes.get("example.com")
        root = os.path.realpath(home.document_root)
        _install_wordpress(root, home.owner)
        os.mkdir(os.path.join(top, "apache"))
        apache = Apache(os.path.join(top, "apache"), root)
        yield h, admin, home, root, apache
    finally:
        if apache is not None:
            apache.stop()
        h.app.fortifier.stop()
        h.close()
        remove_tree(top)


def _install_wordpress(root: str, owner) -> None:
    """Debian's WordPress as a site owner would have it: a copy of the package, its own wp-config.php and
    .htaccess (the package's are links into /etc/wordpress), everything the owner's."""
    shutil.copytree(WORDPRESS_PACKAGE, root, symlinks=True, dirs_exist_ok=True)
    for name in (".htaccess", "wp-config.php"):
        os.unlink(os.path.join(root, name))
    with open(os.path.join(root, ".htaccess"), "w") as fh:
        fh.write("# BEGIN WordPress\n# END WordPress\n")
    with open(os.path.join(root, "wp-config.php"), "w") as fh:
        fh.write("<?php\ndefine('DB_NAME', 'wordpress');\ndefine('DB_PASSWORD', 'secret');\n"
                 "$table_prefix = 'wp_';\n")
    with open(os.path.join(root, "fortify-probe.php"), "w") as fh:
        fh.write(PROBE)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, owner.uid, owner.gid)
            if not os.path.islink(name):
                os.chmod(name, 0o755 if os.path.isdir(name) else 0o644)


class Probe:
    """Ask the probe, under Apache, to do what WordPress does; each call gets fresh names."""

    def __init__(self, apache: Apache):
        self.apache = apache
        self.count = 0

    def run(self, op: str, **query) -> str:
        self.count += 1
        query = {"op": op, "arg": f"{op}{self.count}", **query}
        status, body = self.apache.get("/fortify-probe.php?" + urllib.parse.urlencode(query))
        assert status == 200, (status, body, self.apache.log())
        return body

    def matrix(self) -> dict:
        return {op: self.run(op) == "ok" for op in OPS}


def _fortify(h, admin, mode: str, path: str = "") -> None:
    assert h.call(admin, "security_fortify", "example.com", path, mode) is True


def _info(h, admin, path: str = ""):
    return h.call(admin, "security_fortification_info", "example.com", path)


def test_wordpress_under_apache_does_exactly_what_each_mode_allows(world):
    """max, min, release, reset, and write (its window closing by itself into the mode before it), as PHP in Apache."""
    h, admin, home, root, apache = world
    probe = Probe(apache)
    control = os.path.join(root, "wp-admin/includes/file.php")
    assert _info(h, admin).app == "wordpress"
    _fortify(h, admin, "reset")
    assert probe.matrix() == NONE
    _fortify(h, admin, "max")
    assert probe.matrix() == MAX
    assert probe.run("fsmethod") != "direct"  # WordPress would ask for FTP credentials
    _fortify(h, admin, "min")
    assert probe.matrix() == MIN
    assert probe.run("fsmethod") == "direct"  # ApisCP's control file: WordPress installs plugins itself
    assert os.stat(control).st_uid == pwd.getpwnam(WEB_USER).pw_uid
    _fortify(h, admin, "max")
    assert probe.run("fsmethod") != "direct" and probe.matrix() == MAX
    assert os.stat(control).st_uid == home.owner.uid
    _fortify(h, admin, "release")
    assert probe.matrix() == ALL
    _fortify(h, admin, "reset")
    assert probe.matrix() == NONE
    # write: everything for the window, then the mode before it (ApisCP's Web App Write Mode)
    for before, expected in (("reset", NONE), ("min", MIN), ("max", MAX)):
        _fortify(h, admin, before)
        _fortify(h, admin, "write")
        assert probe.matrix() == ALL
        h.advance(599)
        assert _info(h, admin).mode == "write"
        h.advance(1)
        assert _info(h, admin).mode == before, before
        assert probe.matrix() == expected, before


def test_learning_adds_what_wordpress_made_and_reset_forgets_it(world):
    """learn: everything during the window; after it closes (by itself), max plus what the web server made
    (a plugin it installed), the owner's edits not learned; reset forgets what was learned."""
    h, admin, home, root, apache = world
    probe = Probe(apache)
    _fortify(h, admin, "reset")
    _fortify(h, admin, "max")
    assert probe.matrix() == MAX  # before learning
    _fortify(h, admin, "learn")
    assert probe.run("plugin", arg="learned-plugin") == "ok"  # WordPress installs a plugin while learning
    assert probe.run("upload", arg="05") == "ok"
    with open(os.path.join(root, "wp-includes", "owner-edit.php"), "w") as fh:  # the owner's own work
        fh.write("<?php")
    assert _info(h, admin).mode == "learn"
    h.advance(1800)
    info = _info(h, admin)
    assert info.mode == "max"
    assert info.learned == ["/var/www/html/wp-content/plugins/learned-plugin"]
    assert {"/var/www/html/wp-content/uploads", "/var/www/html/wp-content/cache"} <= set(info.writable)
    assert probe.matrix() == MAX  # after learning: the profile still holds, nothing wider
    plugin = "/wp-content/plugins/learned-plugin/learned-plugin.php"
    status, _body = apache.get(plugin)
    assert status == 200
    assert probe.run("config") != "ok"
    # the learned plugin stays writable for WordPress (an update of that plugin)
    assert _php_write(apache, root, "wp-content/plugins/learned-plugin/learned-plugin.php") == "ok"
    _fortify(h, admin, "reset")
    assert _info(h, admin).learned == []
    assert _php_write(apache, root, "wp-content/plugins/learned-plugin/learned-plugin.php") != "ok"
    assert os.stat(os.path.join(root, plugin.lstrip("/"))).st_uid == home.owner.uid
    _fortify(h, admin, "max")
    assert probe.matrix() == MAX and _info(h, admin).learned == []


def _php_write(apache: Apache, root: str, rel: str) -> str:
    """Have PHP under Apache append to ``rel`` (a one-off script next to the probe, the owner's)."""
    script = os.path.join(root, "fortify-append.php")
    owner = os.stat(os.path.join(root, "fortify-probe.php"))
    with open(script, "w") as fh:
        fh.write("<?php $r = @file_put_contents(__DIR__ . '/' . $_GET['f'], '// x', FILE_APPEND);"
                 " echo $r === false ? 'fail' : 'ok';")
    os.chown(script, owner.st_uid, owner.st_gid)
    try:
        return apache.get("/fortify-append.php?" + urllib.parse.urlencode({"f": rel}))[1]
    finally:
        os.unlink(script)


def test_a_manifest_for_an_unknown_application_under_apache(world):
    """An unknown application with a .webapp.yml gets its paths; a bad manifest is refused naming the line."""
    h, admin, home, root, apache = world
    app = os.path.join(root, "shop")
    os.makedirs(os.path.join(app, "var", "cache"))
    with open(os.path.join(app, "index.php"), "w") as fh:
        fh.write("<?php $f = __DIR__ . '/' . $_GET['f']; echo @file_put_contents($f, 'x') === false ? 'fail' : 'ok';")
    with open(os.path.join(app, ".webapp.yml"), "w") as fh:
        fh.write("name: Shop\nfortification:\n  max:\n    - var/cache/\n")
    for dirpath, dirnames, filenames in os.walk(app):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, home.owner.uid, home.owner.gid)
    _fortify(h, admin, "max", "shop")
    assert _info(h, admin, "shop").app == "Shop"
    assert apache.get("/shop/index.php?f=var/cache/page.html")[1] == "ok"
    for target in ("index.php", "new.php", ".webapp.yml"):
        assert apache.get("/shop/index.php?" + urllib.parse.urlencode({"f": target}))[1] == "fail", target
    with open(os.path.join(app, ".webapp.yml"), "w") as fh:
        fh.write("name: Shop\nfortification:\n  max:\n    - var/cache/\n  maximum:\n    - var/\n")
    with pytest.raises(InvalidArgument, match="line 5, fortification.maximum"):
        _fortify(h, admin, "max", "shop")


@pytest.fixture
def binaries():
    """Copies of whoami and cat in a folder PHP may reach, with a template root hard-linking cat."""
    top = lockdown_machine()
    yield top
    remove_tree(top)


def test_php_under_apache_cannot_run_locked_binaries(world, binaries):
    """After security_lockdown PHP under Apache cannot run a listed binary, a site user and root still can,
    lockdown_status says so, and the timer locks a replaced binary again."""
    h, _admin, _home, _root, apache = world
    bin_dir = os.path.join(binaries, "bin")
    probe = Probe(apache)
    settings = {"lockdown_binaries": ("whoami", "cat", "perl*"), "lockdown_search_path": (bin_dir,),
                "lockdown_trees": (), "template_root": os.path.join(binaries, "template")}
    lockdown = h.app.lockdown
    original = lockdown.settings
    lockdown.settings = _Overlay(original, "security", settings)
    try:
        whoami = os.path.join(bin_dir, "whoami")
        assert probe.run("exec", bin=whoami) == f"0:{WEB_USER}"
        assert h.call(h.admin, "security_lockdown") is True
        for binary in (whoami, os.path.join(bin_dir, "cat") + " /etc/hostname", os.path.join(bin_dir, "perl") + " -v"):
            rc, _sep, _out = probe.run("exec", bin=binary).partition(":")
            assert rc == "126", binary  # "Permission denied": the shell cannot execute it
        for user, wanted in ((SITE_USER, SITE_USER), ("root", "root")):
            ran = subprocess.run(["runuser", "-u", user, "--", whoami], capture_output=True, text=True, timeout=30)
            assert ran.stdout.strip() == wanted
        status = h.call(h.admin, "security_lockdown_status")
        assert {e.path for e in status} == {whoami, f"{bin_dir}/cat", f"{bin_dir}/perl",
                                           os.path.join(binaries, "template", bin_dir.lstrip("/"), "cat")}
        assert all(e.denied for e in status)
        # a package update replaces whoami; the daily timer (started with the services) locks it again
        shutil.copy2(shutil.which("whoami"), whoami + ".new")
        os.replace(whoami + ".new", whoami)
        assert probe.run("exec", bin=whoami) == f"0:{WEB_USER}"
        h.clock.advance(86400)
        wait(lockdown.idle())  # the re-apply runs on the blocking pool
        assert probe.run("exec", bin=whoami).startswith("126:")
    finally:
        lockdown.settings = original
        state = os.path.join(h.config.state_dir, "lockdown.json")
        if os.path.exists(state):
            os.unlink(state)


class _Overlay:
    """The config with some keys of one section replaced (the lockdown reads its settings per call)."""

    def __init__(self, config, section: str, values: dict):
        self.config, self.section, self.values = config, section, values

    def get(self, section: str, key: str):
        if section == self.section and key in self.values:
            return self.values[key]
        return self.config.get(section, key)
