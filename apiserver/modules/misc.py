"""The ``misc`` module: what can be called, with signatures (``cpcmd -l``, ``misc:info``)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from apiserver.errors import InvalidArgument
from apiserver.filters import name_matcher

from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, FunctionSpec, Role, export


@dataclasses.dataclass
class CommandInfo:
    """One function: its cpcmd name, signature, first line of help and the roles that may call it."""

    command: str
    signature: str
    help: str
    roles: list[str]


def _matching(registry, pattern: Optional[str]) -> list[FunctionSpec]:
    specs = sorted(registry.functions(), key=lambda spec: spec.command)
    try:
        matches = name_matcher(pattern)
    except ValueError as exc:
        raise InvalidArgument(f"filter: {exc}") from None
    return [s for s in specs if matches(s.command) or matches(s.operation)]


class MiscModule(BuiltinModule):
    """The catalogue of module functions."""

    name = "misc"

    @export(roles=Role.ALL, blocking=False)
    def list_commands(self, ctx, filter: Optional[str] = None) -> list[str]:
        """Every command (``module:function-name``) matching FILTER, sorted: a word matches names
        containing it, a pattern with ``*`` is a glob."""
        return [spec.command for spec in _matching(self.core.registry, filter)]

    @export(roles=Role.ALL, blocking=False)
    def info(self, ctx, filter: Optional[str] = None) -> list[CommandInfo]:
        """Signature, help and roles of every command matching FILTER (a word: names containing it;
        with ``*``: a glob)."""
        return [CommandInfo(command=spec.command, signature=spec.signature(), help=spec.summary,
                            roles=[role.label for role in (Role.ADMIN, Role.SITE, Role.USER) if role in spec.roles])
                for spec in _matching(self.core.registry, filter)]


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``misc`` module."""
    return [MiscModule]
