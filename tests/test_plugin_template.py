"""apiserver plugin-template: the package it writes installs into a fresh virtualenv with apiserver,
passes its own tests, and its function is served over SOAP (both WSDLs), XML-RPC and cpcmd -l.

One virtualenv for the whole module (pip install of this checkout and the new package, from
pip's cache; about a minute), one server started from it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import xmlrpc.client

import pytest
import requests
import yaml
import zeep
from lxml import etree

from apiserver.plugin_template import TemplateError, render_files, write_template
from tests.conftest import BASE_CONFIG, free_port, merge, stop_process, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


def run(argv, **kwargs):
    """Run a command of the virtualenv; its output is part of the assertion message on failure."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """(bin dir, plugin dir, env): a new virtualenv with this apiserver and a freshly written plugin."""
    base = tmp_path_factory.mktemp("template")
    home = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=300)
    bin_dir = home / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "APISERVER_CONFIG", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(pip + ["wheel"], env=env, cwd=base)  # --no-build-isolation builds with the venv's own setuptools
    run(pip + ["--no-build-isolation", ROOT, "pytest"], env=env, cwd=base)
    plugin = base / "apiserver-hello"
    written = run([str(bin_dir / "apiserver"), "plugin-template", "hello", str(plugin)], env=env, cwd=base)
    assert str(plugin) in written.stdout
    run(pip + ["--no-build-isolation", str(plugin)], env=env, cwd=base)
    return bin_dir, plugin, env


@pytest.fixture(scope="module")
def server(venv, tmp_path_factory):
    """(url, admin key, config path): apiserver init + serve, both run from the virtualenv."""
    bin_dir, _plugin, env = venv
    base = tmp_path_factory.mktemp("served")
    port = free_port()
    config_path = base / "config.ini"
    write_config(str(config_path), merge(BASE_CONFIG, {
        "frontend": {"http_port": str(port), "https_port": "0"}, "core": {"state_dir": str(base / "state")}}))
    apiserver = [str(bin_dir / "apiserver"), "--config", str(config_path)]
    key = run(apiserver + ["init"], env=env, cwd=base).stdout.strip().splitlines()[-1]
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(apiserver + ["serve"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited:\n{log_path.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                # ports are bound before start-up logs the plugins and runs apiserver_startup
                if (base / "state" / "apiserver.sock").exists() and "built-in plugins of" in log_path.read_text():
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"serve did not listen:\n{log_path.read_text()}"
            time.sleep(0.05)  # polling a child process's readiness
        yield f"http://127.0.0.1:{port}", key, config_path, log_path
    finally:
        stop_process(process)


def test_template_tests_pass_in_the_venv(venv):
    """The package's own tests (apiserver.testing) pass with the installed apiserver."""
    bin_dir, plugin, env = venv
    result = run([str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin / "tests")],
                 env=env, cwd=plugin)
    assert "4 passed" in result.stdout


def test_installed_template_is_listed_with_its_version(venv):
    """apiserver plugins in the venv lists the new plugin from its entry point."""
    bin_dir, _plugin, env = venv
    listed = run([str(bin_dir / "apiserver"), "plugins"], env=env, cwd=str(_plugin)).stdout.splitlines()
    assert "hello: apiserver-hello 0.1.0 (apiserver_hello)" in listed


def test_served_log_names_the_plugin(server):
    """Start-up logs the loaded plugin with its version."""
    _url, _key, _config, log_path = server
    assert "plugin hello loaded: apiserver-hello 0.1.0 (apiserver_hello)" in log_path.read_text()


@pytest.mark.parametrize("query", ["", "?style=document"])
def test_function_is_in_both_wsdls(server, query):
    """Both served WSDL styles declare the template's operations."""
    url, _key, _config, _log = server
    document = etree.fromstring(requests.get(f"{url}/apnscp.wsdl{query}", timeout=30).content)
    operations = {op.get("name") for op in document.iterfind(f"{{{WSDL_NS}}}portType/{{{WSDL_NS}}}operation")}
    assert {"hello_greet", "hello_sites_seen"} <= operations


def test_function_answers_over_soap_and_xmlrpc(server):
    """hello_greet answers zeep over SOAP and xmlrpc.client in both spellings; the scope changes it."""
    url, key, _config, _log = server
    client = zeep.Client(f"{url}/apnscp.wsdl?style=document")
    service = client.create_service(next(iter(client.wsdl.bindings)), f"{url}/soap?authkey={key}")
    assert service.hello_greet(who="SOAP") == "Hello, SOAP!"
    proxy = xmlrpc.client.ServerProxy(f"{url}/xmlrpc?authkey={key}", allow_none=True)
    proxy.scope.set("hello.greeting", "Hi")
    assert proxy.hello.greet("XML-RPC") == "Hi, XML-RPC!"
    assert service.hello_greet(who="SOAP") == "Hi, SOAP!"


def test_cpcmd_lists_and_calls_the_function(venv, server):
    """cpcmd -l from the venv, as root over the socket, lists the commands; calling one works."""
    bin_dir, _plugin, env = venv
    _url, _key, config_path, _log = server
    if os.geteuid() != 0:
        pytest.skip("cpcmd over the socket needs root")
    cpcmd = [str(bin_dir / "cpcmd"), "--config", str(config_path)]
    listed = yaml.safe_load(run(cpcmd + ["-l", "hello:*"], env=env).stdout)
    assert listed == ["hello:greet", "hello:sites-seen"]
    assert run(cpcmd + ["hello:greet", "cpcmd"], env=env).stdout.strip() in ("Hello, cpcmd!", "Hi, cpcmd!")


def test_template_refuses_bad_names_and_busy_directories(tmp_path):
    """Names that cannot be module names and non-empty directories are refused, writing nothing."""
    for bad in ("", "Hello", "he_llo", "1abc", "x" * 31, "auth"):
        with pytest.raises(TemplateError):
            write_template(bad, str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(TemplateError, match="not an empty directory"):
        write_template("hello", str(tmp_path / "busy"))
    assert os.listdir(tmp_path / "busy") == ["file"]


def test_template_has_module_scope_event_readme_and_tests():
    """The package holds a module with a function, a scope, an event hook, a README and tests."""
    files = render_files("hello")
    assert sorted(files) == ["README.md", "apiserver_hello/__init__.py", "apiserver_hello/module.py",
                             "apiserver_hello/scopes.py", "pyproject.toml", "tests/test_hello.py"]
    init = files["apiserver_hello/__init__.py"]
    assert "def apiserver_site_added(api, site)" in init and "def apiserver_add_scopes(api)" in init
    assert "ctx.app" not in "".join(files.values()), "the template must use only the plugin API"
