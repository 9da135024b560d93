"""The DAV transport's own parts: Basic credentials, path segments, and the provider confined to a
home that writes atomically and keeps Fortification's ACLs (real files, real ACLs)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest
from wsgidav.dav_error import DAVError

from apiserver.dav.provider import TEMP_PREFIX
from apiserver.transport.dav import basic_credentials, escapes_home
from tests.dav_support import environ_for, home_provider


class FakeRequest:
    """What basic_credentials and escapes_home read of a twisted.web request."""

    def __init__(self, authorization=None, postpath=()):
        self.authorization = authorization
        self.postpath = list(postpath)

    def getHeader(self, name):
        return self.authorization if name == b"authorization" else None


def basic(text: str) -> bytes:
    return b"Basic " + base64.b64encode(text.encode("utf-8"))


@pytest.mark.parametrize("text, expected", [
    ("bob@example.com:pw", ("bob", "example.com", "pw")),
    ("bob@example.com:pa:ss", ("bob", "example.com", "pa:ss")),
    ("a@b@example.com:pw", ("a@b", "example.com", "pw")),
    ("admin:pw", ("admin", None, "pw")),
    ("jörg@example.com:pässwort", ("jörg", "example.com", "pässwort")),
])
def test_basic_credentials_split_user_domain_and_password(text, expected):
    """user@domain:password splits at the last @ and the first colon; no @ is the appliance administrator."""
    got = basic_credentials(FakeRequest(basic(text)))
    assert (got.username, got.site, got.password) == expected


@pytest.mark.parametrize("header", [
    None, b"Bearer abc", b"Basic", b"Basic !!!", basic("no-colon"), basic(":pw"), basic("@example.com:pw"),
    basic("bob@:pw"), b"Basic " + base64.b64encode(b"\xff\xfe:pw"), basic("bob@example.com:p\x00w"),
    basic("bob@example.com:" + "p" * 5000),
])
def test_unreadable_credentials_are_none(header):
    """Absent, other schemes, bad Base64 or UTF-8, empty parts, NUL or an over-long value: no credentials."""
    assert basic_credentials(FakeRequest(header)) is None


@pytest.mark.parametrize("segments, escapes", [
    ([b"var", b"www"], False), ([b"..", b"etc"], True), ([b"var", b"a/b"], True), ([b"a\\b"], True),
    ([b"a\x00"], True), ([b"...", b"x"], False), ([b""], False),
])
def test_escapes_home_checks_decoded_segments(segments, escapes):
    """A segment decoded to .., or holding /, backslash or NUL (from %2f, %5c, %00), is an escape."""
    assert escapes_home(FakeRequest(postpath=segments)) is escapes


# --- the provider on a real folder ----------------------------------------------------------

@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    (root / "var/www/html").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.txt").write_text("secret")
    return root


@pytest.fixture
def provider(home):
    return home_provider(home)


def test_paths_resolve_inside_the_home(provider, home):
    """Plain paths map under the home; .., encodings and NUL are 403."""
    expected = os.path.join(os.path.realpath(home), "var/www/html/x.txt")
    assert provider._loc_to_file_path("/var/www/html/x.txt") == expected
    for path in ("/../outside/secret.txt", "/var/../../outside", "/var/%2e%2e/x", "/a\\b", "/a\x00", "/var%2f"):
        with pytest.raises(DAVError) as refused:
            provider._loc_to_file_path(path)
        assert refused.value.value == 403


def test_links_are_never_served_but_folders_linked_inside_are(provider, home, tmp_path):
    """A link as the last part is 403 wherever it points; a folder reached through a link must stay inside."""
    os.symlink(tmp_path / "outside/secret.txt", home / "to-secret")
    os.symlink(home / "var/www/html", home / "html-link")
    os.symlink(tmp_path / "outside", home / "out-dir")
    os.symlink(home / "var/www/html/missing", home / "dangling")
    for path in ("/to-secret", "/html-link", "/dangling", "/out-dir/secret.txt"):
        with pytest.raises(DAVError) as refused:
            provider.get_resource_inst(path, environ_for(provider))
        assert refused.value.value == 403, path
    (home / "var/www/html/page.html").write_text("page")
    inside = provider.get_resource_inst("/html-link/page.html", environ_for(provider))
    assert inside.get_content().read() == b"page"


def test_listing_hides_links_and_uploads_in_progress(provider, home, tmp_path):
    """PROPFIND members leave out links (even to inside) and .dav-upload- temporary files."""
    os.symlink(tmp_path / "outside", home / "out")
    os.symlink(home / "var", home / "var-link")
    (home / f"{TEMP_PREFIX}0123").write_bytes(b"partial")
    (home / "kept.txt").write_text("k")
    folder = provider.get_resource_inst("/", environ_for(provider, "PROPFIND"))
    assert sorted(folder.get_member_names()) == ["kept.txt", "var"]
    with pytest.raises(DAVError):
        provider.get_resource_inst(f"/{TEMP_PREFIX}0123", environ_for(provider))


def put(provider, path, data: bytes, fail_after_write=False):
    """Do what WsgiDAV's do_PUT does with a resource: create if new, begin_write, write, close, end_write."""
    env = environ_for(provider, "PUT")
    res = provider.get_resource_inst(path, env)
    if res is None:
        parent = provider.get_resource_inst(os.path.dirname(path) or "/", env)
        res = parent.create_empty_resource(os.path.basename(path))
    writer = res.begin_write()
    writer.write(data)
    writer.close()
    res.end_write(with_errors=fail_after_write)
    return res


