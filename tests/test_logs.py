"""Logs: one JSON object per line with the rendered message, credentials masked in URLs, the
access log naming the client the middleware decided and the proxy, cp.debug switching levels."""

import json
import xmlrpc.client

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from apiserver.logs import event_as_json, mask_url
from tests.ops_support import get, init, json_lines, listening, make_config, read, serve_cmd, spawn, wait_for

KEY = "0123456789abcdef" * 4


def test_mask_url_hides_keys_however_sent():
    """?key=, ?api_key=, authkey%3D, a key in the path, a dashed key: all masked; the rest kept."""
    dashed = "-".join(KEY[i:i + 8] for i in range(0, 64, 8))
    for url in (f"/soap?key={KEY}", "/soap?api_key=short", f"/soap?authkey%3D{KEY}", f"/soap/{KEY}",
                f"/soap/authkey={KEY}/x", f"/xmlrpc?authkey={dashed}", "/soap?x=1&API-KEY=abc&style=rpc"):
        masked = mask_url(url)
        assert KEY not in masked and "short" not in masked and dashed not in masked and "=abc" not in masked, masked
        assert "***" in masked
    assert mask_url("/apnscp.wsdl?style=document") == "/apnscp.wsdl?style=document"


def test_event_as_json_is_one_object_with_rendered_message():
    """An event becomes one line: ISO UTC time, level, namespace, rendered message, safe fields only."""
    line = event_as_json({"log_time": 0.25, "log_level": LogLevel.warn, "log_namespace": "x.y",
                          "log_format": "hello {who} from {url}", "who": "you", "url": f"/soap?key={KEY}",
                          "password": "hunter2", "count": 3, "obj": object()})
    assert line.endswith("\n") and line.count("\n") == 1 and "\x1e" not in line
    event = json.loads(line)
    assert event["time"] == "1970-01-01T00:00:00.250Z"
    assert (event["level"], event["namespace"]) == ("warn", "x.y")
    assert event["message"] == "hello you from /soap?key=***"
    assert event["who"] == "you" and event["count"] == 3
    assert "password" not in event and "obj" not in event and "hunter2" not in line and KEY not in line


def test_event_as_json_carries_a_failure_traceback():
    """A logged failure keeps its traceback in the object, still one line."""
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    line = event_as_json({"log_time": 1, "log_level": LogLevel.critical, "log_namespace": "n",
                          "log_format": "it failed", "log_failure": failure})
    assert line.count("\n") == 1 and "ZeroDivisionError" in json.loads(line)["traceback"]


class _As(xmlrpc.client.Transport):
    def __init__(self, address):
        super().__init__()
        self.address = address

    def send_headers(self, connection, headers):
        super().send_headers(connection, headers + [("X-Forwarded-For", self.address)])


