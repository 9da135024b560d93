"""Apache password files: bcrypt cost 5 entries Apache's own htpasswd accepts, the formats it
writes verified, atomic 0640 writes owned by the site owner and the web server's group, and
every other line left byte for byte."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess

import pytest

from apiserver.errors import InvalidArgument, NotFound
from apiserver.sites import htpasswd
from apiserver.sites.home import SiteHomes, ensure_system_user
from tests.accounts.support import harness  # noqa: F401 - the fixture
from tests.conftest import run_in_threads
from tests.sites.support import sites_root  # noqa: F401 - a fixture
from tests.sites.fortify_support import site  # noqa: F401 - a fixture

HTPASSWD = shutil.which("htpasswd") or "/usr/bin/htpasswd"


@pytest.fixture(scope="session")
def owner_name():
    """As root the production owner (the unprivileged system user), else the user running the tests."""
    if os.geteuid() == 0:
        ensure_system_user("apiserver")
        return "apiserver"
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def home(tmp_path, owner_name):
    return SiteHomes(str(tmp_path / "sites"), owner_name, "www-data").create("example.com")


@pytest.fixture
def path(home):
    return os.path.join(home.document_root, ".htpasswd")


def _htpasswd(*args: str) -> subprocess.CompletedProcess:
    if not os.path.exists(HTPASSWD):
        pytest.fail("htpasswd (apache2-utils) is required; scripts/test.sh installs it")
    return subprocess.run([HTPASSWD, *args], capture_output=True, text=True, timeout=60)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_add_writes_bcrypt_cost_5_that_apache_htpasswd_accepts(home, path):
    """A new file gets a $2y$05$ entry; `htpasswd -vb` accepts the password and refuses another."""
    assert htpasswd.add(path, "alice", "Sesame-ouvre-toi", home, "www-data") is True
    assert _read(path).startswith(b"alice:$2y$05$") and _read(path).endswith(b"\n")
    assert _htpasswd("-vb", path, "alice", "Sesame-ouvre-toi").returncode == 0
    assert _htpasswd("-vb", path, "alice", "sesame-ouvre-toi").returncode != 0
    assert htpasswd.verify(path, "alice", "Sesame-ouvre-toi", home) is True


def test_file_is_0640_site_owner_and_web_group(home, path):
    """Mode 0640; as root owned by the site's owner with the web server's group."""
    htpasswd.add(path, "alice", "pw-one", home, "www-data")
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o640
    if os.geteuid() == 0:
        assert info.st_uid == home.owner.uid
        assert info.st_gid == pwd.getpwnam("www-data").pw_gid
    else:
        assert info.st_uid == os.geteuid()
    with open(path, "ab"):
        pass
    os.chmod(path, 0o666)
    htpasswd.add(path, "bob", "pw-two", home, "www-data")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not [n for n in os.listdir(home.document_root) if n.endswith(".tmp")]


@pytest.mark.parametrize("flag", ["-B", "-m", "-s", "-d"])
def test_we_verify_what_apache_htpasswd_writes(home, flag):
    """bcrypt (-B), $apr1$ MD5 (-m), {SHA} (-s) and crypt (-d) entries from htpasswd itself."""
    path = os.path.join(home.document_root, "pw")
    assert _htpasswd("-cb", flag, path, "carol", "Tr0ub4dor").returncode == 0
    prefix = {"-B": b"carol:$2y$", "-m": b"carol:$apr1$", "-s": b"carol:{SHA}", "-d": b"carol:"}[flag]
    assert _read(path).startswith(prefix)
    assert htpasswd.verify(path, "carol", "Tr0ub4dor", home) is True
    assert htpasswd.verify(path, "carol", "Xr0ub4dor", home) is False  # crypt (-d) reads only 8 characters
    assert htpasswd.users(path, home) == ["carol"]


def test_apr1_matches_htpasswd_for_many_lengths(tmp_path):
    """Our MD5-crypt gives htpasswd's exact string for passwords of 0 to 40 bytes and any salt."""
    path = str(tmp_path / "pw")
    for length in (0, 1, 7, 15, 16, 17, 31, 33, 40):
        password = "pässwörd-0123456789abcdefghijklmnopqrstuvwxyz"[:length]
        assert _htpasswd("-cbm", path, "u", password).returncode == 0
        stored = _read(path).decode().strip().split(":", 1)[1]
        salt = stored.split("$")[2]
        assert htpasswd.apr1_md5(password.encode(), salt.encode()) == stored


