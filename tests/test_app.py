"""Firing events (apiserver.plugins.PluginHooks): every plugin runs even when one fails; the
Application's own checks."""

from apiserver.hookspecs import hookimpl
from apiserver.plugins import PluginHooks, make_plugin_manager

API = object()  # what the hooks get as ``api``


class Broken:
    @hookimpl
    def apiserver_site_added(self, site, actor):
        raise RuntimeError("plugin bug")


class Recorder:
    def __init__(self):
        self.seen = []

    @hookimpl
    def apiserver_site_added(self, api, site, actor):
        self.seen.append((api, site, actor))


def test_fire_isolates_failing_plugins():
    """A plugin raising in an event hook is logged; plugins registered before and after still run."""
    first, last = Recorder(), Recorder()
    pm = make_plugin_manager(load_entrypoints=False, extra=[first, Broken(), last])
    PluginHooks(pm, API).fire("apiserver_site_added", site="example.com", actor="admin")
    assert first.seen == [(API, "example.com", "admin")] and last.seen == first.seen


class SneakedWrapper:
    def __init__(self):
        self.ran = False

    @hookimpl(wrapper=True)
    def apiserver_site_added(self, api, site):
        self.ran = True
        yield


def test_fire_never_half_runs_a_wrapper_that_bypassed_registration_checks():
    """A wrapper registered on a raw pluggy manager is skipped (and logged) by fire, the others still run."""
    import pluggy
    from twisted.logger import formatEvent, globalLogPublisher

    from apiserver import hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    sneaked, recorder = SneakedWrapper(), Recorder()
    pm.register(sneaked)
    pm.register(recorder)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        PluginHooks(pm, API).fire("apiserver_site_added", site="example.com", actor="admin")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert recorder.seen == [(API, "example.com", "admin")] and not sneaked.ran
    refused = [formatEvent(e) for e in events if e.get("log_namespace") == "apiserver.plugins"]
    assert any("apiserver_site_added cannot be implemented as a wrapper; not called" in line for line in refused)


def test_no_web_server_user_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    """With neither www-data nor apache on the host and [web] user empty, start-up names [web] user."""
    import pwd

    import pytest

    from apiserver.app import _web_user
    from apiserver.config import ConfigError, load_config

    config = load_config(None)
    real = pwd.getpwnam

    def no_web_users(name):
        if name in ("www-data", "apache"):
            raise KeyError(name)
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", no_web_users)
    with pytest.raises(ConfigError) as caught:
        _web_user(config)
    assert (caught.value.section, caught.value.key) == ("web", "user")


class LoginSource:
    @hookimpl
    def apiserver_authenticate(self, username, site, password, gate, address):
        return None


def test_implemented_tells_whether_any_plugin_answers_a_hook():
    """implemented() is true only once a plugin implements the hook (password logins skip the hop otherwise)."""
    pm = make_plugin_manager(load_entrypoints=False, extra=[Recorder()])
    assert not PluginHooks(pm, API).implemented("apiserver_authenticate")
    assert PluginHooks(pm, API).implemented("apiserver_site_added")
    pm.register(LoginSource())
    assert PluginHooks(pm, API).implemented("apiserver_authenticate")
