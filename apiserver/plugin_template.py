"""``apiserver plugin-template NAME [DIR]``: write a new plugin package that installs and tests green.

The package has a module with a function, a scope kept in the plugin's state, an event hook,
a README and tests written with :mod:`apiserver.testing`; it uses only the plugin API.
``tests/test_plugin_template.py`` installs a freshly written one into a new virtualenv, runs
its tests and calls it over SOAP.
"""

from __future__ import annotations

import os
import re

__all__ = ["TemplateError", "write_template", "render_files"]

_NAME = re.compile(r"^[a-z][a-z0-9]{0,29}$")
#: Names of built-in modules (and the reserved ``cp``): a second module of that name stops start-up.
_TAKEN = frozenset({"admin", "auth", "common", "cp", "misc", "scope", "user"})


class TemplateError(Exception):
    """The name or the target directory cannot be used; the message says why."""


PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "PLUGIN_DIST"
version = "0.1.0"
description = "An apiserver plugin: the PLUGIN_NAME module"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["apiserver"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The line that makes apiserver load the plugin: group apiserver.plugins, the plugin's name,
# the object (here the package) carrying the @hookimpl functions.
[project.entry-points."apiserver.plugins"]
PLUGIN_NAME = "PLUGIN_PACKAGE"

[tool.setuptools]
packages = ["PLUGIN_PACKAGE"]
'''

INIT = '''\
"""PLUGIN_DIST: the apiserver plugin PLUGIN_NAME.

apiserver registers this package through the entry point in pyproject.toml; the functions
marked @hookimpl are the plugin.  ``api``, the plugin API, is all of the server a hook gets
(module functions: ``ctx.api``); see apiserver's docs/plugins.md.
"""

from apiserver import hookimpl

from PLUGIN_PACKAGE.module import PLUGIN, PLUGIN_CLASS, remember_site
from PLUGIN_PACKAGE.scopes import Greeting


@hookimpl
def apiserver_add_modules(api):
    """The PLUGIN_NAME module: SOAP PLUGIN_NAME_*, XML-RPC PLUGIN_NAME.*, cpcmd PLUGIN_NAME:*."""
    return [PLUGIN_CLASS]


@hookimpl
def apiserver_add_scopes(api):
    """The PLUGIN_NAME.greeting scope (cpcmd scope:set PLUGIN_NAME.greeting Hi)."""
    return [Greeting(api)]


@hookimpl
def apiserver_site_added(api, site):
    """An event: runs on the reactor thread, so the database write goes to the blocking pool."""
    d = api.run_blocking(remember_site, api.state(PLUGIN), site)
    d.addErrback(lambda failure: api.logger(PLUGIN).failure("remembering {site} failed", failure, site=site))
'''

MODULE = '''\
"""The PLUGIN_NAME module: its exported functions."""

from apiserver.errors import InvalidArgument
from apiserver.module import Module, Role, export

from PLUGIN_PACKAGE.scopes import Greeting

#: The plugin's name: its state namespace and logger.
PLUGIN = "PLUGIN_NAME"


def remember_site(state, site: str) -> None:
    """Blocking.  Add ``site`` to the sites this plugin has seen created."""
    state.set("sites", sorted(set(state.get("sites", [])) | {site}))


class PLUGIN_CLASS(Module):
    """Greets, and lists the sites created since the plugin was installed."""

    name = "PLUGIN_NAME"

    @export(roles=Role.ALL)
    def greet(self, ctx, who: str) -> str:
        """Greet WHO with the scope PLUGIN_NAME.greeting."""
        if not who.strip():
            raise InvalidArgument("who must not be empty")
        greeting = Greeting(ctx.api).current()  # a database read: greet runs on the blocking pool
        return f"{greeting}, {who}!"

    @export(roles=Role.ADMIN)
    def sites_seen(self, ctx) -> list[str]:
        """Sites created while the plugin was installed (appliance administrator only)."""
        return ctx.api.state(PLUGIN).get("sites", [])
'''

SCOPES = '''\
"""The PLUGIN_NAME.greeting scope, kept in the plugin's state so it survives restarts."""

from apiserver.errors import InvalidArgument
from apiserver.plugin_api import StoredScope
from apiserver.types import STRING, TypeSpec


class Greeting(StoredScope):
    """What PLUGIN_NAME:greet says before the name."""

    plugin = "PLUGIN_NAME"
    name = "PLUGIN_NAME.greeting"
    type = "string"
    spec = TypeSpec(STRING)
    default = "Hello"
    help = "What PLUGIN_NAME:greet says before the name (1 to 40 characters)."

    def check(self, value: str) -> None:
        if not 1 <= len(value.strip()) <= 40:
            raise InvalidArgument(f"{self.name} must be 1 to 40 characters")
'''

TESTS = '''\
"""The PLUGIN_NAME plugin in a real apiserver application (apiserver.testing): function, scope, event."""

import pytest

import PLUGIN_PACKAGE
from apiserver.errors import Denied, InvalidArgument
from apiserver.testing import PluginTestApp


@pytest.fixture
def app(tmp_path):
    """An application on a fresh SQLite database with this plugin registered."""
    with PluginTestApp(tmp_path, plugins=[PLUGIN_PACKAGE]) as test_app:
        yield test_app


def test_greet_uses_the_default_greeting(app):
    """greet says the scope's default before the name."""
    assert app.call(app.admin, "PLUGIN_NAME_greet", "world") == "Hello, world!"


def test_greet_refuses_an_empty_name(app):
    """An empty name is a Client.InvalidArgument fault."""
    with pytest.raises(InvalidArgument):
        app.call(app.admin, "PLUGIN_NAME_greet", " ")


def test_scope_changes_the_greeting(app):
    """scope:set PLUGIN_NAME.greeting changes what greet says; a bad value is refused."""
    app.call(app.admin, "scope_set", "PLUGIN_NAME.greeting", "Hi")
    assert app.call(app.admin, "PLUGIN_NAME:greet", "you") == "Hi, you!"
    with pytest.raises(InvalidArgument):
        app.call(app.admin, "scope_set", "PLUGIN_NAME.greeting", "x" * 41)


def test_event_hook_remembers_created_sites(app):
    """Creating a site fires apiserver_site_added; the plugin stores it and sites_seen lists it."""
    site_admin = app.add_site("example.com", "owner")
    app.settle()
    assert app.call(app.admin, "PLUGIN_NAME_sites_seen") == ["example.com"]
    with pytest.raises(Denied):
        app.call(site_admin, "PLUGIN_NAME_sites_seen")
'''

README = '''\
# PLUGIN_DIST

An apiserver plugin adding the `PLUGIN_NAME` module:

| function | roles | SOAP / XML-RPC | cpcmd |
| --- | --- | --- | --- |
| `greet(who)` | everyone | `PLUGIN_NAME_greet`, `PLUGIN_NAME.greet` | `PLUGIN_NAME:greet` |
| `sites_seen()` | appliance administrator | `PLUGIN_NAME_sites_seen` | `PLUGIN_NAME:sites-seen` |

and the scope `PLUGIN_NAME.greeting` (`cpcmd scope:set PLUGIN_NAME.greeting Hi`).

## Develop

```
pip install -e '.[test]'      # into the environment apiserver runs from
python -m pytest tests
apiserver plugins             # lists PLUGIN_NAME with its version
```

Restart `apiserver serve` to load it. PHP clients cache the WSDL (`soap.wsdl_cache_ttl`, a
day by default): clear `soap.wsdl_cache_dir` (`/tmp/wsdl-*`) or create the client with
`'cache_wsdl' => WSDL_CACHE_NONE` to see the new functions at once.

## Publish

```
python -m build && python -m twine upload dist/*
```

See apiserver's `docs/plugins.md` for the plugin API, every hook and scope attribute.
'''


def render_files(name: str) -> dict:
    """{relative path: text} of the package for plugin ``name``."""
    package = f"apiserver_{name}"
    tokens = {"PLUGIN_DIST": f"apiserver-{name}", "PLUGIN_PACKAGE": package,
              "PLUGIN_CLASS": name.capitalize() + "Module", "PLUGIN_NAME": name}

    def fill(text: str) -> str:
        for token, value in tokens.items():
            text = text.replace(token, value)
        return text

    return {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README),
        f"{package}/__init__.py": fill(INIT),
        f"{package}/module.py": fill(MODULE),
        f"{package}/scopes.py": fill(SCOPES),
        f"tests/test_{name}.py": fill(TESTS),
    }


def write_template(name: str, directory: str | None = None) -> str:
    """Write the package for plugin ``name`` into ``directory`` (default ``./apiserver-NAME``).

    Returns the directory.  Raises :class:`TemplateError` for a name that cannot be a module
    name or a directory that exists and is not empty; nothing is written then.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise TemplateError(f"plugin name {name!r}: use a lower-case letter then up to 29 lower-case letters "
                            "or digits (it becomes the module name, as in hello_greet)")
    if name in _TAKEN:
        raise TemplateError(f"plugin name {name!r} is a built-in module's name; choose another")
    directory = os.path.abspath(directory or f"apiserver-{name}")
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise TemplateError(f"{directory} exists and is not an empty directory")
    for relative, text in render_files(name).items():
        path = os.path.join(directory, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return directory
