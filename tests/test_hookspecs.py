"""Hooks are documented, and built-in plugins load through the same manager as third-party ones."""

import inspect

from apiserver import hookspecs
from apiserver.plugins import BUILTIN_PLUGINS, make_plugin_manager


def _specs():
    return [(name, fn) for name, fn in vars(hookspecs).items()
            if name.startswith("apiserver_") and callable(fn)]


def test_every_hook_is_prefixed_and_documented():
    """Each hookspec has a docstring that says when it is called and names every argument."""
    specs = _specs()
    assert len(specs) >= 10
    for name, fn in specs:
        doc = inspect.getdoc(fn) or ""
        assert doc, f"{name} has no docstring"
        assert "called" in doc.lower() or "wraps" in doc.lower(), f"{name}: docstring does not say when it is called"
        for arg in inspect.signature(fn).parameters:
            assert f"``{arg}``" in doc, f"{name}: argument {arg!r} undocumented"


def test_every_hook_listed_in_readme():
    """The plugin overview (docs/extending.md) names every hook."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "extending.md"), encoding="utf-8") as fh:
        page = fh.read()
    missing = [name for name, _ in _specs() if name not in page]
    assert not missing, f"hooks missing from docs/extending.md: {missing}"


def test_factory_builds_independent_managers():
    """The factory returns a new manager each time, with every built-in plugin registered."""
    first, second = make_plugin_manager(load_entrypoints=False), make_plugin_manager(load_entrypoints=False)
    assert first is not second
    for name in BUILTIN_PLUGINS:
        assert first.get_plugin(name) is not None


def test_decision_and_wrapper_hooks_are_marked():
    """Decisions are firstresult; the around-call hook is firstresult so wrappers see one result."""
    pm = make_plugin_manager(load_entrypoints=False)
    for name in ("apiserver_authenticate", "apiserver_validate_password", "apiserver_call"):
        assert getattr(pm.hook, name).spec.opts["firstresult"], name


def test_hooks_take_api_and_never_app():
    """Every hook but the config collector (no api yet) and the call wrapper (ctx.api) takes
    ``api`` first, and no hook has a parameter named ``app``: the plugin API is the one surface."""
    for name, fn in _specs():
        parameters = list(inspect.signature(fn).parameters)
        assert "app" not in parameters, name
        if name in ("apiserver_config_sections", "apiserver_call"):
            continue
        assert parameters[0] == "api", name
        assert "``api`` is the" in " ".join((inspect.getdoc(fn) or "").split()), name
