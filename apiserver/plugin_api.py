"""The plugin API: everything of the running server that a plugin may use.

Every hook receives it as ``api`` and every module function as ``ctx.api`` (modules also have
``self.api``): it is the one surface of the server a plugin sees.  What is not reachable from
here (the application, the gatekeeper, storage, registries) is private to apiserver and may
change in any release; ``tests/test_plugin_api.py`` lists the members below, so a change to
this surface is always deliberate.

Methods whose docstring starts with "Blocking." touch the database: call them on the blocking
pool (``api.run_blocking(...)``, or from a module function declared with the default
``blocking=True``), never on the reactor thread.  The others are cheap and run anywhere a hook
or function runs.

::

    @hookimpl
    def apiserver_site_added(api, site, actor):
        store = api.state("hello")
        api.run_blocking(store.set, "last-site", site)
        api.logger("hello").info("site {site} added by {actor}", site=site, actor=actor.describe())
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.context import Identity
from apiserver.errors import InvalidArgument
from apiserver.plugins import fire_event
from apiserver.scopes import Scope
from apiserver.timers import WorkTimer
from apiserver.types import TypeSpec, coerce

__all__ = ["PluginApi", "PluginState", "StoredScope"]

#: A plugin's state namespace: lower-case letters, digits, ``-``, ``_`` and ``.``.
_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
MAX_KEY_LENGTH = 200
#: the event hooks (hookspecs: names ending in a past participle); the others are not fired
_EVENT = re.compile(r"^apiserver_\w+ed$")


class PluginApi:
    """What a plugin may use: config, clock, threads, logging, events, accounts, scopes, state.

    One instance per application; hooks get it as ``api``, module functions as ``ctx.api``.
    Built by the application from the parts it delegates to: ``plugin_manager`` (to fire
    events), ``settings`` (the config), ``clock``, ``run_blocking``, ``directory`` (account
    look-ups), ``ip_restrictions``, ``ui_passwords``, ``scopes`` (the registry), ``storage``
    (the plugins' state table) and ``internal``, the application's
    :class:`apiserver.internal.InternalApi`, which only apiserver's built-in plugins reach
    (:func:`apiserver.internal.internal_api`).
    """

    def __init__(self, plugin_manager, settings, clock, run_blocking: Callable, *, directory, ip_restrictions,
                 ui_passwords, scopes, storage, internal=None):
        self._plugin_manager = plugin_manager
        self._settings = settings
        self._clock = clock
        self._run_blocking = run_blocking
        self._directory = directory
        self._ip_restrictions = ip_restrictions
        self._ui_passwords = ui_passwords
        self._scopes = scopes
        self._storage = storage
        self._internal = internal
        self._states: dict[str, PluginState] = {}

    # --- configuration and time -------------------------------------------------------------
    def config(self, section: str, key: str) -> Any:
        """The current, validated value of ``[section] key`` (a plugin's own keys or the core's).

        Read-only: values change only through ``config.ini`` or the ``cp.config`` scope.
        Raises :class:`apiserver.config.ConfigError` for an undeclared key.
        """
        self._settings.key(section, key)  # ConfigError naming an undeclared key
        return self._settings.get(section, key)

    @property
    def clock(self):
        """The clock every time-dependent part reads: ``seconds()``, ``callLater(delay, fn, ...)``.

        Tests drive a ``twisted.internet.task.Clock``; never read ``time.time()`` instead.
        """
        return self._clock

    # --- threads, logging, events -----------------------------------------------------------
    def run_blocking(self, fn: Callable, *args, **kwargs) -> defer.Deferred:
        """Run ``fn(*args, **kwargs)`` on the blocking pool; a Deferred fires with its result.

        For database work, files, network calls: anything that must not hold up the reactor.
        """
        return self._run_blocking(fn, *args, **kwargs)

    def every(self, interval: float, fn: Callable, *args) -> WorkTimer:
        """Run the blocking ``fn(*args)`` on the blocking pool every ``interval`` seconds of
        :attr:`clock`, the first run one interval from now; a :class:`apiserver.timers.WorkTimer`.

        Runs never overlap, and a due time that passes while one runs (a slow run, a test's
        ``clock.advance``) is run as soon as it ends.  ``stop()`` it in ``apiserver_shutdown``
        (it returns a Deferred that fires when a running run has ended); in tests, advance the
        clock and ``wait(timer.idle())``.  A run that raises is logged, the next one still runs.
        """
        timer = WorkTimer(self._clock, interval, lambda: fn(*args), self._run_blocking,
                          name=getattr(fn, "__qualname__", "plugin timer"))
        timer.start(now=False)
        return timer

    def logger(self, plugin: str) -> Logger:
        """A Twisted ``Logger`` in the namespace ``apiserver.plugins.<plugin>``.

        Use ``{name}`` placeholders (``log.info("sent {count}", count=3)``); never log secrets.
        """
        return Logger(namespace=f"apiserver.plugins.{_namespace(plugin)}")

    def fire(self, event: str, **kwargs: Any) -> None:
        """Call every plugin's implementation of the event hook ``event`` (``apiserver_...``).

        ``api`` is added; a plugin that raises is logged and the others still run.  Call it on
        the reactor thread.  ``ValueError`` for a hook that is not an event (its name ends in a
        past participle) or for arguments other than the hook's.
        """
        caller = getattr(self._plugin_manager.hook, event, None) if _EVENT.match(event) else None
        if caller is None or caller.spec is None:
            raise ValueError(f"{event} is not an event hook")
        takes = sorted(set(caller.spec.argnames) - {"api"})
        if sorted(kwargs) != takes:
            raise ValueError(f"{event} takes {', '.join(takes)}; got {', '.join(sorted(kwargs)) or 'nothing'}")
        fire_event(self._plugin_manager, self, event, kwargs)

    # --- accounts ---------------------------------------------------------------------------
    def get_identity(self, site: Optional[str], user: Optional[str] = None) -> Identity:
        """Blocking.  The appliance administrator (``site`` None), a site's administrator
        (``user`` None) or a user of a site; :class:`apiserver.errors.NotFound` if missing."""
        return self._directory.identity_for(site, user)

    def get_email(self, identity: Identity) -> Optional[str]:
        """Blocking.  The email address on record for ``identity``, or None."""
        return self._directory.get_email(identity)

    def recover_ui_password(self, session_id: str, tag_cookie: str) -> Optional[str]:
        """Blocking.  The password of the UI login that opened session ``session_id``, given the
        browser's ``esprit_tag`` cookie (single sign-on); None when it cannot be recovered.

        Only with ``[auth] retain_ui_password=true``; never log or store what it returns.
        """
        return self._ui_passwords.recover(session_id, tag_cookie)

    def invalidate_ip_restrictions(self, identity: Identity) -> defer.Deferred:
        """Reactor thread.  Call it after a plugin changed the account's IP restriction rows itself.

        This node forgets its cached entries at once (its next login reads them); the Deferred
        fires once the account has a new ``users.ip_restriction_generation``, after which every
        other node reads them within its ``[auth] ip_restriction_cache_ttl``.
        """
        return self._ip_restrictions.changed_elsewhere(identity.user_id)

    # --- scopes -----------------------------------------------------------------------------
    def get_scope(self, name: str, *selected) -> defer.Deferred:
        """A Deferred firing with the (masked) value of scope ``name``, as ``scope:get`` shows it.

        Scopes are added with the ``apiserver_add_scopes`` hook (see :class:`StoredScope`).
        """
        return self._scopes.get(self, name, *selected)

    # --- state ------------------------------------------------------------------------------
    def state(self, plugin: str) -> "PluginState":
        """The key/value store of ``plugin`` (use your plugin's name) in the server's database.

        Survives restarts, is shared by every node on the same database, and no other
        namespace sees it.  Its methods block.
        """
        namespace = _namespace(plugin)
        store = self._states.get(namespace)
        if store is None:
            store = self._states[namespace] = PluginState(self._storage, namespace, self._clock)
        return store


class PluginState:
    """A plugin's key/value store: JSON values under string keys, in the ``plugin_state`` table.

    Every method blocks (it talks to the database): call it through ``api.run_blocking`` or
    from a blocking module function.  Works the same on SQLite, PostgreSQL and MariaDB.
    """

    def __init__(self, storage, plugin: str, clock):
        self._storage = storage
        self._table = storage.tables.plugin_state
        self.plugin = plugin
        self._clock = clock

    def get(self, key: str, default: Any = None) -> Any:
        """Blocking.  The value stored under ``key``, or ``default``."""
        table = self._table
        with self._storage.read() as conn:
            text = conn.execute(sa.select(table.c.value).where(
                table.c.plugin == self.plugin, table.c.key == _key(key))).scalar()
        return default if text is None else json.loads(text)

    def set(self, key: str, value: Any) -> None:
        """Blocking.  Store ``value`` (anything ``json.dumps`` accepts) under ``key``, replacing it.

        Raises ``TypeError``/``ValueError`` for a value JSON cannot hold, before storing anything.
        """
        from apiserver.storage import utcnow

        key = _key(key)
        text = json.dumps(value, allow_nan=False, sort_keys=True)
        values = {"plugin": self.plugin, "key": key, "value": text, "updated_at": utcnow(self._clock)}
        for attempt in range(3):
            try:
                with self._storage.write() as conn:
                    conn.execute(_upsert(conn.dialect.name, self._table, values))
                return
            except sa.exc.DBAPIError as exc:
                # MariaDB may pick one of several writers of the same new key as a deadlock
                # victim; the statement is idempotent, so running it again is the fix.
                if attempt == 2 or not _is_deadlock(exc):
                    raise

    def delete(self, key: str) -> bool:
        """Blocking.  Remove ``key``; True if it existed."""
        table = self._table
        with self._storage.write() as conn:
            return conn.execute(table.delete().where(
                table.c.plugin == self.plugin, table.c.key == _key(key))).rowcount > 0

    def keys(self, prefix: str = "") -> list[str]:
        """Blocking.  The stored keys starting with ``prefix``, sorted."""
        table = self._table
        with self._storage.read() as conn:
            found = conn.execute(sa.select(table.c.key).where(table.c.plugin == self.plugin)).scalars()
            return sorted(k for k in found if k.startswith(prefix))


class StoredScope(Scope):
    """A scope whose value lives in the plugin's state store, so it survives restarts.

    Set ``name``, ``type``, ``default``, ``help`` (as for any :class:`apiserver.scopes.Scope`),
    ``plugin`` (the state namespace) and ``spec``, the :class:`apiserver.types.TypeSpec` the
    value is converted to (``scope:set`` from cpcmd sends text like ``"5"``, SOAP a typed
    value); override :meth:`check` to refuse values with a reason.  ``get``/``set`` run on the
    blocking pool, as the scope registry calls them.
    """

    plugin: str = ""
    spec: TypeSpec = TypeSpec("string")

    def __init__(self, api: PluginApi):
        self.api = api

    def check(self, value: Any) -> None:
        """Raise :class:`apiserver.errors.InvalidArgument` naming the reason for a bad value."""

    def current(self) -> Any:
        """Blocking.  The stored value, or ``default`` when none was set."""
        return self.api.state(self.plugin).get(f"scope:{self.name}", self.default)

    def get(self, api, *selected) -> Any:
        return self.current()

    def set(self, api, actor, value) -> None:
        if value is None and not self.spec.nullable:
            raise InvalidArgument(f"{self.name} needs a value")
        converted = coerce(value, self.spec, self.name)
        self.check(converted)
        self.api.state(self.plugin).set(f"scope:{self.name}", converted)


def _upsert(dialect: str, table: sa.Table, values: dict):
    """One statement that inserts the row or replaces the value of the existing one."""
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(table).values(**values)
        return stmt.on_duplicate_key_update(value=stmt.inserted.value, updated_at=stmt.inserted.updated_at)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(**values)
    return stmt.on_conflict_do_update(index_elements=[table.c.plugin, table.c.key],
                                      set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at})


def _is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    code = exc.orig.args[0] if getattr(exc.orig, "args", None) else None
    return code in (1213, 1205)  # MySQL/MariaDB: deadlock, lock wait timeout


def _namespace(plugin: str) -> str:
    if not isinstance(plugin, str) or not _NAMESPACE.match(plugin):
        raise ValueError(f"plugin name {plugin!r}: use 1-100 lower-case letters, digits, '.', '-' or '_'")
    return plugin


def _key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"state key {str(key)[:60]!r}: use a non-empty string of at most {MAX_KEY_LENGTH} characters")
    return key
