"""From an operation name and arguments to a module function's result, whatever the dialect.

:class:`Registry` maps every spelling of a function's name (``auth_restrict_ip``,
``auth.restrict_ip``, ``auth:restrict-ip``) to the function; :func:`bind_arguments` checks and
converts positional and named arguments against its declaration; :meth:`Registry.call` does
both, checks the caller's role and runs the function through the ``apiserver_call`` hook,
whose innermost (built-in) implementation here calls it where its declaration says.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Iterable, Optional, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from apiserver.errors import ApiError, Denied, InvalidArgument, ServerError, UnknownMethod
from apiserver.hookspecs import hookimpl
from apiserver.internal import internal_api
from apiserver.module import FunctionSpec, Module
from apiserver.types import coerce

log = Logger(namespace="apiserver.dispatch")

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Entry:
    """An exported function and the bound method that implements it."""

    spec: FunctionSpec
    method: Callable


class Registry:
    """Every exported function of every loaded module.

    ``call_hook``: the ``apiserver_call`` hook (``plugin_manager.hook.apiserver_call``) that
    :meth:`call` runs functions through; a registry without one only names and describes them
    (the WSDL generator's).
    """

    def __init__(self, modules: Iterable[Module], call_hook: Optional[Callable] = None):
        self._call_hook = call_hook
        self.modules: dict[str, Module] = {}
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, Entry] = {}
        for module in modules:
            if module.name in self.modules:
                raise ValueError(f"two modules are named {module.name!r}")
            self.modules[module.name] = module
            for spec in module.functions():
                entry = Entry(spec, getattr(module, spec.attribute))
                self._entries[spec.operation] = entry
                for alias in (spec.operation, f"{spec.module}.{spec.name}", spec.command):
                    self._aliases[alias] = entry

    def entries(self) -> list[Entry]:
        """All functions, sorted by operation name."""
        return [self._entries[k] for k in sorted(self._entries)]

    def functions(self) -> list[FunctionSpec]:
        return [e.spec for e in self.entries()]

    def lookup(self, name: str) -> Entry:
        """Find a function by any spelling, or raise UnknownMethod suggesting the closest names."""
        entry = self._aliases.get(name)
        if entry is None and isinstance(name, str):
            entry = self._aliases.get(name.replace("-", "_").replace(":", "_").replace(".", "_", 1))
        if entry is None:
            close = difflib.get_close_matches(str(name), self._spellings(str(name)), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownMethod(f"unknown function {str(name)[:100]!r}{hint}")
        return entry

    def _spellings(self, name: str) -> list[str]:
        """Every function's name in the notation of ``name``: ``auth:restrict-ip``, ``auth.restrict_ip``
        or ``auth_restrict_ip``, so a suggestion reads as the caller writes."""
        if ":" in name:
            return [e.spec.command for e in self._entries.values()]
        if "." in name:
            return [f"{e.spec.module}.{e.spec.name}" for e in self._entries.values()]
        return list(self._entries)

    def call(self, ctx, name: str, positional=(), named: Optional[dict] = None) -> defer.Deferred:
        """Look up ``name``, bind the arguments and call it as ``ctx`` (:meth:`invoke`); errors are ApiErrors."""
        try:
            entry = self.lookup(name)
            kwargs = bind_arguments(entry.spec, positional, named)
        except Exception:
            return defer.fail()
        return self.invoke(ctx, entry, kwargs)

    def invoke(self, ctx, entry: Entry, kwargs: dict) -> defer.Deferred:
        """Check the role, then run the function through the ``apiserver_call`` hook.

        Returns a Deferred firing with the result, or failing with an :class:`ApiError`
        (anything else a function raises is logged and becomes ``Server.Internal``).
        """
        spec = entry.spec
        if not (ctx.identity.role & spec.roles):
            allowed = ", ".join(r.label for r in type(spec.roles) if r in spec.roles and r.name != "ALL")
            return defer.fail(Denied(f"{spec.operation} may be called by: {allowed}"))
        try:
            result = self._call_hook(ctx=ctx, function=spec, args=kwargs)
        except Exception:
            result = defer.fail()
        if not isinstance(result, defer.Deferred):
            result = defer.succeed(result)
        return result.addErrback(_hide_internal_errors, spec)


def _hide_internal_errors(failure, spec: FunctionSpec):
    if failure.check(ApiError):
        return failure
    log.failure("{operation} failed", failure, operation=spec.operation)
    raise ServerError(f"{spec.operation} failed on the server; the error was logged")


@hookimpl
def apiserver_call(ctx, function: FunctionSpec, args: dict):
    """The built-in implementation: run the function where its declaration says."""
    core = internal_api(ctx.api)
    method = core.registry.lookup(function.operation).method
    if function.is_async:
        return defer.ensureDeferred(method(ctx, **args))
    if function.blocking:  # within the account's share of the blocking pool
        return core.run_blocking_for(account_key(ctx.identity), method, ctx, **args)
    return defer.maybeDeferred(method, ctx, **args)


def account_key(identity) -> tuple:
    """Whose share of the pools a call uses: its site (administrator and users alike), else its user."""
    return ("site", identity.site) if identity.site else ("user", identity.username)


def bind_arguments(spec: FunctionSpec, positional: Sequence[Any] = (), named: Optional[dict] = None) -> dict:
    """Match positional and named values to ``spec``'s parameters, coerced to their types.

    Raises InvalidArgument naming the argument for too many values, an unknown name, a
    missing required argument or a value of the wrong type.
    """
    named = dict(named or {})
    params = spec.params
    if len(positional) > len(params):
        raise InvalidArgument(
            f"{spec.operation} takes at most {len(params)} argument(s), got {len(positional)}: {spec.signature()}")
    values: dict[str, Any] = {}
    for param, value in zip(params, positional):
        values[param.name] = value
    for name, value in named.items():
        if name in values:
            raise InvalidArgument(f"{spec.operation}: argument {name!r} given twice")
        if not any(p.name == name for p in params):
            raise InvalidArgument(f"{spec.operation}: unknown argument {str(name)[:60]!r}: {spec.signature()}")
        values[name] = value
    out = {}
    for param in params:
        value = values.get(param.name, _MISSING)
        if value is _MISSING or (value is None and not param.required):
            if param.required:
                raise InvalidArgument(f"{spec.operation}: missing argument {param.name!r}: {spec.signature()}")
            out[param.name] = param.default
            continue
        out[param.name] = coerce(value, param.spec, f"{spec.operation}: argument {param.name!r}",
                                 secret=_is_secret(param.name))
    return out


def _is_secret(name: str) -> bool:
    """Arguments whose values a fault must not repeat (passwords, keys, secrets)."""
    return any(word in name for word in ("password", "key", "secret"))