def test_long_passwords(home, path):
    """Over 72 bytes add refuses (bcrypt would ignore the rest); htpasswd's own long entries verify."""
    with pytest.raises(InvalidArgument, match="72"):
        htpasswd.add(path, "alice", "x" * 73, home)
    other = os.path.join(home.document_root, "pw")
    assert _htpasswd("-cbB", other, "long", "y" * 80).returncode == 0
    assert htpasswd.verify(other, "long", "y" * 80, home) is True


def test_plaintext_and_broken_entries_never_match(home):
    """A plaintext line, a truncated bcrypt and an empty hash are not accepted for their 'password'."""
    path = os.path.join(home.document_root, "pw")
    with open(path, "wb") as fh:
        fh.write(b"eve:secret\nmal:$2y$05$short\nnil:\nodd:$apr1$\nbad:*0\n")
    for user, password in (("eve", "secret"), ("mal", "x"), ("nil", ""), ("odd", ""), ("bad", "*0")):
        assert htpasswd.verify(path, user, password, home) is False
    assert htpasswd.users(path, home) == ["eve", "mal", "nil", "odd", "bad"]


def test_other_lines_stay_byte_for_byte(home, path):
    """Comments, blank lines, CRLF lines, foreign formats and a last line without newline survive;
    an existing user's line is replaced where it is, keeping its line ending."""
    before = (b"# managed by hand\r\n\r\nalice:$apr1$AJ/bhMrz$IgY5iJAILkA90xFPtPgam/\r\n"
              b"  carol:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=  \nnot an entry\nbob:Z.Uo5u0fIAQQ2\r\n"
              b"bob:stale-duplicate\ndave:$2y$05$R3QlLCQ6PCUNxSI0tl8Xhu8iXlydASmWR8bM2JfbPHcKKS9Z7m422")
    with open(path, "wb") as fh:
        fh.write(before)
    htpasswd.add(path, "bob", "new-secret", home)
    after = _read(path).split(b"\n")
    old = before.split(b"\n")
    assert after[:5] == old[:5]
    assert after[5].startswith(b"bob:$2y$05$") and after[5].endswith(b"\r")
    assert after[6:] == old[7:]  # the dead duplicate is gone, dave untouched and unterminated
    assert htpasswd.verify(path, "bob", "new-secret", home) and htpasswd.verify(path, "carol", "secret", home)
    htpasswd.add(path, "erin", "erin-pw", home)
    assert _read(path).endswith(b"KKS9Z7m422\nerin:" + _read(path).split(b"erin:")[1])
    assert htpasswd.users(path, home) == ["alice", "carol", "bob", "dave", "erin"]


def test_delete(home, path):
    """Delete removes the user's lines and nothing else; an unknown user is False and no rewrite."""
    htpasswd.add(path, "alice", "a-pw", home)
    htpasswd.add(path, "bob", "b-pw", home)
    with open(path, "ab") as fh:
        fh.write(b"# trailer\n")
    assert htpasswd.delete(path, "alice", home) is True
    assert htpasswd.users(path, home) == ["bob"] and _read(path).endswith(b"\n# trailer\n")
    inode = os.stat(path).st_ino
    assert htpasswd.delete(path, "alice", home) is False
    assert os.stat(path).st_ino == inode
    assert _htpasswd("-vb", path, "bob", "b-pw").returncode == 0


@pytest.mark.parametrize("user", ["", "a:b", "a\nb", "a\rb", "a\x00b", " lead", "trail ", "#hash", "x" * 256, 7])
def test_bad_user_names_are_invalid(home, path, user):
    """Empty names, ':', newlines, control characters, edge spaces, '#' and overlong names are refused."""
    htpasswd.add(path, "ok", "pw", home)
    for call in (lambda: htpasswd.add(path, user, "pw", home), lambda: htpasswd.verify(path, user, "pw", home),
                 lambda: htpasswd.delete(path, user, home)):
        with pytest.raises(InvalidArgument):
            call()
    assert htpasswd.users(path, home) == ["ok"]


