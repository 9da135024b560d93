"""The README's set-up and first calls, as a newcomer runs them: a fresh clone, its set-up command
with ``--port``, then every example block (PHP, zeep, XML-RPC, Perl, curl, cpcmd) twice against
that server; the clone's tracked files are unchanged afterwards."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import sysconfig
import time
import xmlrpc.client

import pytest

from apiserver.cli.main import LOCAL_HEADER
from tests.conftest import ROOT, free_port

#: How each fenced language of "First calls" runs: the interpreter and the file suffix.
RUNNERS = {"php": (["php"], ".php"), "python": ([sys.executable], ".py"), "perl": (["perl"], ".pl"),
           "sh": (["bash", "-e"], ".sh")}


def readme_section(title: str) -> str:
    """The text of README.md's ``## title`` section, up to the next ``## `` heading."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def code_blocks(section: str) -> list:
    """``(language, code)`` of every fenced block of ``section``, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", section, flags=re.M | re.S)


def test_first_calls_has_a_block_for_every_client():
    """"First calls" shows PHP, Python (zeep and XML-RPC), Perl, curl and cpcmd, each in a language the test runs."""
    blocks = code_blocks(readme_section("First calls"))
    assert [language for language, _ in blocks] == ["php", "python", "python", "perl", "sh", "sh"]
    codes = "\n".join(code for _, code in blocks)
    for marker in ("SoapClient", "import zeep", "xmlrpc.client", "SOAP::Lite", "curl ", "cpcmd admin:add-site"):
        assert marker in codes, marker


@pytest.fixture(scope="module")
def served_clone(tmp_path_factory, php, perl_soap_lite):
    """A git clone of this repository served by the README's set-up command with --port (and
    --https-port, so it never meets another server); yields (clone, port, admin key, link dir)."""
    base = tmp_path_factory.mktemp("readme")
    clone, links = base / "clone", base / "bin"
    subprocess.run(["git", "clone", "--quiet", ROOT, str(clone)], check=True, timeout=300)
    # The clone's .venv sees this test run's installed dependencies, so serve.sh installs only apiserver.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")], check=True, timeout=300)
    subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "ensurepip", "--default-pip"], check=True,
                   capture_output=True, timeout=300)
    purelib = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    deps = base / "dependencies"  # this run's packages but apiserver, its example plugin and pip's own
    deps.mkdir()
    installed = sysconfig.get_paths()["purelib"]
    for name in os.listdir(installed):
        if not re.match(r"(apiserver|__editable__|pip\b|pip-|setuptools|_distutils|distutils-)", name):
            os.symlink(os.path.join(installed, name), deps / name)
    with open(os.path.join(purelib, "test-run-dependencies.pth"), "w", encoding="utf-8") as fh:
        fh.write(f"{deps}\n")

    # The only setting a newcomer would not make: host groups and users of a prefix of this run's own,
    # so an admin1 another server on this host made never turns admin_add_site into Client.Exists.
    (clone / "state").mkdir(mode=0o700)
    (clone / "state" / "config.ini").write_text(
        f"{LOCAL_HEADER}\n[web]\naccount_prefix = rd{secrets.token_hex(3)}\n", encoding="utf-8")
    os.chmod(clone / "state" / "config.ini", 0o600)

    setup = code_blocks(readme_section("Set up on a fresh machine"))[0][1].strip()
    assert setup == "bash scripts/serve.sh", setup
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APISERVER_")}
    env.update(APISERVER_LINK_DIR=str(links))
    log_path, key = base / "serve.out", None
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", f"{setup} --port {port} --https-port {free_port()}"], cwd=str(clone),
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            text = log_path.read_text()
            if key is None and "keep it safe):\n" in text:
                key = text.split("keep it safe):\n", 1)[1].split("\n", 1)[0].strip()
            if key and "cpcmd socket at" in text:
                break
            time.sleep(0.2)  # waiting for pip and the first start (readiness polling)
        assert key and len(key) == 64, log_path.read_text()
        yield clone, port, key, links, log_path
    finally:
        _delete_sites(port, key)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # the README says Ctrl-C stops it
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _delete_sites(port: int, key) -> None:
    """Remove every site left behind by a block that failed half-way (system accounts included)."""
    if not key:
        return
    api = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/xmlrpc?authkey={key}", allow_none=True)
    try:
        for site in api.admin.list_sites():
            api.admin.delete_site(site)
    except (OSError, xmlrpc.client.Error):
        pass


def test_setup_prints_progress_and_puts_cpcmd_on_path(served_clone):
    """serve.sh says each step on one line, shows no pip or setuptools warning box, writes --port to the
    untracked state/config.ini and, as root, links cpcmd where `command -v` finds it."""
    clone, port, _key, links, log_path = served_clone
    text = log_path.read_text()
    steps = [line for line in text.splitlines() if line.startswith("==> ")]
    assert any("installing apiserver" in line for line in steps) and any("installed" in line for line in steps)
    assert "!!" not in text and "********" not in text and "BuildBackendWarning" not in text
    assert f"http_port = {port}" in (clone / "state" / "config.ini").read_text()
    if os.geteuid() == 0:
        found = subprocess.run(["bash", "-c", "command -v cpcmd"], capture_output=True, text=True,
                               env=dict(os.environ, PATH=f"{links}:/usr/bin:/bin"), timeout=30)
        assert found.stdout.strip() == str(links / "cpcmd")
        assert os.path.realpath(links / "cpcmd") == str(clone / ".venv" / "bin" / "cpcmd")
    else:
        assert "cpcmd is not on PATH; run: export PATH=" in text


@pytest.mark.parametrize("index", range(6))
def test_every_first_call_block_runs_twice(served_clone, tmp_path, index):
    """Each "First calls" block, with the key and port filled in, succeeds twice in a row: no lock-out,
    no name taken by the run before."""
    clone, port, key, links, _log = served_clone
    language, code = code_blocks(readme_section("First calls"))[index]
    command, suffix = RUNNERS[language]
    script = tmp_path / f"example{suffix}"
    script.write_text(re.sub(r"\bKEY\b", key, code).replace("2082", str(port)))
    env = dict(os.environ, PATH=f"{links}:{clone / '.venv' / 'bin'}:{os.environ['PATH']}")
    env = {k: v for k, v in env.items() if not k.startswith("APISERVER_")}
    for attempt in (1, 2):
        out = subprocess.run(command + [str(script)], capture_output=True, text=True, cwd=str(tmp_path), env=env,
                             timeout=300)
        assert out.returncode == 0, (attempt, out.stdout, out.stderr)
        assert "Client.Denied" not in out.stdout + out.stderr and "Traceback" not in out.stderr, (attempt, out)


def test_scope_set_writes_the_local_settings(served_clone):
    """`cpcmd scope:set cp.config` on the served clone edits its state/config.ini, never conf/config.ini."""
    clone, _port, _key, links, _log = served_clone
    env = {k: v for k, v in os.environ.items() if not k.startswith("APISERVER_")}
    env["PATH"] = f"{links}:{clone / '.venv' / 'bin'}:{env['PATH']}"
    out = subprocess.run(["cpcmd", "scope:set", "cp.config", "core", "db_threads", "3"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0 and "takes effect after a restart" in out.stdout, out
    assert "\ndb_threads = 3\n" in (clone / "state" / "config.ini").read_text()


def test_the_clones_tracked_tree_is_unchanged(served_clone):
    """After set-up, settings and every example, `git status --porcelain` of the clone is empty."""
    clone = served_clone[0]
    out = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=str(clone), timeout=60)
    assert out.returncode == 0 and out.stdout == "", out.stdout
