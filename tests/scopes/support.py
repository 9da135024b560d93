"""An in-process application with real storage, the scope module and the built-in scopes, for unit tests."""

from __future__ import annotations

import os
import shutil
import tempfile

import pluggy
import sqlalchemy as sa

from apiserver import dispatch, hookspecs
from apiserver.app import Application
from apiserver.config import load_config
from apiserver.context import Identity
from apiserver.module import Role
from apiserver.modules import scope as scope_module

ADMIN = Identity(role=Role.ADMIN, user_id=1, username="admin")

CONFIG_TEXT = """\
; apiserver test config -- comments must survive edits
[soap]
enabled = true   ; the API toggle

[frontend]
; listeners
bind = 127.0.0.1
http_port = 2082
https_port = 0

[core]
state_dir = state
"""


def temp_dir(testcase) -> str:
    """A fresh directory outside the working tree, removed when ``testcase`` ends."""
    path = tempfile.mkdtemp(prefix="apiserver-scopes-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


class ScopeEvents:
    """A plugin that records every ``apiserver_scope_changed`` call."""

    def __init__(self):
        self.changes = []

    @hookspecs.hookimpl
    def apiserver_scope_changed(self, name, old, new, actor):
        self.changes.append((name, old, new, actor))


def make_app(directory, reactor, config_text: str = CONFIG_TEXT, extra_plugins=()):
    """An Application over ``directory/config.ini`` with a fresh SQLite schema and the built-in scopes.

    Returns ``(app, events)``; the blocking pool is started and stopped by the caller.
    """
    path = os.path.join(str(directory), "config.ini")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(config_text)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(dispatch)
    pm.register(scope_module)
    events = ScopeEvents()
    pm.register(events)
    for plugin in extra_plugins:
        pm.register(plugin)
    config = load_config(path)
    os.makedirs(config.state_dir, exist_ok=True)
    app = Application(config, reactor, pm)
    app.storage.create_schema()
    return app, events


def audit_rows(app) -> list:
    """Every ``scope_changes`` row as ``(name, actor, old_value, new_value)``, oldest first."""
    table = app.storage.tables.scope_changes
    with app.storage.read() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
    return [(r.name, r.actor, r.old_value, r.new_value) for r in rows]
