"""check_htaccess reads .htaccess files by Apache's rules and walks a site without leaving it."""

from __future__ import annotations

import os
import pwd

import pytest

from apiserver.errors import InvalidArgument, NotFound
from apiserver.sites import htaccess
from apiserver.sites.home import SiteHomes


@pytest.fixture
def homes(tmp_path):
    """Homes under a temporary sites_root, owned by the user running the tests."""
    return SiteHomes(str(tmp_path / "sites"), pwd.getpwuid(os.geteuid()).pw_name)


@pytest.fixture
def home(homes):
    return homes.create("example.com")


def _put(home, relative: str, data) -> str:
    path = os.path.join(home.document_root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


def lines_of(data: bytes) -> list:
    return [(f.line, f.directive) for f in htaccess.scan(data)]


@pytest.mark.parametrize("text", [
    "Options +FollowSymLinks", "Options FollowSymLinks", "OPTIONS +followSYMlinks", "Options All",
    "Options +Includes", "Options IncludesNOEXEC", "options includes", 'Options "+FollowSymLinks"',
    "'Options' +Includes", "Options -Indexes +FollowSymLinks",
])
def test_options_that_turn_on_links_or_ssi_are_reported(text):
    """FollowSymLinks, All, Includes and IncludesNOEXEC, with or without +, any case, quoted."""
    (finding,) = htaccess.scan(text.encode())
    assert finding.line == 1 and finding.refused and "turns on" in finding.reason
    assert "Apache answers 500" in finding.reason


@pytest.mark.parametrize("text, word", [
    ("Options -FollowSymLinks", "FollowSymLinks"), ("Options -Includes", "Includes"),
    ("Options -IncludesNOEXEC", "IncludesNOEXEC"),
])
def test_turning_off_what_the_policy_does_not_list_is_a_500_warning(text, word):
    """-FollowSymLinks turns nothing on, yet Apache refuses the word: the reason says 500."""
    (finding,) = htaccess.scan(text.encode())
    assert finding.refused and "turns on" not in finding.reason
    assert f"option {word} is not allowed here, not even to turn it off" in finding.reason


@pytest.mark.parametrize("text", [
    "", "Options -SymLinksIfOwnerMatch", "Options +SymLinksIfOwnerMatch -Indexes", "Options None",
    "Options Indexes MultiViews", "Options -ExecCGI", "XBitHack off", "AddHandler cgi-script .cgi",
    "SetOutputFilter DEFLATE", "AddOutputFilter DEFLATE;BUCKETEER .css", "# Options +FollowSymLinks",
    "  # Options All", "RewriteRule ^x$ y [L,T=text/html]", "FilterProvider gz DEFLATE \"true\"",
    "AddType text/html .foo", "Header set X-Note \"Options +FollowSymLinks\"",
])
def test_harmless_lines_pass(text):
    """Turning SymLinksIfOwnerMatch off, comments, other filters, handlers and types are fine."""
    assert htaccess.scan(text.encode()) == []


@pytest.mark.parametrize("text", [
    "XBitHack on", "XBitHack FULL", "SetOutputFilter INCLUDES", "SetOutputFilter DEFLATE;includes",
    "AddOutputFilter INCLUDES .shtml", "AddOutputFilterByType INCLUDES text/html",
    "AddHandler server-parsed .shtml", "AddHandler Server-Parsed .html", "SetHandler server-parsed",
    'RewriteRule \\.foo$ - [L,H=server-parsed]', "RewriteRule x - [handler=server-parsed]",
    'FilterProvider ssi INCLUDES "true"',
])
def test_ssi_switches_are_reported_as_without_effect(text):
    """Each way to set the INCLUDES filter or the server-parsed handler, reported, not refused."""
    (finding,) = htaccess.scan(text.encode())
    assert not finding.refused and "no effect" in finding.reason and "SSI" in finding.reason


def test_continuations_report_the_first_line_and_the_joined_directive():
    """A backslash-newline joins lines (CRLF too); the finding names the first line."""
    data = b"# intro\nOptions -Indexes \\\n  +FollowSymLinks\nAddHandler \\\r\n server-parsed .shtml\r\n"
    assert lines_of(data) == [(2, "Options -Indexes   +FollowSymLinks"), (4, "AddHandler  server-parsed .shtml")]


def test_a_continued_comment_swallows_the_next_line():
    """As in Apache, a comment line that ends in a backslash goes on: the Options is commented out."""
    assert htaccess.scan(b"# old setting \\\nOptions +FollowSymLinks\nOptions +Includes\n")[0].line == 3
    assert len(htaccess.scan(b"# old setting \\\nOptions +FollowSymLinks\n")) == 0


def test_hash_is_a_comment_only_at_line_start():
    """A trailing '# ...' is words to Apache: Options refuses '#' (syntax), and it is reported."""
    (finding,) = htaccess.scan(b"Options -Indexes # no listing\n")
    assert finding.refused and "'#'" in finding.reason


def test_sections_are_read_inside():
    """Directives in <Files>, <IfModule>, <If>, <FilesMatch> and <Limit>, nested, are reported with their lines."""
    data = (b'<IfModule mod_include.c>\n  <FilesMatch "\\.html$">\n    Options +Includes\n  </FilesMatch>\n'
            b'</IfModule>\n<Files "index.foo">\n  Header set Content-Type "text/html"\n  SetOutputFilter INCLUDES\n'
            b'</Files>\n<If "true">\nXBitHack on\n</If>\n<Limit GET>\nOptions +FollowSymLinks\n</Limit>\n')
    assert [line for line, _ in lines_of(data)] == [3, 8, 11, 14]


def test_option_syntax_errors_are_500():
    """Mixing +/- with bare words, +All, All after another word and unknown words are refused."""
    for text in ("Options Indexes +MultiViews", "Options +Indexes MultiViews", "Options +All", "Options -None",
                 "Options Indexes All", "Options +Frobnicate", 'Options ""', "Options +${UNDEFINED}"):
        (finding,) = htaccess.scan(text.encode())
        assert finding.refused and "Apache answers 500" in finding.reason, text


def test_directive_text_is_printable_and_bounded():
    """Control characters and invalid UTF-8 are shown as replacement characters; long lines are cut."""
    (finding,) = htaccess.scan(b"Options +FollowSymLinks \x01\xff" + b"x" * 2000)
    assert finding.directive.isprintable() and len(finding.directive) <= 503


def test_apache_policy_directives():
    """AllowOverride names the classes and the Options= list; FollowSymLinks and Includes are not in it."""
    assert htaccess.apache_policy().splitlines() == [
        "AllowOverride AuthConfig FileInfo Indexes Limit Options=Indexes,MultiViews,SymLinksIfOwnerMatch,ExecCGI",
        "AllowOverrideList None",
        "Options SymLinksIfOwnerMatch",
    ]


# --- the tree ---------------------------------------------------------------------------------

def test_check_tree_reports_every_file_as_the_site_sees_it(home):
    """Every .htaccess at or under the path, site paths, in walk order, line numbers 1-based."""
    _put(home, ".htaccess", "Options -Indexes\nOptions +FollowSymLinks\n")
    _put(home, "blog/.htaccess", "RewriteEngine On\n")
    _put(home, "blog/wp-content/uploads/.htaccess", "\nXBitHack full\n")
    _put(home, "shop/.htaccess", "Options All\n")
    found = htaccess.check_tree(home, "/var/www/html")
    assert [(f.file, f.line, f.directive) for f in found] == [
        ("/var/www/html/.htaccess", 2, "Options +FollowSymLinks"),
        ("/var/www/html/blog/wp-content/uploads/.htaccess", 2, "XBitHack full"),
        ("/var/www/html/shop/.htaccess", 1, "Options All"),
    ]
    assert [f.file for f in htaccess.check_tree(home, "/var/www/html/blog")] == [
        "/var/www/html/blog/wp-content/uploads/.htaccess"]
    assert [f.line for f in htaccess.check_tree(home, "/var/www/html/shop/.htaccess")] == [1]
    assert htaccess.check_tree(home, "/") == found


def test_check_tree_never_leaves_the_home(home, homes, tmp_path):
    """Folder links are not followed; a .htaccess linking out is reported, not read; paths out are refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".htaccess").write_text("Options +FollowSymLinks\n")
    other = homes.create("other.example")
    _put(other, ".htaccess", "Options +Includes\n")
    os.symlink(str(outside), os.path.join(home.document_root, "out"))
    os.symlink(other.document_root, os.path.join(home.document_root, "other"))
    os.makedirs(os.path.join(home.document_root, "linked"))
    os.symlink(str(outside / ".htaccess"), os.path.join(home.document_root, "linked", ".htaccess"))
    (finding,) = htaccess.check_tree(home, "/var/www/html")
    assert finding.file == "/var/www/html/linked/.htaccess" and "out of the site's home" in finding.reason
    assert finding.directive == ""
    for path in ("/var/www/html/out", "/var/www/html/other", "/var/www/html/../../../..", "/var/www/%2e%2e"):
        with pytest.raises(InvalidArgument):
            htaccess.check_tree(home, path)


def test_link_inside_the_home_is_read(home):
    """A .htaccess linking to a file of the same home is read (Apache reads it too)."""
    _put(home, "shared.conf", "Options +Includes\n")
    os.makedirs(os.path.join(home.document_root, "a"))
    os.symlink("../shared.conf", os.path.join(home.document_root, "a", ".htaccess"))
    (finding,) = htaccess.check_tree(home, "/var/www/html/a")
    assert finding.file == "/var/www/html/a/.htaccess" and finding.directive == "Options +Includes"
    (named,) = htaccess.check_tree(home, "/var/www/html/a/.htaccess")
    assert named.directive == "Options +Includes"


def test_odd_files_do_not_hang_or_crash(home):
    """A FIFO or a folder named .htaccess is reported (Apache answers 403), never opened to block."""
    os.makedirs(os.path.join(home.document_root, "fifo"))
    os.mkfifo(os.path.join(home.document_root, "fifo", ".htaccess"))
    os.makedirs(os.path.join(home.document_root, "dir", ".htaccess"))
    found = htaccess.check_tree(home, "/var/www/html")
    assert [(f.file, "regular file" in f.reason) for f in found] == [
        ("/var/www/html/dir/.htaccess", True), ("/var/www/html/fifo/.htaccess", True)]


def test_missing_path_and_other_files(home):
    """A missing path is NotFound; a file that is not a .htaccess is InvalidArgument."""
    with pytest.raises(NotFound):
        htaccess.check_tree(home, "/var/www/html/nope")
    _put(home, "index.php", "<?php")
    with pytest.raises(InvalidArgument):
        htaccess.check_tree(home, "/var/www/html/index.php")


def test_a_folder_swapped_for_a_link_while_checking_is_not_read(home, tmp_path, monkeypatch):
    """A folder replaced by a link out of the home just before its .htaccess is opened: reported, not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".htaccess").write_text("Options +FollowSymLinks\n")
    folder = os.path.join(home.document_root, "private")
    _put(home, "private/.htaccess", "Options -Indexes\n")
    real_open = os.open

    def swapping_open(path, *args, **kwargs):
        if str(path).endswith("private/.htaccess") and not os.path.islink(folder):
            os.unlink(os.path.join(folder, ".htaccess"))
            os.rmdir(folder)
            os.symlink(str(outside), folder)  # the web application wins the race
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", swapping_open)
    (finding,) = htaccess.check_tree(home, "/var/www/html")
    assert os.path.islink(folder)
    assert finding.file == "/var/www/html/private/.htaccess" and finding.directive == ""
    assert "out of the site's home" in finding.reason


