"""How a module is written: a plain class whose exported methods carry type hints and roles.

Built-in modules and third-party plugins use exactly this::

    from typing import Optional
    from apiserver.module import Module, Role, export

    class Hello(Module):
        '''Says hello.'''
        name = "hello"

        @export(roles=Role.ALL)
        def greet(self, ctx, who: str, times: Optional[int] = 1) -> list[str]:
            '''Greet WHO, TIMES times.'''
            return [f"hello {who}"] * (times or 1)

The framework derives from that one declaration the SOAP operation ``hello_greet`` (both WSDL
styles), the XML-RPC methods ``hello_greet``/``hello.greet``, the cpcmd command
``hello:greet`` and the privilege check.  ``ctx`` is the :class:`apiserver.context.CallContext`
of the call (who calls, through which gate, and ``ctx.api``, the plugin API, for services).

A function runs on the thread pool unless declared ``blocking=False`` (for cheap functions
that touch no database, or that return the Deferred of a service's cached read: a hit then
needs no thread) or written as ``async def`` (it then runs on the reactor and may ``await``
Deferreds).

apiserver's own modules subclass :class:`BuiltinModule` instead, which also receives the
privileged :class:`apiserver.internal.InternalApi` as ``self.core``; the application builds
every module with :func:`make_module`, which refuses that base class to anyone else's module.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from typing import Any, Callable, Optional

from apiserver.types import TypeSpec, spec_from_hint


class Role(enum.Flag):
    """Who may call a function.  An identity has exactly one role."""

    ADMIN = enum.auto()  # appliance administrator (the whole server)
    SITE = enum.auto()   # site administrator (one domain)
    USER = enum.auto()   # a user inside a site
    ALL = ADMIN | SITE | USER

    @property
    def label(self) -> str:
        """The name people use: ``appliance``, ``site``, ``user``."""
        return {Role.ADMIN: "appliance", Role.SITE: "site", Role.USER: "user"}.get(self, self.name.lower())


_MARK = "__apiserver_export__"


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared argument of an exported function."""

    name: str
    spec: TypeSpec
    required: bool
    default: Any = None


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """Everything the framework knows about one exported function."""

    module: str
    name: str
    params: tuple  # tuple[Param, ...]
    returns: TypeSpec
    roles: Role
    blocking: bool
    is_async: bool
    doc: str
    attribute: str  # method name on the module class

    @property
    def operation(self) -> str:
        """SOAP / XML-RPC operation name: ``auth_restrict_ip``."""
        return f"{self.module}_{self.name}"

    @property
    def command(self) -> str:
        """cpcmd name: ``auth:restrict-ip``."""
        return f"{self.module}:{self.name.replace('_', '-')}"

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def signature(self) -> str:
        """``auth:restrict-ip(string ip, string|null gate = null): boolean``."""
        parts = []
        for p in self.params:
            text = f"{p.spec.describe()} {p.name}"
            if not p.required:
                text += f" = {_literal(p.default)}"
            parts.append(text)
        return f"{self.command}({', '.join(parts)}): {self.returns.describe()}"


def export(roles: Role = Role.ALL, *, blocking: bool = True, name: Optional[str] = None):
    """Mark a module method as callable through the API by the given roles."""

    def mark(func: Callable) -> Callable:
        setattr(func, _MARK, {"roles": roles, "blocking": blocking, "name": name})
        return func

    return mark


class Module:
    """Base class of every module.  Subclasses set ``name`` and mark methods with ``@export``.

    One instance is made per application; ``self.api`` is the
    :class:`apiserver.plugin_api.PluginApi`, the module's one surface of the server.  It must
    keep no per-call state on ``self``.
    """

    name: str = ""

    def __init__(self, api):
        self.api = api

    @classmethod
    def functions(cls) -> list[FunctionSpec]:
        """The exported functions, read from the class's declarations (cached per class)."""
        cached = cls.__dict__.get("_apiserver_functions")
        if cached is None:
            cached = [describe_function(cls, attr, member) for attr, member in _exported_members(cls)]
            cls._apiserver_functions = cached
        return cached

    def __getattr__(self, name: str):
        if name == "app":  # what modules of earlier versions reached for
            raise AttributeError(f"{type(self).__name__} has no 'app': a module uses self.api (or ctx.api), "
                                 "the plugin API")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class BuiltinModule(Module):
    """Base class of apiserver's own modules: ``self.core`` is the
    :class:`apiserver.internal.InternalApi`, the privileged path plugins do not get."""

    def __init__(self, api, core):
        super().__init__(api)
        self.core = core


def make_module(cls: type, api, core=None) -> Module:
    """The instance of module class ``cls`` for an application: ``cls(api)``, or for one of
    apiserver's own modules (a :class:`BuiltinModule` defined under ``apiserver.``)
    ``cls(api, core)``.  TypeError for a :class:`BuiltinModule` from anywhere else."""
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"apiserver_add_modules returned {cls!r}, not a subclass of apiserver.module.Module")
    if issubclass(cls, BuiltinModule):
        if not cls.__module__.startswith("apiserver."):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}: BuiltinModule is apiserver's own; "
                            "a plugin's module subclasses apiserver.module.Module")
        return cls(api, core)
    return cls(api)


def _exported_members(cls):
    seen = set()
    for klass in cls.__mro__:
        for attr, member in vars(klass).items():
            if attr not in seen and callable(member) and hasattr(member, _MARK):
                seen.add(attr)
                yield attr, member


def describe_function(cls: type, attr: str, func: Callable) -> FunctionSpec:
    """Build the :class:`FunctionSpec` of ``cls.attr``; raise ``TypeError`` naming what is wrong."""
    if not cls.name or not cls.name.isidentifier() or "_" in cls.name:
        raise TypeError(f"{cls.__qualname__}.name must be a lower-case identifier without '_', got {cls.name!r}")
    mark = getattr(func, _MARK)
    where = f"{cls.__qualname__}.{attr}"
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # a bad annotation should name the function, not crash obscurely
        raise TypeError(f"{where}: cannot resolve type hints: {exc}") from exc
    sig = inspect.signature(func)
    names = list(sig.parameters)
    if names[:2] != ["self", "ctx"]:
        raise TypeError(f"{where}: exported functions take (self, ctx, ...), got ({', '.join(names)})")
    params = []
    for pname in names[2:]:
        p = sig.parameters[pname]
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise TypeError(f"{where}: *args/**kwargs cannot be exported")
        if pname not in hints:
            raise TypeError(f"{where}: argument {pname!r} has no type hint")
        try:
            spec = spec_from_hint(hints[pname])
        except TypeError as exc:
            raise TypeError(f"{where}: argument {pname!r}: {exc}") from None
        required = p.default is inspect.Parameter.empty
        params.append(Param(pname, spec, required, None if required else p.default))
    if "return" not in hints:
        raise TypeError(f"{where}: missing return type hint")
    try:
        returns = spec_from_hint(hints["return"])
    except TypeError as exc:
        raise TypeError(f"{where}: return value: {exc}") from None
    fname = mark["name"] or attr
    return FunctionSpec(
        module=cls.name, name=fname, params=tuple(params), returns=returns,
        roles=mark["roles"], blocking=mark["blocking"],
        is_async=inspect.iscoroutinefunction(func), doc=inspect.getdoc(func) or "",
        attribute=attr,
    )


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)
