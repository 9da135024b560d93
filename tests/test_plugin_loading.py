"""Loading plugins: checks at registration, installed entry points, [core] disabled_plugins, and
the one-line errors and listings of the apiserver command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from apiserver.hookspecs import hookimpl
from apiserver.plugins import PluginError, PluginManager, make_plugin_manager, read_disabled_plugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EventWrapper:
    @hookimpl(wrapper=True)
    def apiserver_site_added(self, api, site):
        yield


class OldStyleWrapper:
    @hookimpl(hookwrapper=True)
    def apiserver_login_failed(self, address):
        yield


class CallWrapper:
    @hookimpl(wrapper=True)
    def apiserver_call(self, ctx, function, args):
        return (yield)


class Misspelled:
    @hookimpl
    def apiserver_site_addd(self, api, site):
        pass


class AsksForApp:
    """A plugin written for the old surface: its hook asks for the whole application."""

    @hookimpl
    def apiserver_site_added(self, app, site):
        pass


class WrongArgument:
    @hookimpl
    def apiserver_site_added(self, api, domain):
        pass


@pytest.mark.parametrize("plugin, hook", [(EventWrapper(), "apiserver_site_added"),
                                          (OldStyleWrapper(), "apiserver_login_failed")])
def test_wrappers_of_events_are_refused_at_registration(plugin, hook):
    """fire() calls events one implementation at a time, so a wrapper is refused, naming plugin and hook."""
    pm = PluginManager()
    with pytest.raises(PluginError) as caught:
        pm.register(plugin, name="wrapping")
    assert str(caught.value) == (f"plugin wrapping: {hook} cannot be implemented as a wrapper "
                                 "(only apiserver_call can); use a plain @hookimpl")
    assert pm.get_plugin("wrapping") is None  # nothing half-registered


def test_wrapper_of_the_call_hook_is_accepted():
    """apiserver_call is the around-call hook: wrappers are what it is for."""
    pm = make_plugin_manager(load_entrypoints=False, extra=[CallWrapper()])
    assert any(impl.wrapper for impl in pm.hook.apiserver_call.get_hookimpls())


def test_misspelled_hook_names_the_plugin_and_the_closest_hook():
    """An unknown hook stops registration with one line and a suggestion."""
    with pytest.raises(PluginError) as caught:
        make_plugin_manager(load_entrypoints=False, extra=[Misspelled()])
    message = str(caught.value)
    assert message.endswith("apiserver_site_addd is not an apiserver hook; did you mean apiserver_site_added?")
    assert "\n" not in message


def test_argument_not_in_the_spec_is_one_line():
    """An implementation asking for an argument the hook does not pass is refused in one line."""
    with pytest.raises(PluginError) as caught:
        PluginManager().register(WrongArgument(), name="wrong")
    assert str(caught.value).startswith("plugin wrong: ") and "domain" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_hook_asking_for_app_is_refused_saying_to_use_api():
    """A hook implementation taking ``app`` is refused at registration, in one line that says
    what hooks get instead (``api``); nothing of the plugin is registered."""
    pm = PluginManager()
    with pytest.raises(PluginError) as caught:
        pm.register(AsksForApp(), name="old")
    assert str(caught.value) == ("plugin old: apiserver_site_added asks for 'app', which hooks no longer receive; "
                                 "take 'api' instead (apiserver.plugin_api.PluginApi, the plugin API: "
                                 "see docs/plugins.md)")
    assert pm.get_plugin("old") is None


# --- installed plugins (real entry points in a dist-info folder on sys.path) ----------------

def make_distribution(root, dist: str, version: str, module: str, source: str, entry: str = None) -> None:
    """Install ``module`` (``source``) with an ``apiserver.plugins`` entry point, as pip would lay it out."""
    entry = entry or module.replace("_", "-")
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[apiserver.plugins]\n{entry} = {module}\n")


GOOD = """
    from apiserver import hookimpl

    @hookimpl
    def apiserver_site_added(api, site):
        pass
