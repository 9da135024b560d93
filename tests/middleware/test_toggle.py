"""The API toggle: [soap] enabled read live, with a refusal that names the setting."""

from apiserver.middleware.toggle import DISABLED_MESSAGE, ApiToggle
from tests.middleware.support import make_config


def test_enabled_by_default():
    """The shipped default serves the API: no refusal."""
    toggle = ApiToggle(make_config())
    assert toggle.enabled() and toggle.refusal() is None


def test_disabled_by_configuration():
    """[soap] enabled=false (or 0, as ApisCP writes it) refuses, saying why."""
    for raw in ("false", "0"):
        toggle = ApiToggle(make_config({"soap": {"enabled": raw}}))
        assert not toggle.enabled()
        assert toggle.refusal() == DISABLED_MESSAGE
    assert "disabled by configuration" in DISABLED_MESSAGE and "[soap] enabled=false" in DISABLED_MESSAGE


def test_switches_at_run_time():
    """Config.set (the cp.api / cp.config scopes) switches it without a new toggle."""
    config = make_config()
    toggle = ApiToggle(config)
    config.set("soap", "enabled", "false")
    assert toggle.refusal() == DISABLED_MESSAGE
    config.set("soap", "enabled", "true")
    assert toggle.refusal() is None
