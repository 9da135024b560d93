"""The ``scope`` module: ``scope:list``, ``scope:get``, ``scope:set`` and ``scope:info``.

``scope:set NAME ARG...`` is variadic in ApisCP (``scope_set('cp.config', 'frontend',
'https_only', true)``).  Here it is declared with three optional ``Any`` arguments after the
name, so positional calls from PHP SoapClient, SOAP::Lite, XML-RPC and cpcmd all bind the
same way; trailing nulls count as absent.  A client may instead pass all arguments as one
list (``scope_set('cp.config', ['frontend', 'https_only', true])``).

The scopes themselves, their registry and where each keeps its value: :mod:`apiserver.scopes`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from apiserver.config_file import format_value, plain_value
from apiserver.hookspecs import hookimpl
from apiserver.internal import internal_api
from apiserver.module import BuiltinModule, Role, export
from apiserver.scopes import Scope
from apiserver.scopes.builtin import ConfigFlagScope, ConfigScope, GeoipKeyScope, builtin_scopes, show


# --- the module -----------------------------------------------------------------------------

@dataclasses.dataclass
class ScopeInfo:
    """What ``scope:info`` answers."""

    name: str
    type: str
    value: Any
    default: Any
    help: str
    allowed: list[str]
    usage: str
    running: Any = None                   # the value the running server uses (value: what is saved)
    restart_needed: list[str] = dataclasses.field(default_factory=list)  # saved keys a restart applies


class ScopeModule(BuiltinModule):
    """Read and change scopes: named run-time settings of the appliance."""

    name = "scope"

    @export(roles=Role.ADMIN, name="list")
    async def list_scopes(self, ctx, filter: Optional[str] = None) -> list[str]:
        """Names of the scopes matching FILTER (a word: names containing it; a glob such as ``cp.*``), or all."""
        return self.core.scopes.names(filter)

    @export(roles=Role.ADMIN, name="get")
    async def get_scope(self, ctx, name: str, arg1: Any = None, arg2: Any = None, arg3: Any = None) -> Any:
        """Value of scope NAME; ARGs select a part (``scope:get cp.config frontend https_only``)."""
        args = _spread(self.core.scopes.scope(name), (arg1, arg2, arg3), for_set=False)
        return await self.api.get_scope(name, *args)

    @export(roles=Role.ADMIN, name="set")
    async def set_scope(self, ctx, name: str, arg1: Any = None, arg2: Any = None, arg3: Any = None) -> Any:
        """Set scope NAME: ARGs are its selectors then the value (``scope:set cp.config frontend https_only true``).

        True when the change is in force; for a config key that needs a restart, a text saying so.
        """
        scopes, config = self.core.scopes, self.core.config
        scope = scopes.scope(name)
        args = _spread(scope, (arg1, arg2, arg3), for_set=True)
        await scopes.set(self.api, name, ctx.identity, *args)
        if isinstance(scope, ConfigScope):
            section, key = args[0], args[1]
            in_force = config.validate(section, key, format_value(args[2])) == config.get(section, key)
            if not config.key(section, key).runtime and not in_force:
                return (f"saved to config.ini; [{section}] {key} takes effect after a restart "
                        f"(the running server keeps {show(plain_value(config, section, key))})"
                        if not config.key(section, key).secret else
                        f"saved to config.ini; [{section}] {key} takes effect after a restart")
        return True

    @export(roles=Role.ADMIN, name="info")
    async def info(self, ctx, name: str) -> ScopeInfo:
        """Value (as saved), running value, default, type, help text and allowed values of scope NAME,
        and the saved config keys that take effect only after a restart."""
        scopes, config = self.core.scopes, self.core.config
        scope = scopes.scope(name)
        info = await scopes.info(self.api, name)
        running = getattr(scope, "running", None)
        info["running"] = scope.mask(running()) if running is not None else info["value"]
        if isinstance(scope, (ConfigScope, ConfigFlagScope, GeoipKeyScope)):
            pending = await self.api.run_blocking(self.core.config_file.pending_restart)
            info["restart_needed"] = sorted(k for k in pending if not config.key(*k[1:].split("] ")).runtime)
        return ScopeInfo(**info)


def _spread(scope: Scope, values: tuple, for_set: bool) -> tuple:
    """The scope's arguments: trailing nulls dropped, but the value of a scope without selectors
    may be null (``scope:set auth.geoip-key null``); a lone list stands for all of them."""
    values = list(values)
    while values and values[-1] is None:
        values.pop()
    if len(values) == 1 and isinstance(values[0], (list, tuple)) and scope.selectors:
        wanted = len(scope.selectors) + 1 if for_set else len(scope.selectors)
        if 0 < len(values[0]) <= wanted:
            values = list(values[0])
    if for_set and not values and not scope.selectors:
        values.append(None)
    return tuple(values)


@hookimpl
def apiserver_add_modules(api):
    """The ``scope`` module."""
    return [ScopeModule]


@hookimpl
def apiserver_add_scopes(api):
    """The built-in scopes (:mod:`apiserver.scopes.builtin`), over the server's config.ini and
    Bootstrapper variables."""
    core = internal_api(api)
    return builtin_scopes(core.config_file, core.bootstrapper)
