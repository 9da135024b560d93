"""Application: events reach every plugin even when one of them fails."""

from twisted.internet import task

from apiserver.app import Application
from apiserver.config import load_config
from apiserver.hookspecs import hookimpl
from apiserver.plugins import make_plugin_manager


class Broken:
    @hookimpl
    def apiserver_site_added(self, app, site, actor):
        raise RuntimeError("plugin bug")


class Recorder:
    def __init__(self):
        self.seen = []

    @hookimpl
    def apiserver_site_added(self, app, site, actor):
        self.seen.append((app, site, actor))


def test_fire_isolates_failing_plugins(tmp_path):
    """A plugin raising in an event hook is logged; plugins registered before and after still run."""
    first, last = Recorder(), Recorder()
    pm = make_plugin_manager(load_entrypoints=False, extra=[first, Broken(), last])
    app = Application(load_config(None), task.Clock(), pm)
    app.fire("apiserver_site_added", site="example.com", actor="admin")
    assert first.seen == [(app, "example.com", "admin")] and last.seen == first.seen
