"""Every hook proves itself: some test registers a plugin implementing it (like Datasette's
test_plugin_hooks_have_tests).  Add a test plugin to tests/ when you add a hookspec."""

from __future__ import annotations

import ast
import pathlib

from apiserver import hookspecs

TESTS = pathlib.Path(__file__).resolve().parent


def _hookimpl_names(tree: ast.AST) -> set:
    """Names of functions decorated with ``hookimpl`` / ``hookimpl(...)`` / ``x.hookimpl``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name == "hookimpl":
                    found.add(node.name)
    return found


def implemented_in_tests() -> dict:
    """{hook name: [test files with a test plugin implementing it]}."""
    found: dict = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == pathlib.Path(__file__).name:
            continue
        for name in _hookimpl_names(ast.parse(path.read_text(encoding="utf-8"))):
            found.setdefault(name, []).append(str(path.relative_to(TESTS)))
    return found


def test_every_hookspec_has_a_test_plugin():
    """Each hookspec is implemented by at least one test plugin under tests/."""
    specs = sorted(name for name in vars(hookspecs) if name.startswith("apiserver_"))
    implemented = implemented_in_tests()
    missing = [name for name in specs if name not in implemented]
    assert not missing, f"hooks with no test plugin implementing them (add one under tests/): {missing}"


def test_the_scan_finds_decorated_functions_only():
    """The scan counts @hookimpl and @hookimpl(...) functions, not other functions of that name."""
    tree = ast.parse(
        "@hookimpl\ndef apiserver_a(): pass\n"
        "@hookspecs.hookimpl(wrapper=True)\ndef apiserver_b(): pass\n"
        "def apiserver_c(): pass\n"
        "@other\ndef apiserver_d(): pass\n")
    assert _hookimpl_names(tree) == {"apiserver_a", "apiserver_b"}