def test_access_log_json_masks_keys_names_client_and_proxy_and_cp_debug_switches(tmp_path):
    """Against serve with log_format=json: the access log names the forwarded client and the
    proxy beside it, never a key; scope cp.debug turns debug lines on at once."""
    path, port = make_config(tmp_path, {"core": {"log_format": "json", "access_log": "true"},
                                        "anvil": {"min_attempts": "1", "base_delay": "1"}})
    admin_key = init(path)
    log_path = str(tmp_path / "server.out")
    proc = spawn(serve_cmd(path), str(tmp_path), log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(listening(port), proc, log_path, what="listening")
        for target in (f"/apnscp.wsdl?key={KEY}", f"/apnscp.wsdl?api_key={admin_key}", f"/soap/authkey%3D{KEY}",
                       f"/apnscp.wsdl?authkey={admin_key}"):
            get(url + target, {"X-Forwarded-For": "192.0.2.7"})

        def fail_twice(address):
            bad = xmlrpc.client.ServerProxy(f"{url}/xmlrpc?authkey={'0' * 64}", transport=_As(address))
            for _ in range(2):
                try:
                    bad.common.whoami()
                except xmlrpc.client.Fault:
                    pass

        fail_twice("192.0.2.20")  # the second is delayed: a debug line, not shown yet
        admin = xmlrpc.client.ServerProxy(f"{url}/xmlrpc?authkey={admin_key}", allow_none=True)
        assert admin.scope.set("cp.debug", True) is True
        fail_twice("192.0.2.21")
        wait_for(lambda: "192.0.2.21" in read(log_path), proc, log_path, what="the debug line")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = read(log_path)
    assert KEY not in text and admin_key not in text
    events = json_lines(text)
    access = [e for e in events if e["namespace"] == "apiserver.access"]
    forwarded = [e for e in access if e.get("client") == "192.0.2.7"]
    assert len(forwarded) == 4, access
    for event in forwarded:
        assert event["proxy"] == "127.0.0.1" and event["message"].startswith("192.0.2.7 via 127.0.0.1 GET ")
    debug = [e for e in events if e["level"] == "debug"]
    assert debug and all("192.0.2.20" not in e["message"] for e in debug)
    assert any("anvil: delaying 192.0.2.21" in e["message"] for e in debug), debug


def test_text_log_and_json_traceback_mask_keys(tmp_path):
    """log_format=text masks keys in logged URLs as JSON does, and a JSON traceback is masked too."""
    import io

    from twisted.logger import Logger

    from apiserver.config import load_config
    from apiserver.logs import make_observer

    path = tmp_path / "config.ini"
    path.write_text(f"[core]\nstate_dir = {tmp_path}\nlog_format = text\n")
    stream = io.StringIO()
    observer = make_observer(load_config(str(path)), stream)
    try:
        raise ValueError(f"bad request /soap?key={KEY}")
    except ValueError:
        failure = Failure()
    log = Logger(namespace="t", observer=observer)
    log.error("answering {path} failed", path=f"/soap/{KEY}")
    log.failure("it failed", failure)
    text = stream.getvalue()
    assert "answering /soap/*** failed" in text and "ValueError" in text and KEY not in text, text
    line = event_as_json({"log_time": 1, "log_level": LogLevel.critical, "log_namespace": "n",
                          "log_format": "it failed", "log_failure": failure})
    assert "ValueError" in line and KEY not in line


def test_mask_url_hides_the_user_and_password_of_a_url():
    """An absolute-form or scheme-relative request target loses its user:password; an @ in a path stays."""
    assert mask_url("GET http://bob:s3cret@example.com/dav/x HTTP/1.1") == "GET http://***@example.com/dav/x HTTP/1.1"
    assert "s3cret" not in mask_url("//bob:s3cret@host/dav/") and mask_url("/dav/a@b.txt") == "/dav/a@b.txt"


def test_log_entries_are_bounded():
    """A huge message or traceback is cut to MAX_ENTRY characters, saying how much was left out."""
    from apiserver.logs import MAX_ENTRY, bounded

    cut = bounded("x" * (MAX_ENTRY * 10) + "\n")
    assert len(cut) < MAX_ENTRY + 100 and cut.endswith("not logged]\n") and str(MAX_ENTRY * 9 + 1) in cut
    line = event_as_json({"log_time": 1, "log_level": LogLevel.error, "log_namespace": "x",
                          "log_format": "{v}", "v": "y" * 100_000})
    assert len(line) < MAX_ENTRY + 2 * 2000 + 500


def test_identical_errors_are_counted_not_repeated():
    """The same error 50 times within the window is written once; the count follows after the window."""
    from apiserver.logs import RepeatedErrors

    written = []
    repeats = RepeatedErrors(written.append, window=60)

    def error(text, when, level=LogLevel.error):
        repeats({"log_time": when, "log_level": level, "log_namespace": "apiserver.dav", "log_format": text})

    for i in range(50):
        error("parse failed", 1000 + i)
    error("another failure", 1001)
    repeats({"log_time": 1002, "log_level": LogLevel.info, "log_namespace": "x", "log_format": "info line"})
    assert [e["log_format"] for e in written] == ["parse failed", "another failure", "info line"]
    error("parse failed", 1070)
    assert written[3]["repeats"] == 49 and "repeated" in written[3]["log_format"]
    assert written[4]["log_format"] == "parse failed"
