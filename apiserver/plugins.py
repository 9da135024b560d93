"""The plugin manager: built-in plugins and installed ones, through the same hooks; and
:class:`PluginHooks`, which calls them with the plugin API.

Installed plugins are found through entry points in the group ``apiserver.plugins``.  A
plugin that cannot be imported, names a hook that does not exist, asks a hook for an argument
it does not get (``app``: use ``api``) or implements an event as a wrapper stops start-up with
one :class:`PluginError` line naming the plugin and the reason; ``[core] disabled_plugins``
(entry point or distribution names) skips plugins before they are imported.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import importlib
import importlib.metadata
import os
import inspect
import re
from typing import Any, Callable, Iterable, Optional

import pluggy
from twisted.internet import defer
from twisted.logger import Logger

from apiserver import hookspecs
from apiserver.config import load_config, parse_names

ENTRY_POINT_GROUP = "apiserver.plugins"

#: Built-in plugins, registered exactly like third-party ones.
BUILTIN_PLUGINS = (
    "apiserver.dispatch",
    "apiserver.modules.common",
    "apiserver.modules.admin",
    "apiserver.modules.user",
    "apiserver.modules.auth",
    "apiserver.modules.misc",
    "apiserver.modules.scope",
    "apiserver.modules.security",
    "apiserver.modules.rampart",
    "apiserver.modules.site",
    "apiserver.modules.databases",
    "apiserver.events",
)

#: The hooks that take ``@hookimpl(wrapper=True)`` implementations.  Events are called one
#: implementation at a time by :func:`fire_event` (so one failing plugin cannot stop the
#: others), which has no place for a wrapper: refusing it is honest, running it half is not.
WRAPPER_HOOKS = frozenset({"apiserver_call"})

#: What a hook implementation asking for ``app`` (the whole application, which hooks received
#: before the plugin API was their one surface) is told.
NO_APP = ("asks for 'app', which hooks no longer receive; take 'api' instead "
          "(apiserver.plugin_api.PluginApi, the plugin API: see docs/plugins.md)")

log = Logger(namespace="apiserver.plugins")


class PluginError(Exception):
    """A plugin cannot be used; the message is one line naming the plugin and the reason."""


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``apiserver plugins`` lists it."""

    name: str                    # entry point name (built-ins: the module name)
    distribution: str            # the installed distribution that provides it
    version: str
    target: str                  # what the entry point names (``apiserver_example``)
    builtin: bool = False
    disabled: bool = False       # named in [core] disabled_plugins: not imported

    def describe(self) -> str:
        """``example: apiserver-example 0.1.0 (apiserver_example)``."""
        where = "built-in" if self.builtin else self.target
        state = ", disabled by [core] disabled_plugins" if self.disabled else ""
        return f"{self.name}: {self.distribution} {self.version} ({where}{state})"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with apiserver's hookspecs, checking every plugin as it is registered.

    ``plugins`` lists what was registered or skipped, in order, as :class:`PluginInfo`.
    """

    def __init__(self):
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []

    def register(self, plugin, name: Optional[str] = None):
        """Register ``plugin``; :class:`PluginError` for an unknown hook, an implementation asking
        for ``app`` or a refused wrapper."""
        for hook in self._hooks_asking_for_app(plugin):
            raise PluginError(f"plugin {name or self.get_canonical_name(plugin)}: {hook} {NO_APP}")
        try:
            result = super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or self.get_canonical_name(plugin)}: {_validation_reason(exc)}") from None
        if result is None:  # blocked
            return None
        problem = self._problem(plugin)
        if problem:
            self.unregister(plugin)
            raise PluginError(f"plugin {result}: {problem}")
        return result

    def _hooks_asking_for_app(self, plugin) -> list:
        """The hooks ``plugin`` implements with an argument named ``app``."""
        found = []
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            try:
                names = inspect.signature(getattr(plugin, attr)).parameters
            except (TypeError, ValueError):
                continue
            if "app" in names:
                found.append(opts.get("specname") or attr)
        return found

    def _problem(self, plugin) -> Optional[str]:
        for caller in self.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if caller.spec is None and not impl.optionalhook:
                    close = difflib.get_close_matches(caller.name, _spec_names(), n=1)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    return f"{caller.name} is not an apiserver hook{hint}"
                if (impl.wrapper or impl.hookwrapper) and caller.name not in WRAPPER_HOOKS:
                    return (f"{caller.name} cannot be implemented as a wrapper (only "
                            f"{', '.join(sorted(WRAPPER_HOOKS))} can); use a plain @hookimpl")
        return None

    def load_entrypoint_plugins(self, disabled: Iterable[str] = ()) -> None:
        """Import and register every installed plugin not named in ``disabled``."""
        disabled = set(disabled)
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["Name"] or "?"
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                    continue
                if any(p.name == ep.name for p in self.plugins):  # listed twice (an editable install)
                    continue
                info = PluginInfo(ep.name, dist_name, dist.version or "?", ep.value,
                                  disabled=bool({ep.name, dist_name} & disabled))
                self.plugins.append(info)
                if info.disabled:
                    continue
                label = f"plugin {ep.name} ({dist_name} {info.version})"
                try:
                    plugin = ep.load()
                except Exception as exc:  # any import-time error of the plugin's code
                    raise PluginError(f"{label}: cannot import {ep.value}: "
                                      f"{type(exc).__name__}: {_first_line(exc)}") from None
                try:
                    self.register(plugin, name=ep.name)
                except PluginError as exc:
                    raise PluginError(f"{label}: {str(exc).split(': ', 1)[-1]}") from None
                except ValueError as exc:  # registered twice under another name
                    raise PluginError(f"{label}: {_first_line(exc)}") from None

    def third_party(self) -> list[PluginInfo]:
        """The installed plugins (loaded or disabled), without the built-ins."""
        return [p for p in self.plugins if not p.builtin]


def make_plugin_manager(load_entrypoints: bool = True, extra: Iterable[object] = (),
                        disabled: Iterable[str] = ()) -> PluginManager:
    """Build a fresh plugin manager with the hookspecs, the built-ins and installed plugins.

    ``extra`` objects (tests, embedding code) are registered after the built-ins; installed
    plugins named in ``disabled`` are skipped.  Raises :class:`PluginError`.
    """
    from apiserver import __version__

    pm = PluginManager()
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
        pm.plugins.append(PluginInfo(name, "apiserver", __version__, name, builtin=True))
    if load_entrypoints:
        pm.load_entrypoint_plugins(disabled)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()  # already checked per plugin; kept for plugins registered by other means
    return pm


def fire_event(plugin_manager, api, event: str, kwargs: dict) -> list:
    """Call every implementation of the event hook ``event`` with ``api`` and ``kwargs``.

    Unlike a plain hook call, a plugin that raises is logged and the plugins after it still
    run; the action that caused the event stands.  Must be called on the reactor thread.
    Wrapper implementations are refused at registration (:class:`PluginManager`), so every
    implementation of an event is a plain function called here.  Returns what the
    implementations that did not raise returned (``apiserver_shutdown``: Deferreds).
    """
    kwargs["api"] = api
    results = []
    for impl in reversed(getattr(plugin_manager.hook, event).get_hookimpls()):  # pluggy's own order
        if impl.wrapper or impl.hookwrapper:  # only a manager that bypassed PluginManager lets one in
            log.error("plugin {plugin}: {event} cannot be implemented as a wrapper; not called",
                      plugin=impl.plugin_name, event=event)
            continue
        try:
            result = impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception:
            log.failure("plugin {plugin} failed in {event}", plugin=impl.plugin_name, event=event)
            continue
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda failure, plugin=impl.plugin_name: log.failure(
                "plugin {plugin} failed in {event}", failure, plugin=plugin, event=event))
        results.append(result)
    return results


class PluginHooks:
    """How apiserver calls the plugins: every hook gets ``api``, the plugin API.

    ``fire`` calls an event hook (each implementation on its own, see :func:`fire_event`);
    ``call`` a decision hook (the first answer wins) or a collecting hook (a list of answers).
    """

    def __init__(self, plugin_manager, api):
        self._plugin_manager = plugin_manager
        self._api = api

    def fire(self, event: str, **kwargs: Any) -> list:
        """Call the event hook ``event`` with ``kwargs``; see :func:`fire_event`.  Reactor thread."""
        return fire_event(self._plugin_manager, self._api, event, kwargs)

    def call(self, hook: str, **kwargs: Any):
        """The answer of hook ``hook`` called with ``kwargs`` (pluggy's: firstresult or a list)."""
        return getattr(self._plugin_manager.hook, hook)(api=self._api, **kwargs)

    def implemented(self, hook: str) -> bool:
        """Some plugin implements hook ``hook`` (else calling it would answer nothing)."""
        return bool(getattr(self._plugin_manager.hook, hook).get_hookimpls())

    def collect(self, hook: str) -> list:
        """The items of every implementation's list answer of a collecting hook, in one list."""
        return [item for group in self.call(hook) for item in group]


def plugin_sections(pm) -> list:
    """The config sections the plugins add (``apiserver_config_sections``), in one list."""
    return [section for group in pm.hook.apiserver_config_sections() for section in group]


def read_disabled_plugins(path: Optional[str]) -> tuple:
    """``[core] disabled_plugins`` read straight from the file, before plugins load.

    The config is validated only after plugins contributed their sections, but which plugins
    load must be known first.  An unreadable file gives () here; load_config reports it.
    """
    if not path or not os.path.exists(path):
        return ()
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError):
        return ()
    return parse_names(parser.get("core", "disabled_plugins", fallback=""))


