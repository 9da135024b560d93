"""With the plugin pip-installed, apiserver finds it through its entry point like any plugin."""

import importlib.metadata

from twisted.internet.testing import MemoryReactorClock

import apiserver_example
from apiserver.accounts import initialize_state
from apiserver.app import create_application
from apiserver.config import load_config
from apiserver.plugins import ENTRY_POINT_GROUP, make_plugin_manager
from apiserver_example.module import Example


def test_entry_point_is_installed():
    """The installed distribution declares example = apiserver_example in apiserver.plugins."""
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert points.get("example") == "apiserver_example"


def test_plugin_manager_loads_the_plugin_from_its_entry_point():
    """make_plugin_manager() registers the package; without entry points it is absent."""
    assert make_plugin_manager().get_plugin("example") is apiserver_example
    assert make_plugin_manager(load_entrypoints=False).get_plugin("example") is None


def test_application_registry_serves_the_example_functions(tmp_path):
    """A real application built from a config file lists the module's functions in every spelling."""
    config_path = tmp_path / "config.ini"
    config_path.write_text(f"[core]\nstate_dir = {tmp_path / 'state'}\n[auth]\npbkdf2_iterations = 1000\n")
    config = load_config(str(config_path))
    assert initialize_state(config).created
    app = create_application(config, reactor=MemoryReactorClock())
    assert isinstance(app.registry.modules["example"], Example)
    operations = {spec.operation for spec in app.registry.functions()}
    assert {"example_echo", "example_add", "example_is_even", "example_whoami_role", "example_key_stats"} <= operations
    assert app.registry.lookup("example.key_stats").spec.operation == "example_key_stats"
    assert app.registry.lookup("example:whoami-role").spec.operation == "example_whoami_role"
