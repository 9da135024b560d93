"""config.ini: ApisCP-style sections, read once, validated, with defaults.

Every key is declared here (or by a plugin through ``apiserver_config_sections``) with a type,
a default and help text.  A bad value stops start-up with :class:`ConfigError` naming the
section and key.  Values that the server can apply at run time (``[soap] enabled``,
``[anvil]``, ``[frontend] https_only``, ``[auth]`` limits) are read from the live
:class:`Config` on every use, so ``Config.set`` (the ``cp.config`` scope) takes effect at once.
"""

from __future__ import annotations

import configparser
import os
from typing import Any, Callable, Iterable, Optional

from apiserver.addresses import is_host
from apiserver.config_sections import BUILTIN_SECTIONS
from apiserver.config_values import (  # noqa: F401  (re-exported: plugins declare keys with these)
    Key, Section, choice, int_range, parse_bool, parse_host, parse_names, parse_networks, parse_plan_name,
    parse_str, parse_system_user_or_auto,
)

ENV_VAR = "APISERVER_CONFIG"


class ConfigError(Exception):
    """A config value is invalid; the message names ``[section] key``."""

    def __init__(self, section: str, key: str, reason: str):
        # "-" stands for no key (a whole section) or no section (the whole file).
        where = "" if section == "-" else f"[{section}]: " if key == "-" else f"[{section}] {key}: "
        super().__init__(f"{where}{reason}")
        self.section, self.key, self.reason = section, key, reason


class Config:
    """The validated configuration, live: ``get`` reads the current value, ``set`` changes it."""

    def __init__(self, sections: Iterable[Section], raw: dict, path: Optional[str]):
        self.path = os.path.abspath(path) if path else None
        self.sections = {s.name: s for s in sections}
        self._keys = {(s.name, k.name): k for s in self.sections.values() for k in s.keys}
        self._raw: dict = {}
        self._values: dict = {}
        self._observers: list = []
        for (section, name), key in self._keys.items():
            value = raw.get(section, {}).get(name, key.default)
            self._store(section, name, key, value)

    # reading -------------------------------------------------------------------------------
    def get(self, section: str, key: str) -> Any:
        return self._values[section, key]

    def raw(self, section: str, key: str) -> str:
        return self._raw[section, key]

    def key(self, section: str, key: str) -> Key:
        try:
            return self._keys[section, key]
        except KeyError:
            raise ConfigError(section, key, "no such key") from None

    def items(self):
        """((section, key), value) for every key, in declaration order."""
        return self._values.items()

    @property
    def base_dir(self) -> str:
        return os.path.dirname(self.path) if self.path else os.getcwd()

    @property
    def state_dir(self) -> str:
        return os.path.normpath(os.path.join(self.base_dir, self.get("core", "state_dir")))

    @property
    def plans_dir(self) -> str:
        """``[plans] dir`` relative to the config file, or the plans shipped with apiserver."""
        configured = self.get("plans", "dir")
        return os.path.normpath(os.path.join(self.base_dir, configured)) if configured else SHIPPED_PLANS

    def state_path(self, name: str) -> str:
        """A path relative to ``state_dir`` (absolute paths are kept)."""
        return os.path.join(self.state_dir, name)

    # changing ------------------------------------------------------------------------------
    def validate(self, section: str, key: str, raw: str) -> Any:
        """Parse ``raw`` for ``[section] key`` or raise ConfigError; changes nothing."""
        spec = self.key(section, key)
        try:
            return spec.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(section, key, str(exc)) from None

    def set(self, section: str, key: str, raw: str) -> Any:
        """Validate and apply a value in memory; observers are told.  Returns the parsed value."""
        spec = self.key(section, key)
        old = self._values[section, key]
        value = self._store(section, key, spec, raw)
        for observer in list(self._observers):
            observer(section, key, old, value)
        return value

    def observe(self, callback: Callable[[str, str, Any, Any], None]) -> None:
        """Call ``callback(section, key, old, new)`` after every ``set``."""
        self._observers.append(callback)

    def _store(self, section: str, name: str, key: Key, raw: str) -> Any:
        try:
            value = key.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(section, name, str(exc)) from None
        self._raw[section, name] = str(raw)
        self._values[section, name] = value
        return value