def load_plugins_and_config(config_path: Optional[str], *, plugin_manager=None, load_entrypoints: bool = True,
                            extra: Iterable[object] = (),
                            if_missing: Optional[Callable[[list], None]] = None) -> tuple:
    """The start-up sequence: ``(plugin_manager, config)`` for the config file ``config_path``.

    Unless ``plugin_manager`` is given, one is built with :func:`make_plugin_manager`
    (``load_entrypoints`` and ``extra`` passed on), skipping the installed plugins that
    ``[core] disabled_plugins`` in the file names (:func:`read_disabled_plugins`).  Then the
    file is read and validated with the plugins' sections (:func:`plugin_sections`) by
    :func:`~apiserver.config.load_config`.

    ``config_path`` is used as given: callers resolve ``--config`` first
    (:func:`apiserver.config.config_path`); ``None`` means all defaults, and a path that does
    not exist is a :class:`~apiserver.config.ConfigError` -- unless ``if_missing`` is given:
    it is then called with the plugins' sections before the file is read (``apiserver init``
    writes the default config there), so installed plugins are loaded only once.  Raises
    :class:`PluginError` and :class:`~apiserver.config.ConfigError`.
    """
    pm = plugin_manager
    if pm is None:
        pm = make_plugin_manager(load_entrypoints=load_entrypoints, extra=extra,
                                 disabled=read_disabled_plugins(config_path))
    sections = plugin_sections(pm)
    if if_missing is not None and config_path is not None and not os.path.exists(config_path):
        if_missing(sections)
    return pm, load_config(config_path, sections)


def log_loaded_plugins(pm) -> None:
    """Log each installed plugin with its version (and each disabled one), once at start-up."""
    plugins = getattr(pm, "plugins", [])
    for info in plugins:
        if info.builtin:
            continue
        if info.disabled:
            log.info("plugin {name} ({dist} {version}) disabled by [core] disabled_plugins",
                     name=info.name, dist=info.distribution, version=info.version)
        else:
            log.info("plugin {name} loaded: {dist} {version} ({target})",
                     name=info.name, dist=info.distribution, version=info.version, target=info.target)
    builtin = [p for p in plugins if p.builtin]
    if builtin:
        log.info("{count} built-in plugins of apiserver {version}", count=len(builtin), version=builtin[0].version)


def _spec_names() -> list:
    return [name for name in vars(hookspecs) if name.startswith("apiserver_")]


def _validation_reason(exc: pluggy.PluginValidationError) -> str:
    """pluggy's several-line message as one line: the hook and the last line's reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    hook = re.search(r"for hook '(\w+)'", lines[0]) if lines else None
    reason = lines[-1] if lines else type(exc).__name__
    return f"{hook.group(1)}: {reason}" if hook else reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
