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
