"""The plugin manager factory: built-in plugins and installed ones, through the same hooks."""

from __future__ import annotations

import importlib
from typing import Iterable

import pluggy

from apiserver import hookspecs

ENTRY_POINT_GROUP = "apiserver.plugins"

#: Built-in plugins, registered exactly like third-party ones.
BUILTIN_PLUGINS = (
    "apiserver.dispatch",
    "apiserver.modules.common",
    "apiserver.modules.admin",
    "apiserver.modules.user",
    "apiserver.modules.auth",
    "apiserver.modules.misc",
    "apiserver.modules.scope",
    "apiserver.events",
)


def make_plugin_manager(load_entrypoints: bool = True, extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build a fresh plugin manager with the hookspecs, the built-ins and installed plugins.

    ``extra`` objects (tests, embedding code) are registered after the built-ins.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()  # a misspelled hook name in any plugin stops start-up
    return pm
