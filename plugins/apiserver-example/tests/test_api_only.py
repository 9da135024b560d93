"""The example plugin uses only the plugin API: no ``app`` in its hooks, no ``.app`` anywhere, and
imports from apiserver only of the modules meant for plugins."""

import ast
import pathlib

import apiserver_example

PACKAGE = pathlib.Path(apiserver_example.__file__).parent
#: The apiserver modules a plugin may import (docs/plugins.md).
PLUGIN_FACING = {"apiserver", "apiserver.hookspecs", "apiserver.module", "apiserver.errors", "apiserver.types",
                 "apiserver.plugin_api", "apiserver.scopes", "apiserver.config", "apiserver.context"}


def _trees():
    return {path.name: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


def test_no_hook_takes_app_and_nothing_reaches_app():
    """Hooks name api, not app; no code reads an attribute called app (ctx.app, self.app)."""
    offences = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("apiserver_"):
                if any(arg.arg == "app" for arg in node.args.args):
                    offences.append(f"{name}: {node.name} takes app")
            if isinstance(node, ast.Attribute) and node.attr == "app":
                offences.append(f"{name}:{node.lineno}: .app")
    assert not offences, offences


def test_imports_only_plugin_facing_modules():
    """Every import from apiserver is one of the modules documented for plugins."""
    imported = set()
    for tree in _trees().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("apiserver") \
                    and not node.module.startswith("apiserver_example"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.startswith("apiserver."))
    assert imported and imported <= PLUGIN_FACING, imported - PLUGIN_FACING
