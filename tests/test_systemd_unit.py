"""conf/apiserver.service: hardened, and accepted by `systemd-analyze verify`."""

import json
import os
import shutil
import subprocess
import sys


from tests.conftest import ROOT, require_debian_tool

UNIT = os.path.join(ROOT, "conf", "apiserver.service")
HARDENING = ("NoNewPrivileges=true", "ProtectSystem=strict", "PrivateTmp=true", "PrivateDevices=true",
             "ProtectKernelTunables=true", "ProtectKernelModules=true", "ProtectControlGroups=true",
             "RestrictSUIDSGID=true", "RestrictAddressFamilies=", "SystemCallFilter=", "CapabilityBoundingSet=")


def _analyze() -> str:
    if shutil.which("systemd-analyze") is None:
        require_debian_tool("systemd-analyze", ["systemd"], check=["systemd-analyze", "--version"], expect="systemd")
    return shutil.which("systemd-analyze")


def test_unit_is_hardened_and_runs_the_one_start_path():
    """The unit starts `apiserver serve` with the system config, reloads with SIGHUP, and hardens."""
    with open(UNIT, encoding="utf-8") as fh:
        text = fh.read()
    assert "ExecStart=/usr/bin/env apiserver --config /etc/apiserver/config.ini serve" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text and "StateDirectory=apiserver" in text
    for line in HARDENING:
        assert f"\n{line}" in text, line


def test_systemd_analyze_verify_accepts_the_unit_as_shipped(tmp_path):
    """`systemd-analyze verify` reports nothing for the shipped unit, before anything is installed."""
    analyze = _analyze()
    with open(UNIT, encoding="utf-8") as fh:
        text = fh.read()
    unit = tmp_path / "apiserver.service"
    unit.write_text(text)
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("NoNewPrivileges=", "NoNewPrivilege="))
    out = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=120)
    assert "NoNewPrivilege" in out.stderr  # the check can fail: a misspelt key is reported


def test_documentation_names_files_that_pip_installs():
    """Each file:// Documentation= of the unit is one of setup.py's data_files under /usr/local."""
    with open(UNIT, encoding="utf-8") as fh:
        line = next(line for line in fh if line.startswith("Documentation="))
    out = subprocess.run([sys.executable, "-c", "import setuptools, runpy, json, sys\n"
                          "setuptools.setup = lambda **kw: print(json.dumps(kw.get('data_files', [])))\n"
                          "runpy.run_path('setup.py')"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    installed = {f"/usr/local/{folder}/{os.path.basename(name)}"
                 for folder, names in json.loads(out.stdout) for name in names}
    documents = line.split("=", 1)[1].split()
    assert documents
    for document in documents:
        assert document.startswith("file://") and document[len("file://"):] in installed, (document, installed)
        folder_file = document[len("file:///usr/local/"):]
        assert os.path.exists(os.path.join(ROOT, folder_file.split("share/doc/apiserver/", 1)[1])), document