"""


@pytest.fixture
def site_packages(tmp_path, monkeypatch):
    """A folder on sys.path for fake installed distributions."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_installed_plugin_is_loaded_with_its_version(site_packages):
    """An entry point is imported and registered under its name; plugins lists its distribution and version."""
    make_distribution(site_packages, "apiserver-good", "1.2.3", "good_plugin", GOOD, entry="good")
    pm = make_plugin_manager()
    assert pm.get_plugin("good") is sys.modules["good_plugin"]
    info = next(p for p in pm.third_party() if p.name == "good")
    assert (info.distribution, info.version, info.target, info.disabled) == \
        ("apiserver-good", "1.2.3", "good_plugin", False)
    assert info.describe() == "good: apiserver-good 1.2.3 (good_plugin)"


def test_disabled_plugin_is_not_even_imported(site_packages):
    """A plugin named (by entry point or distribution) in disabled is listed as disabled, never imported."""
    make_distribution(site_packages, "apiserver-broken", "0.1", "broken_plugin", "raise RuntimeError('boom')\n",
                      entry="broken")
    for name in ("broken", "apiserver-broken"):
        pm = make_plugin_manager(disabled=[name])
        assert pm.get_plugin("broken") is None
        assert [p.describe() for p in pm.third_party() if p.name == "broken"] == [
            "broken: apiserver-broken 0.1 (broken_plugin, disabled by [core] disabled_plugins)"]
    assert "broken_plugin" not in sys.modules


def test_plugin_failing_to_import_is_one_line(site_packages):
    """An import error names the plugin, its distribution and version, and the error, in one line."""
    make_distribution(site_packages, "apiserver-broken", "0.1", "broken_plugin2",
                      "import no_such_module_anywhere\n", entry="broken")
    with pytest.raises(PluginError) as caught:
        make_plugin_manager()
    assert str(caught.value) == ("plugin broken (apiserver-broken 0.1): cannot import broken_plugin2: "
                                 "ModuleNotFoundError: No module named 'no_such_module_anywhere'")


def test_installed_plugin_with_a_misspelled_hook_is_one_line(site_packages):
    """The unknown hook message names the installed distribution too."""
    make_distribution(site_packages, "apiserver-typo", "2.0", "typo_plugin", GOOD.replace("site_added", "site_add"),
                      entry="typo")
    with pytest.raises(PluginError, match=r"^plugin typo \(apiserver-typo 2.0\): apiserver_site_add is not an "
                                          r"apiserver hook; did you mean apiserver_site_added\?$"):
        make_plugin_manager()


def test_installed_plugin_asking_for_app_stops_serve_with_one_line(tmp_path, site_packages):
    """An installed plugin whose hook asks for ``app`` stops ``apiserver serve``: exit 1, one stderr
    line naming the plugin, its distribution and version, and what to use (``api``)."""
    make_distribution(site_packages, "apiserver-old", "0.9", "old_plugin", GOOD.replace("(api, site)", "(app, site)"),
                      entry="old")
    result = run_apiserver(tmp_path, site_packages, "serve")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "apiserver: plugin old (apiserver-old 0.9): apiserver_site_added asks for 'app', which hooks no longer "
        "receive; take 'api' instead (apiserver.plugin_api.PluginApi, the plugin API: see docs/plugins.md)"]


def test_disabled_plugins_are_read_from_the_raw_file(tmp_path):
    """read_disabled_plugins reads [core] disabled_plugins before the config is validated."""
    path = tmp_path / "config.ini"
    path.write_text("[core]\ndisabled_plugins = one, two three\n[future]\nkey = 1\n")
    assert read_disabled_plugins(str(path)) == ("one", "two", "three")
    assert read_disabled_plugins(str(tmp_path / "missing.ini")) == ()
    (tmp_path / "bad.ini").write_text("not an ini file\n")
    assert read_disabled_plugins(str(tmp_path / "bad.ini")) == ()


# --- the apiserver command ----------------------------------------------------------------

