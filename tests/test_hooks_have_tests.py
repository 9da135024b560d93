"""Every hook proves itself (like Datasette's test_plugin_hooks_have_tests): tests/hook_proofs.py
names, for each hookspec, a test during which a test plugin implementing it must be called
(tests/conftest.py fails that test otherwise).  Add an entry when you add a hookspec."""

from __future__ import annotations

import ast

import pytest

from apiserver import hookspecs
from apiserver.hookspecs import hookimpl
from apiserver.plugins import make_plugin_manager
from tests import hook_proofs


def _test_functions(path) -> set:
    """Names of the test functions and test methods defined in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def test_every_hookspec_has_a_proof():
    """Each hookspec is listed in hook_proofs.PROOFS, and nothing else is."""
    specs = sorted(name for name in vars(hookspecs) if name.startswith("apiserver_"))
    missing = [name for name in specs if name not in hook_proofs.PROOFS]
    assert not missing, f"hooks without a proving test (add one to tests/hook_proofs.py): {missing}"
    assert sorted(hook_proofs.PROOFS) == specs, "tests/hook_proofs.py lists a hook that is no hookspec"


@pytest.mark.parametrize("hook", sorted(hook_proofs.PROOFS))
def test_each_proof_names_an_existing_test(hook):
    """The proof of each hook is a test function that exists in the named file."""
    path, _, name = hook_proofs.PROOFS[hook].partition("::")
    module = hook_proofs.TESTS / path
    assert module.is_file(), f"{hook}: no test file {path}"
    assert name in _test_functions(module), f"{hook}: no test {name} in {path}"


class SiteWatcher:
    @hookimpl
    def apiserver_site_added(self, api, site):
        self.site = site


class CallWrapper:
    @hookimpl(wrapper=True)
    def apiserver_call(self, ctx, function, args):
        return (yield)


def test_recorder_sees_calls_of_test_plugins_only():
    """Calling a test plugin records its hook; registering it, or calling only built-ins, does not."""
    watcher = SiteWatcher()
    pm = make_plugin_manager(load_entrypoints=False, extra=[watcher, CallWrapper()])
    hook_proofs.CALLED.clear()
    pm.hook.apiserver_add_modules(api=None, app=None)  # built-in implementations only
    assert hook_proofs.CALLED == set()
    pm.hook.apiserver_site_added(api=None, app=None, site="example.com", actor=None)
    assert watcher.site == "example.com" and hook_proofs.CALLED == {"apiserver_site_added"}
    assert any(impl.wrapper for impl in pm.hook.apiserver_call.get_hookimpls())  # still a valid wrapper