#: The plans shipped with apiserver (``[plans] dir`` empty).
SHIPPED_PLANS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lifecycle", "plan_files")
#: Where an installed server keeps its config (the systemd unit names it too).
SYSTEM_PATH = "/etc/apiserver/config.ini"
#: The checkout's shipped config, found from this file, never from the working directory: the
#: reference of every key and its default, tracked in git and never written by the server.
CHECKOUT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "config.ini")
#: A checkout's local settings, kept out of git in its state folder (``apiserver init`` writes it;
#: ``scripts/serve.sh --port N``, ``apiserver set`` and ``cpcmd scope:set`` change it).
LOCAL_PATH = os.path.join(os.path.dirname(os.path.dirname(CHECKOUT_PATH)), "state", "config.ini")
#: state_dir written into a new config outside a checkout (the unit's StateDirectory).
SYSTEM_STATE_DIR = "/var/lib/apiserver"
#: The lookup order, as ``--help`` says it.
LOOKUP_ORDER = ("--config FILE, else $APISERVER_CONFIG, else /etc/apiserver/config.ini when it exists, "
                "else the checkout's local state/config.ini (its settings; conf/config.ini is the reference)")


def config_path(explicit: Optional[str] = None) -> str:
    """The config file: ``--config``, else ``$APISERVER_CONFIG``, else ``/etc/apiserver/config.ini``
    when it exists, else in a checkout its local ``state/config.ini`` (which ``apiserver init``
    writes; the tracked ``conf/config.ini`` is only read through ``--config``), else
    ``/etc/apiserver/config.ini`` (which ``apiserver init`` then writes)."""
    if explicit:
        return os.path.abspath(explicit)
    if os.environ.get(ENV_VAR):
        return os.path.abspath(os.environ[ENV_VAR])
    if os.path.exists(SYSTEM_PATH):
        return SYSTEM_PATH
    if os.path.exists(CHECKOUT_PATH):
        return LOCAL_PATH
    return SYSTEM_PATH


def cross_check(config: "Config") -> None:
    """The checks that span keys, for start-up and for ``cp.config`` alike: ConfigError naming
    the section and key when the listeners would clash, ``[frontend] bind`` is not an address
    of this host (:func:`check_listenable`), a TLS certificate is given without its key (or
    a key without one), or ``[plans] dir`` holds no file of the ``[plans] default`` plan."""
    http_port, https_port = config.get("frontend", "http_port"), config.get("frontend", "https_port")
    if http_port and http_port == https_port:
        raise ConfigError("frontend", "https_port",
                          f"equals http_port ({http_port}); both listeners cannot share a port")
    cert, key = config.get("frontend", "tls_certificate"), config.get("frontend", "tls_key")
    if https_port and cert and not key:
        raise ConfigError("frontend", "tls_key",
                          f"empty, but tls_certificate is set ({cert}); give the certificate's private key")
    if https_port and key and not cert:
        raise ConfigError("frontend", "tls_certificate",
                          f"empty, but tls_key is set ({key}); give the certificate for it")
    plans, default = config.plans_dir, config.get("plans", "default")
    if not os.path.isdir(plans):
        raise ConfigError("plans", "dir", f"{plans} is not a folder")
    if not os.path.isfile(os.path.join(plans, default + ".ini")):
        raise ConfigError("plans", "default", f"no plan file {default}.ini in {plans}")
    bind = config.get("frontend", "bind")
    if not is_host(bind):
        raise ConfigError("frontend", "bind", f"{bind!r} is neither an IP address nor a host name")
    if http_port or https_port:
        check_listenable(config)


def check_listenable(config: "Config", ports: Iterable[int] = ()) -> None:
    """ConfigError naming the key unless ``[frontend] bind`` is an address of this host and each of
    ``ports`` is free to listen on there (a port another program holds, or one below 1024 without
    the right, would stop a start).  The one probe of both start-up and ``cp.config``."""
    import socket

    bind = config.get("frontend", "bind")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET  # as twisted's listenTCP chooses
    keys = {config.get("frontend", key): key for key in ("https_port", "http_port")}
    for port in (0, *ports):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a listener sets it
            try:
                probe.bind((bind, port))
            except OSError as exc:
                reason = exc.strerror or exc
                if not port:
                    raise ConfigError("frontend", "bind",
                                      f"cannot listen on {bind}: not an address of this host ({reason})") from None
                raise ConfigError("frontend", keys.get(port, "http_port"),
                                  f"cannot listen on {bind} port {port}: {reason}") from None


#: What a secret value is shown as.
MASK = "********"