def run_apiserver(tmp_path, site_packages, *args, config: str = ""):
    path = tmp_path / "config.ini"
    path.write_text(f"[core]\nstate_dir = {tmp_path / 'state'}\n{config}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site_packages), ROOT]))
    env.pop("APISERVER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "apiserver.cli.main", "--config", str(path), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def run_twistd(tmp_path, site_packages):
    """``twistd -n apiserver`` on ``tmp_path``'s config.ini, run to its end."""
    from tests.ops_support import TWISTD

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site_packages), ROOT]))
    env.pop("APISERVER_CONFIG", None)
    return subprocess.run([TWISTD, "-n", "--pidfile=", "apiserver", "--config", str(tmp_path / "config.ini")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)


def test_plugins_command_lists_installed_plugins_with_versions(tmp_path, site_packages):
    """apiserver plugins prints one line per plugin: built-ins, the example plugin and an installed one."""
    make_distribution(site_packages, "apiserver-good", "1.2.3", "good_plugin", GOOD, entry="good")
    result = run_apiserver(tmp_path, site_packages, "plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "apiserver.dispatch: apiserver 0.1.0 (built-in)" in lines
    assert "good: apiserver-good 1.2.3 (good_plugin)" in lines
    assert "example: apiserver-example 0.1.0 (apiserver_example)" in lines


@pytest.mark.parametrize("command", ["serve", "init", "plugins"])
def test_broken_plugin_stops_every_command_with_one_line(tmp_path, site_packages, command):
    """A plugin that fails to import stops the command: exit 1 and one stderr line, no traceback."""
    make_distribution(site_packages, "apiserver-broken", "0.1", "broken_cli_plugin", "1/0\n", entry="broken")
    result = run_apiserver(tmp_path, site_packages, command)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "apiserver: plugin broken (apiserver-broken 0.1): cannot import broken_cli_plugin: "
        "ZeroDivisionError: division by zero"]


def test_disabled_plugins_key_lets_the_server_start_without_it(tmp_path, site_packages):
    """[core] disabled_plugins names the broken plugin: init succeeds and plugins lists it as disabled."""
    make_distribution(site_packages, "apiserver-broken", "0.1", "broken_cli_plugin2", "1/0\n", entry="broken")
    config = "disabled_plugins = broken\n[auth]\npbkdf2_iterations = 1000\n"
    result = run_apiserver(tmp_path, site_packages, "init", config=config)
    assert result.returncode == 0, result.stderr
    listed = run_apiserver(tmp_path, site_packages, "plugins", config=config).stdout.splitlines()
    assert "broken: apiserver-broken 0.1 (broken_cli_plugin2, disabled by [core] disabled_plugins)" in listed


@pytest.mark.parametrize("starter", ["serve", "twistd"])
def test_disabled_plugins_key_is_honoured_by_serve_and_twistd(tmp_path, site_packages, starter):
    """serve and twistd skip a plugin [core] disabled_plugins names: they get as far as binding
    (a taken port) instead of stopping on the broken plugin."""
    import socket

    from tests.conftest import free_port

    make_distribution(site_packages, "apiserver-broken", "0.1", "broken_serve_plugin", "1/0\n", entry="broken")
    port = free_port()
    config = (f"disabled_plugins = broken\n[auth]\npbkdf2_iterations = 1000\n"
              f"[frontend]\nhttp_port = {port}\nhttps_port = 0\n")
    assert run_apiserver(tmp_path, site_packages, "init", config=config).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        if starter == "serve":
            result = run_apiserver(tmp_path, site_packages, "serve", config=config)
        else:
            result = run_twistd(tmp_path, site_packages)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stdout + result.stderr
    assert "broken_serve_plugin" not in result.stdout + result.stderr


def test_broken_plugin_stops_twistd_with_one_line(tmp_path, site_packages):
    """Under twistd too, a plugin that fails to import ends the process: exit 1, one line, no traceback."""
    make_distribution(site_packages, "apiserver-broken", "0.1", "broken_twistd_plugin", "1/0\n", entry="broken")
    (tmp_path / "config.ini").write_text(f"[core]\nstate_dir = {tmp_path / 'state'}\n")
    result = run_twistd(tmp_path, site_packages)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "apiserver: plugin broken (apiserver-broken 0.1): cannot import broken_twistd_plugin: "
        "ZeroDivisionError: division by zero"]
