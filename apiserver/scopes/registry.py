"""The scope base class and the registry of every scope of the application.

A scope is a small object with a name, a type, a default, help text and a setter that
validates and applies (``cpcmd scope:set apache.dav true``).  Built-in scopes and plugins'
scopes come from the same hook, ``apiserver_add_scopes``; ``get``, ``set`` and ``apply`` get
the plugin API as ``api``::

    from apiserver.hookspecs import hookimpl
    from apiserver.scopes import Scope

    class Greeting(Scope):
        name = "hello.greeting"
        type = "string"
        default = "hello"
        help = "What hello:greet says."

        def get(self, api):
            return api.state("hello").get("greeting", self.default)   # blocking pool

        def set(self, api, actor, value):
            api.state("hello").set("greeting", check(value))    # raise InvalidArgument with the reason

    @hookimpl
    def apiserver_add_scopes(api):
        return [Greeting()]

Some scopes address a part of themselves with leading *selector* arguments:
``cp.config SECTION KEY VALUE`` has ``selectors = ("SECTION", "KEY")``; ``get`` takes any
leading part of the selectors (``cp.config``, ``cp.config frontend``,
``cp.config frontend https_only``) and ``set`` all of them followed by the value.

:class:`ScopeRegistry` runs ``get``/``set`` on the blocking pool, one change at a time,
``apply`` on the reactor thread, then records each change in the ``scope_changes`` table
(secrets masked) and fires ``apiserver_scope_changed``.  Its methods take the plugin API they
hand to the scopes (the API asks the registry, so the registry cannot hold it first).
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Optional

from twisted.internet import defer
from twisted.logger import Logger

from apiserver.config import mask_secret
from apiserver.errors import InvalidArgument, NotFound
from apiserver.filters import name_matcher
from apiserver.storage import utcnow

log = Logger(namespace="apiserver.scopes")


class Scope:
    """One scope.  Subclasses set the class attributes and implement ``get`` and ``set``."""

    #: ``area.name`` as typed in ``scope:set`` (``cp.config``, ``apache.dav``).
    name: str = ""
    #: what ``scope:info`` shows as the value's type: ``bool``, ``string``, ``hash``, ...
    type: str = "string"
    #: the value when nothing was set
    default: Any = None
    #: one paragraph for ``scope:info``
    help: str = ""
    #: the accepted values, when there is a short list of them (shown by ``scope:info``)
    allowed: tuple = ()
    #: mask the whole value in ``scope:get``, the audit table and the hook
    secret: bool = False
    #: names of the leading arguments that pick a part of the scope (``("SECTION", "KEY")``)
    selectors: tuple = ()

    def usage(self) -> str:
        """``cp.config SECTION KEY VALUE``."""
        return " ".join((self.name, *self.selectors, "VALUE"))

    def get(self, api, *selected) -> Any:
        """The current value (of the part named by ``selected``).  Runs on the blocking pool."""
        raise NotImplementedError

    def set(self, api, actor, *args) -> None:
        """Validate ``args`` (selectors then the value) and store the value.

        Runs on the blocking pool; raise :class:`InvalidArgument` with the reason for a bad
        value, before anything was stored.  ``actor`` is the caller's Identity.
        """
        raise NotImplementedError

    def apply(self, api, *args) -> None:
        """Make a stored change take effect in this process; runs on the reactor thread after ``set``."""

    def mask(self, value: Any, *selected) -> Any:
        """``value`` (of the part named by ``selected``) as it may be shown: secrets hidden."""
        return mask_secret(value) if self.secret else value

    def describe(self) -> dict:
        """Everything ``scope:info`` shows except the current value."""
        return {
            "name": self.name, "type": self.type, "default": self.mask(self.default), "help": self.help,
            "allowed": [str(v) for v in self.allowed], "usage": self.usage(),
        }


class ScopeRegistry:
    """Every scope of the application, by name.

    ``storage``: the ``scope_changes`` table; ``clock``: when a change was made;
    ``run_blocking``: where scopes' ``get`` and ``set`` run.  Filled by :meth:`add` once the
    plugins have given their scopes.
    """

    def __init__(self, storage, clock, run_blocking, scopes=()):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._scopes: dict[str, Scope] = {}
        self._changes = defer.DeferredLock()  # one change at a time: each is read-modify-write
        self.add(scopes)

    def add(self, scopes) -> None:
        """Register ``scopes``; TypeError for one that is no named Scope, ValueError for a name taken."""
        for scope in scopes:
            if not isinstance(scope, Scope) or not scope.name:
                raise TypeError(f"apiserver_add_scopes returned {scope!r}, not a named apiserver.scopes.Scope")
            if scope.name in self._scopes:
                raise ValueError(f"two scopes are named {scope.name!r}")
            self._scopes[scope.name] = scope

    def names(self, pattern: Optional[str] = None) -> list[str]:
        """Scope names matching ``pattern``, sorted: a word matches names containing it, a glob
        (``cp.*``) the whole name; all when None (:mod:`apiserver.filters`)."""
        try:
            matches = name_matcher(pattern)
        except ValueError as exc:  # too long: the same bound as every other filter
            raise InvalidArgument(f"scope:list: {exc}") from None
        return sorted(n for n in self._scopes if matches(n))

    def scope(self, name: str) -> Scope:
        """The scope called ``name``, or NotFound suggesting close names."""
        scope = self._scopes.get(name)
        if scope is None:
            close = difflib.get_close_matches(str(name), list(self._scopes), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; scope:list shows them all"
            raise NotFound(f"unknown scope {str(name)[:100]!r}{hint}")
        return scope

    def get(self, api, name: str, *selected) -> defer.Deferred:
        """Deferred firing with the (masked) value of ``name`` or the part ``selected`` names."""
        try:
            scope = self.scope(name)
            _check_count(scope, selected, for_set=False)
        except Exception:
            return defer.fail()
        return self._run_blocking(scope.get, api, *selected).addCallback(lambda v: scope.mask(v, *selected))

    def info(self, api, name: str) -> defer.Deferred:
        """Deferred firing with ``describe()`` of the scope plus its masked current ``value``."""
        try:
            scope = self.scope(name)
        except Exception:
            return defer.fail()

        def add_value(value):
            return dict(scope.describe(), value=scope.mask(value))

        return self._run_blocking(scope.get, api).addCallback(add_value)

    def set(self, api, name: str, actor, *args) -> defer.Deferred:
        """Validate, store and apply a new value, record the change and fire ``apiserver_scope_changed``.

        ``actor`` is the Identity making the change.  Fires with the new (masked) value, or
        fails with InvalidArgument/NotFound having changed nothing.
        """
        try:
            scope = self.scope(name)
            _check_count(scope, args, for_set=True)
        except Exception:
            return defer.fail()
        return self._changes.run(lambda: defer.ensureDeferred(self._set(api, scope, actor, args)))

    async def _set(self, api, scope: Scope, actor, args: tuple):
        selected = args[:-1]
        old = await self._run_blocking(scope.get, api, *selected)
        await self._run_blocking(scope.set, api, actor, *args)
        scope.apply(api, *args)
        new = await self._run_blocking(scope.get, api, *selected)
        changed = old != new  # compared before masking: a new secret masks like the old one
        old, new = scope.mask(old, *selected), scope.mask(new, *selected)
        if changed:
            label = " ".join(str(part) for part in (scope.name, *selected))
            await self._run_blocking(self._record, label, actor, old, new)
            log.info("scope {name} changed by {actor}: {old} -> {new}",
                     name=label, actor=actor.describe(), old=_text(old), new=_text(new))
            api.fire("apiserver_scope_changed", name=label, old=old, new=new, actor=actor)
        return new

    def _record(self, label: str, actor, old, new) -> None:
        table = self._storage.tables.scope_changes
        with self._storage.write() as conn:
            conn.execute(table.insert().values(
                name=label[:128], actor=actor.describe()[:255], changed_at=utcnow(self._clock),
                old_value=_text(old), new_value=_text(new),
            ))


def _check_count(scope: Scope, args: tuple, for_set: bool) -> None:
    wanted = len(scope.selectors)
    if for_set and len(args) != wanted + 1:
        raise InvalidArgument(f"scope:set {scope.usage()}: expected {wanted + 1} value(s) after the name, "
                              f"got {len(args)}")
    if not for_set and len(args) > wanted:
        shape = " ".join((scope.name, *scope.selectors)) if wanted else scope.name
        raise InvalidArgument(f"scope:get {shape}: expected at most {wanted} value(s) after the name, got {len(args)}")


def _text(value: Any) -> str:
    """A value as stored in ``scope_changes``: JSON, keys sorted."""
    return json.dumps(value, sort_keys=True, default=str)