def mask_secret(value: Any, reveal: int = 0) -> Any:
    """Hide a secret: empty stays empty; otherwise ``********`` plus its last ``reveal`` characters.

    Characters are revealed only from a value at least three times as long, so short secrets
    are always hidden whole.
    """
    if value in (None, ""):
        return value
    text = str(value)
    if reveal and len(text) >= 3 * reveal:
        return MASK + text[-reveal:]
    return MASK


def secret_values(config: "Config") -> list:
    """``(section, key)`` of every secret key that holds a secret: a non-empty value, and for a
    URL (``redis_url``, ``[db] url``) one with a password in it."""
    from urllib.parse import urlsplit

    found = []
    for (section, name), key in config._keys.items():
        raw = config.raw(section, name).strip()
        if not key.secret or not raw:
            continue
        if name.endswith("url"):
            try:
                if not urlsplit(raw).password:
                    continue
            except ValueError:
                pass
        found.append((section, name))
    return found


def reread_config(config: "Config", path: Optional[str] = None) -> "Config":
    """Blocking.  ``path`` (default: ``config``'s own file) read and validated with the same
    sections, plugins' included, as ``config``: what the next start would run with."""
    return load_config(path or config.path, [s for s in config.sections.values() if s not in BUILTIN_SECTIONS])


def changed_keys(running: "Config", fresh: "Config") -> list:
    """``(section, key)`` of every key whose value in ``fresh`` differs from ``running``."""
    return [(section, key) for (section, key), value in fresh.items() if value != running.get(section, key)]


def load_config(path: Optional[str], extra_sections: Iterable[Section] = ()) -> Config:
    """Read and validate ``path`` (a missing file means all defaults only when ``path`` is None).

    Unknown sections or keys are refused too: a typo must not silently leave a default in force.
    """
    sections = list(BUILTIN_SECTIONS) + list(extra_sections)
    known = {s.name: {k.name for k in s.keys} for s in sections}
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # keys are case-sensitive, as in ApisCP
    if path is not None:
        if not os.path.exists(path):
            raise ConfigError("-", "-", f"config file {path} does not exist (apiserver init writes one)")
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError("-", "-", f"{path} is not a valid ini file: {exc}") from None
    raw: dict = {}
    for section in parser.sections():
        if section not in known:
            raise ConfigError(section, "-", f"unknown section in {path}")
        for name, value in parser.items(section):
            if name not in known[section]:
                raise ConfigError(section, name, f"unknown key in {path}")
            raw.setdefault(section, {})[name] = value
    return Config(sections, raw, path)


def render_ini(sections: Iterable[Section] = BUILTIN_SECTIONS, values: Optional[dict] = None) -> str:
    """The shipped ``conf/config.ini``: every key with its help as a comment and its default
    (or the value ``values[(section, key)]``, which ``apiserver init`` uses for state_dir).

    ``tests/test_config.py`` fails when the committed file drifts from this.
    """
    values = values or {}
    lines = [
        "; apiserver configuration (ApisCP-style sections).",
        "; Every key is optional; the value shown is the default. A bad value stops start-up",
        "; with an error naming the section and key. Keys marked (run time) can also be changed",
        "; while the server runs: cpcmd scope:set cp.config SECTION KEY VALUE",
        "; In a checkout, conf/config.ini is only this reference (tracked, never written): its settings",
        "; live in state/config.ini (scripts/serve.sh --port N, apiserver set SECTION KEY VALUE).",
        "",
    ]
    for section in sections:
        lines.append(f"; {section.help}")
        lines.append(f"[{section.name}]")
        for key in section.keys:
            note = " (run time)" if key.runtime else ""
            lines.append(f"; {key.help}{note} [{key.type_name}]")
            lines.append(f"{key.name} = {values.get((section.name, key.name), key.default)}")
        lines.append("")
    return "\n".join(lines)


def render_markdown(sections: Iterable[Section] = BUILTIN_SECTIONS) -> str:
    """The README's config reference table (one row per key)."""
    rows = ["| section | key | default | type | what it does |", "| --- | --- | --- | --- | --- |"]
    for section in sections:
        for key in section.keys:
            note = " Changeable at run time." if key.runtime else ""
            default = f"`{key.default}`" if key.default else "(empty)"
            rows.append(f"| [{section.name}] | `{key.name}` | {default} | {key.type_name} | {key.help}{note} |")
    return "\n".join(rows)