def test_missing_files_and_odd_paths(home, path):
    """Missing files are NotFound except for add (which creates); folders, FIFOs and links are refused."""
    for call in (lambda: htpasswd.verify(path, "a", "pw", home), lambda: htpasswd.users(path, home),
                 lambda: htpasswd.delete(path, "a", home)):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(NotFound):
        htpasswd.add(os.path.join(home.document_root, "no", "such", ".htpasswd"), "a", "pw", home)
    with pytest.raises(InvalidArgument):
        htpasswd.add(home.document_root, "a", "pw", home)
    fifo = os.path.join(home.document_root, "fifo")
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument):
        htpasswd.users(fifo, home)
    with pytest.raises(InvalidArgument):
        htpasswd.add(fifo, "a", "pw", home)
    htpasswd.add(path, "a", "pw", home)
    link = os.path.join(home.document_root, "link")
    os.symlink(path, link)
    with pytest.raises(InvalidArgument):
        htpasswd.verify(link, "a", "pw", home)


def test_a_failed_write_leaves_the_old_file(home, path, monkeypatch):
    """When the write fails before the rename the file is as it was and no temporary file is left."""
    htpasswd.add(path, "alice", "a-pw", home)
    before = _read(path)

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(htpasswd.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        htpasswd.add(path, "bob", "b-pw", home)
    assert _read(path) == before
    assert sorted(os.listdir(home.document_root)) == [".htpasswd"]


def test_concurrent_adds_keep_every_user(home, path):
    """Writers lock the folder: eight threads adding eight users leave all eight."""
    run_in_threads(htpasswd.add, [(path, f"user{i}", f"pw-{i}", home) for i in range(8)])
    assert sorted(htpasswd.users(path, home)) == [f"user{i}" for i in range(8)]
    assert htpasswd.verify(path, "user5", "pw-5", home)


def test_new_passwords_are_checked(home, path):
    """An empty password, NUL or a non-string is InvalidArgument before the file is touched."""
    for password in ("", "a\x00b", None, 5):
        with pytest.raises(InvalidArgument):
            htpasswd.add(path, "alice", password, home)
    assert not os.path.exists(path)


def test_a_folder_swapped_for_a_link_after_resolving_is_not_read(home, tmp_path):
    """A folder of the resolved path replaced by a link out of the home is refused: root never reads
    (nor checks passwords against) a file elsewhere, such as another site's or /etc/shadow."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".htpasswd").write_text("root:" + htpasswd.hash_password("hunter2") + "\n")
    folder = os.path.join(home.document_root, "private")
    os.mkdir(folder)
    resolved = home.resolve("/var/www/html/private/.htpasswd")  # what the module resolved...
    os.rmdir(folder)
    os.symlink(str(outside), folder)  # ...before the web application swapped the folder
    for call in (lambda: htpasswd.users(resolved, home), lambda: htpasswd.verify(resolved, "root", "hunter2", home),
                 lambda: htpasswd.delete(resolved, "root", home), lambda: htpasswd.add(resolved, "x", "pw", home)):
        with pytest.raises(InvalidArgument, match="out of the site's home"):
            call()
    assert (outside / ".htpasswd").read_text().startswith("root:$2y$05$")


def test_the_module_hashes_on_the_hashing_pool(site, monkeypatch):
    """security_htpasswd_add and security_htpasswd_verify hash on the hashing pool, not on a database thread."""
    import threading

    harness, site, _home = site
    hashed_on = []
    for name in ("hash_password", "check_password"):
        def recording(*args, _real=getattr(htpasswd, name), _name=name):
            hashed_on.append((_name, threading.current_thread().name))
            return _real(*args)
        monkeypatch.setattr(htpasswd, name, recording)
    assert harness.call(site, "security_htpasswd_add", "/var/www/.htpasswd", "alice", "Sesame-1") is True
    assert harness.call(site, "security_htpasswd_verify", "/var/www/.htpasswd", "alice", "Sesame-1") is True
    assert [name for name, _ in hashed_on] == ["hash_password", "check_password"]
    assert all("apiserver-hashing" in thread for _, thread in hashed_on), hashed_on
