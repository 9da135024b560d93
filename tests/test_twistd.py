"""`twistd -n apiserver` runs the same server as `apiserver serve`."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from tests.conftest import BASE_CONFIG, ROOT, ChildBudget, free_port, merge, write_config


def test_twistd_plugin_serves_the_wsdl(tmp_path):
    """The twistd plugin starts the API on the configured port and stops on SIGTERM."""
    port = free_port()
    config = merge(BASE_CONFIG, {"frontend": {"http_port": str(port), "https_port": "0"},
                                 "core": {"state_dir": str(tmp_path / "state")}})
    path = str(tmp_path / "config.ini")
    write_config(path, config)
    subprocess.run([sys.executable, "-m", "apiserver.cli.main", "--config", path, "init"], check=True,
                   capture_output=True, cwd=ROOT, timeout=120)
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"
    proc = subprocess.Popen([twistd, "-n", "--pidfile=", "apiserver", "--config", path], cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        budget, body = ChildBudget(proc), None  # 30 s of the child's CPU time, however loaded the machine
        while budget.spent() is None and body is None:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/apnscp.wsdl", timeout=2).read()
            except OSError:
                time.sleep(0.1)  # waiting for the child to listen
        assert body is not None and b"urn:net.apnscp.soap" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    # twistd re-raises the stopping signal after a clean shutdown, as daemons should.
    assert proc.returncode in (0, -signal.SIGTERM)
