"""The `apiserver` command: init is idempotent, serve refuses missing or unreachable state clearly."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def run(*argv):
    return subprocess.run([sys.executable, "-m", "apiserver.cli.main", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def config(tmp_path, extra=""):
    path = tmp_path / "config.ini"
    path.write_text(f"[core]\nstate_dir = state\n[frontend]\nhttp_port = 0\nhttps_port = 0\n"
                    f"[auth]\npbkdf2_iterations = 20000\n{extra}")
    return str(path)


def test_init_prints_key_last_and_second_run_changes_nothing(tmp_path):
    """init prints the administrator key as its last line; a second init says the state exists."""
    path = config(tmp_path)
    first = run("--config", path, "init")
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip().splitlines()[-1]
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"
    second = run("--config", path, "init")
    assert second.returncode == 0
    assert "state exists" in second.stdout and key not in second.stdout


def test_serve_without_init_says_what_to_run(tmp_path):
    """serve before init exits 1 naming the init command, without a traceback."""
    out = run("--config", config(tmp_path), "serve")
    assert out.returncode == 1
    assert "init" in out.stderr and "Traceback" not in out.stderr


def test_unreachable_database_hides_password(tmp_path):
    """An unreachable [db] url is reported without its password and without a traceback."""
    path = config(tmp_path, "[db]\nurl = postgresql+psycopg://someone:hunter2@127.0.0.1:1/x\n")
    out = run("--config", path, "init")
    assert out.returncode == 1
    assert "hunter2" not in out.stderr + out.stdout and "Traceback" not in out.stderr


def test_wsdl_command_prints_both_styles(tmp_path):
    """`apiserver wsdl` prints the RPC WSDL by default and the document one on request."""
    path = config(tmp_path)
    rpc = run("--config", path, "wsdl")
    document = run("--config", path, "wsdl", "--style", "document")
    assert rpc.returncode == 0 and 'style="rpc"' in rpc.stdout
    assert document.returncode == 0 and 'style="document"' in document.stdout


def test_version_prints_the_package_version():
    """`apiserver --version` prints "apiserver X.Y.Z", the installed version, and exits 0."""
    from apiserver import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"apiserver {__version__}", out


def test_options_are_taken_before_or_after_the_command(tmp_path):
    """`apiserver init --config FILE` works as `apiserver --config FILE init` does."""
    path = config(tmp_path)
    out = run("init", "--config", path)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()[-1]) == 64 and os.path.isdir(tmp_path / "state")


def test_serve_help_says_what_serve_does():
    """`apiserver serve --help` describes serving, the listeners, SIGHUP and how to stop it."""
    out = run("serve", "--help")
    assert out.returncode == 0
    for words in ("Run the API server in the foreground", "[frontend]", "SIGHUP", "SIGINT", "--config FILE"):
        assert words in out.stdout, words


def test_set_writes_a_validated_key_and_refuses_a_bad_one(tmp_path):
    """`apiserver set` writes [frontend] http_port into the config file; a bad value or key changes nothing."""
    path = config(tmp_path)
    out = run("set", "--config", path, "frontend", "http_port", "18123")
    assert out.returncode == 0 and "[frontend] http_port = 18123" in out.stdout, out.stderr
    text = (tmp_path / "config.ini").read_text()
    assert "http_port = 18123" in text and "http_port = 0" not in text
    for argv, reason in ((("frontend", "http_port", "many"), "[frontend] http_port: expected a whole number"),
                         (("bogus", "key", "1"), "[bogus] key: no such key")):
        out = run("set", "--config", path, *argv)
        assert out.returncode == 2 and reason in out.stderr and path in out.stderr, out.stderr
    assert (tmp_path / "config.ini").read_text() == text


def test_init_lines_are_json_under_log_format_json(tmp_path):
    """With [core] log_format=json every line init prints is a JSON object; the key is a field of the last."""
    import json

    path = config(tmp_path)
    text = (tmp_path / "config.ini").read_text().replace("[core]\n", "[core]\nlog_format = json\n")
    (tmp_path / "config.ini").write_text(text)
    out = run("--config", path, "init")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) >= 3 and all({"time", "level", "message"} <= set(line) for line in lines)
    assert len(lines[-1]["admin_api_key"]) == 64
    again = run("--config", path, "init")
    assert "state exists" in json.loads(again.stdout.splitlines()[-1])["message"]


def test_a_busy_port_names_the_key_and_the_config_file(tmp_path):
    """serve on a port another program holds ends naming [frontend] http_port and the config file."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config(tmp_path)
        (tmp_path / "config.ini").write_text((tmp_path / "config.ini").read_text().replace(
            "http_port = 0", f"http_port = {port}"))
        assert run("--config", path, "init").returncode == 0
        out = run("--config", path, "serve")
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert f"change [frontend] http_port in {path}" in out.stderr, out.stderr
