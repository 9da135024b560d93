"""conf/apiserver.service: hardened, and accepted by `systemd-analyze verify`."""

import os
import shutil
import subprocess
import sys

import pytest

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
    assert "ExecStart=/usr/local/bin/apiserver --config /etc/apiserver/config.ini serve" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text and "StateDirectory=apiserver" in text
    for line in HARDENING:
        assert f"\n{line}" in text, line


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """`systemd-analyze verify` reports nothing for the unit (ExecStart pointed at this install)."""
    analyze = _analyze()
    apiserver = shutil.which("apiserver", path=os.path.dirname(sys.executable))
    apiserver = apiserver or shutil.which("apiserver")
    if apiserver is None:
        pytest.fail("the apiserver console script is not installed")
    with open(UNIT, encoding="utf-8") as fh:
        text = fh.read().replace("/usr/local/bin/apiserver", apiserver)
    unit = tmp_path / "apiserver.service"
    unit.write_text(text)
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("NoNewPrivileges=", "NoNewPrivilege="))
    out = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=120)
    assert "NoNewPrivilege" in out.stderr  # the check can fail: a misspelt key is reported