def test_a_folder_swapped_for_a_link_mid_walk_is_not_entered(home, tmp_path, monkeypatch):
    """A folder replaced by a link out of the home just before it is listed: nothing behind the link is reported."""
    from tests.sites.support import swap_for_link_before_listing

    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "deeper" / ".htaccess").write_text("Options +Includes\n")
    sub = os.path.join(os.path.realpath(home.document_root), "sub")
    os.makedirs(os.path.join(sub, "deeper"))
    swap_for_link_before_listing(monkeypatch, sub, str(outside))
    assert htaccess.check_tree(home, "/var/www/html") == []
    assert os.path.islink(sub)


def test_a_link_out_of_the_home_is_never_opened(home, tmp_path, monkeypatch):
    """A .htaccess linking to a FIFO (or a device) outside the home is reported without root ever opening it."""
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    os.symlink(str(fifo), os.path.join(home.document_root, ".htaccess"))
    opened = []
    real_open = os.open

    def recording_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if not flags & os.O_PATH:
            opened.append(os.readlink(f"/proc/self/fd/{fd}"))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    (finding,) = htaccess.check_tree(home, "/var/www/html")
    assert "out of the site's home" in finding.reason
    assert str(fifo) not in opened


def test_a_link_out_tells_nothing_of_its_target(home, tmp_path):
    """A .htaccess linking to an existing root-only file and one linking to a missing file get the same finding."""
    secret = tmp_path / "root-only"
    secret.write_text("Options +Includes\n")
    os.chmod(secret, 0o600)
    findings = []
    for target in (secret, tmp_path / "missing", tmp_path / "missing-dir/x"):
        link = os.path.join(home.document_root, ".htaccess")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(str(target), link)
        findings.append([(f.line, f.directive, f.reason) for f in htaccess.check_tree(home, "/var/www/html")])
    assert findings[0] == findings[1] == findings[2]
    assert "out of the site's home" in findings[0][0][2]


def test_a_hard_linked_htaccess_is_not_read(home, tmp_path):
    """A .htaccess with another hard link (maybe outside the home) is reported, its lines never read."""
    other = tmp_path / "elsewhere"
    other.write_text("Options +Includes\n")
    os.link(str(other), os.path.join(home.document_root, ".htaccess"))
    (finding,) = htaccess.check_tree(home, "/var/www/html")
    assert "hard links" in finding.reason and finding.directive == ""