def test_put_is_atomic(provider, home):
    """The new content appears whole at end_write; an upload with errors leaves the old file and no temp file."""
    target = home / "var/www/html/index.html"
    put(provider, "/var/www/html/index.html", b"first")
    assert target.read_bytes() == b"first"
    put(provider, "/var/www/html/index.html", b"second, broken", fail_after_write=True)
    assert target.read_bytes() == b"first"
    put(provider, "/var/www/html/new.html", b"never", fail_after_write=True)
    assert not (home / "var/www/html/new.html").exists()
    assert not [n for n in os.listdir(home / "var/www/html") if n.startswith(TEMP_PREFIX)]


def test_put_keeps_mode_and_access_acl_of_the_replaced_file(provider, home):
    """Replacing a file keeps its mode and its access ACL (Fortification's grants to the web server)."""
    if shutil.which("setfacl") is None:
        pytest.skip("the acl package (setfacl, getfacl) is not installed")
    target = home / "var/www/html/wp-config.php"
    target.write_text("old")
    os.chmod(target, 0o640)
    subprocess.run(["setfacl", "-m", "u:www-data:rw", str(target)], check=True)
    before = subprocess.run(["getfacl", "--omit-header", str(target)], capture_output=True, text=True).stdout
    mode = os.stat(target).st_mode  # the ACL's mask shows in the group bits
    put(provider, "/var/www/html/wp-config.php", b"new")
    assert target.read_bytes() == b"new"
    after = subprocess.run(["getfacl", "--omit-header", str(target)], capture_output=True, text=True).stdout
    assert "user:www-data:rw-" in after and after == before
    assert os.stat(target).st_mode == mode


def test_new_files_inherit_the_folders_default_acl(provider, home):
    """A file PUT into a folder with a default ACL gets it, as a file created in place would."""
    if shutil.which("setfacl") is None:
        pytest.skip("the acl package (setfacl, getfacl) is not installed")
    uploads = home / "var/www/html/uploads"
    uploads.mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:www-data:rwx", str(uploads)], check=True)
    put(provider, "/var/www/html/uploads/image.png", b"png")
    acl = subprocess.run(["getfacl", "--omit-header", str(uploads / "image.png")],
                         capture_output=True, text=True).stdout
    assert "user:www-data:rwx" in acl and "mask::rw-" in acl


def test_backpressure_holds_the_thread_until_the_transport_resumes():
    """A paused connection holds the DAV thread; resume releases it; a client that reads nothing is given up."""
    import threading

    from apiserver.transport.dav import Backpressure

    gate = Backpressure(timeout=600)  # never reached: the test resumes it (a loaded machine may be slow)
    gate.pauseProducing()
    released = []
    worker = threading.Thread(target=lambda: released.append(gate.wait_writable()))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive() and released == []
    gate.resumeProducing()
    worker.join()  # bounded by the gate's own timeout
    assert released == [True]
    stalled = Backpressure(timeout=0.05)
    stalled.pauseProducing()
    assert stalled.wait_writable() is False and stalled.stopped
    gone = Backpressure()
    gone.stopProducing()
    assert gone.wait_writable() is False


def test_server_errors_never_show_the_exception():
    """A failure inside WsgiDAV is a plain 500 without the exception's text (host paths), which goes to the log."""
    from wsgidav.error_printer import ErrorPrinter

    from apiserver.dav.wsgi import SERVER_FAILED, HideServerErrors

    def failing(environ, start_response):
        raise FileNotFoundError(2, "No such file", "/srv/state/sites/example.com/secret")
        yield b""  # a generator, as WsgiDAV's handlers are

    stack = HideServerErrors(None, ErrorPrinter(None, failing, {}), {})
    seen = []
    body = b"".join(stack({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda s, h, e=None: seen.append((s, h))))
    assert seen[0][0].startswith("500") and body == SERVER_FAILED
    assert dict(seen[0][1])["Content-Length"] == str(len(SERVER_FAILED))


def test_dav_toggle_at_the_gatekeeper():
    """[dav] enabled=false: check_http refuses gate DAV only, admit refuses DAV with Client.Disabled; switched live."""
    from twisted.internet import task

    from apiserver.context import AuthRequest, Credentials, Gate
    from apiserver.errors import ApiDisabled
    from apiserver.middleware.toggle import DAV_DISABLED_MESSAGE
    from tests.middleware.support import GOOD_KEY, Node, result_of

    node = Node(task.Clock(), {"dav": {"enabled": "false"}})
    gatekeeper = node.gatekeeper()

    class Plain:
        def isSecure(self):
            return False

    request = Plain()
    gatekeeper.https_only.refusal = lambda r: None  # only the toggle is under test here
    assert gatekeeper.check_http(request, Gate.DAV).message == DAV_DISABLED_MESSAGE
    assert gatekeeper.check_http(request, Gate.SOAP) is None and gatekeeper.check_http(request, Gate.UI) is None
    admission = gatekeeper.admit(AuthRequest(Gate.DAV, "192.0.2.1", Credentials(api_key=GOOD_KEY)))
    with pytest.raises(ApiDisabled):
        result_of(admission)
    assert result_of(gatekeeper.admit(AuthRequest(Gate.SOAP, "192.0.2.1", Credentials(api_key=GOOD_KEY))))
    node.config.set("dav", "enabled", "true")
    assert gatekeeper.check_http(request, Gate.DAV) is None
    assert result_of(gatekeeper.admit(AuthRequest(Gate.DAV, "192.0.2.1", Credentials(api_key=GOOD_KEY))))
