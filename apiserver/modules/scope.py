"""The ``scope`` module and the built-in scopes.

``scope:set NAME ARG...`` is variadic in ApisCP (``scope_set('cp.config', 'frontend',
'https_only', true)``).  Here it is declared with three optional ``Any`` arguments after the
name, so positional calls from PHP SoapClient, SOAP::Lite, XML-RPC and cpcmd all bind the
same way; trailing nulls count as absent.  A client may instead pass all arguments as one
list (``scope_set('cp.config', ['frontend', 'https_only', true])``).

Where each built-in scope keeps its value:

* ``cp.config``, ``cp.api`` (``[soap] enabled``), ``cp.debug`` (``[core] debug``) and
  ``auth.geoip-key`` (``[geoip] account_id``/``license_key``): ``config.ini``, edited
  atomically, and the live config for keys that apply at run time.
* ``apache.dav``: ``[dav] enabled`` in ``config.ini`` (``/dav/`` switches at once), mirrored
  to the Bootstrapper variable ``apache_dav_enabled``.
* ``cp.bootstrapper``, ``apache.insecure-ssl``, ``mail.insecure-ssl``: the
  Bootstrapper variables in ``state_dir/bootstrapper.json`` (0600, replaced atomically).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import stat
from typing import Any, Optional

from apiserver.config import BUILTIN_SECTIONS, Config, ConfigError, cross_check, reread_config, secret_values
from apiserver.config_file import atomic_write, check_value_text, format_value, set_values
from apiserver.errors import InvalidArgument, NotFound, ServerError
from apiserver.hookspecs import hookimpl
from apiserver.module import Module, Role, export
from apiserver.scopes import Scope, mask_secret
from apiserver.types import BOOLEAN, INT, TypeSpec, coerce

BOOL = TypeSpec(BOOLEAN)


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


class ScopeModule(Module):
    """Read and change scopes: named run-time settings of the appliance."""

    name = "scope"

    @export(roles=Role.ADMIN, name="list")
    async def list_scopes(self, ctx, filter: Optional[str] = None) -> list[str]:
        """Names of the scopes matching FILTER (a word: names containing it; a glob such as ``cp.*``), or all."""
        return self.app.scopes.names(filter)

    @export(roles=Role.ADMIN, name="get")
    async def get_scope(self, ctx, name: str, arg1: Any = None, arg2: Any = None, arg3: Any = None) -> Any:
        """Value of scope NAME; ARGs select a part (``scope:get cp.config frontend https_only``)."""
        args = _spread(self.app.scopes.scope(name), (arg1, arg2, arg3), for_set=False)
        return await self.api.get_scope(name, *args)

    @export(roles=Role.ADMIN, name="set")
    async def set_scope(self, ctx, name: str, arg1: Any = None, arg2: Any = None, arg3: Any = None) -> Any:
        """Set scope NAME: ARGs are its selectors then the value (``scope:set cp.config frontend https_only true``).

        True when the change is in force; for a config key that needs a restart, a text saying so.
        """
        scope = self.app.scopes.scope(name)
        args = _spread(scope, (arg1, arg2, arg3), for_set=True)
        await self.app.scopes.set(name, ctx.identity, *args)
        if isinstance(scope, ConfigScope):
            section, key = args[0], args[1]
            if not self.app.config.key(section, key).runtime:
                return (f"saved to config.ini; [{section}] {key} takes effect after a restart "
                        f"(the running server keeps {_show(plain_value(self.app.config, section, key))})"
                        if not self.app.config.key(section, key).secret else
                        f"saved to config.ini; [{section}] {key} takes effect after a restart")
        return True

    @export(roles=Role.ADMIN, name="info")
    async def info(self, ctx, name: str) -> ScopeInfo:
        """Value (as saved), running value, default, type, help text and allowed values of scope NAME,
        and the saved config keys that take effect only after a restart."""
        scope = self.app.scopes.scope(name)
        info = await self.app.scopes.info(name)
        running = getattr(scope, "running", None)
        info["running"] = scope.mask(running(self.app)) if running is not None else info["value"]
        if isinstance(scope, (ConfigScope, ConfigFlagScope, GeoipKeyScope)):
            from apiserver.service import pending_restart

            pending = await self.api.run_blocking(pending_restart, self.app)
            info["restart_needed"] = sorted(k for k in pending if not self.app.config.key(*k[1:].split("] ")).runtime)
        return ScopeInfo(**info)


def _spread(scope: Scope, values: tuple, for_set: bool) -> tuple:
    """The scope's arguments: trailing nulls dropped; a lone list stands for all of them."""
    values = list(values)
    while values and values[-1] is None:
        values.pop()
    if len(values) == 1 and isinstance(values[0], (list, tuple)) and scope.selectors:
        wanted = len(scope.selectors) + 1 if for_set else len(scope.selectors)
        if 0 < len(values[0]) <= wanted:
            values = list(values[0])
    return tuple(values)


@hookimpl
def apiserver_add_modules(app):
    """The ``scope`` module."""
    return [ScopeModule]


@hookimpl
def apiserver_add_scopes(app):
    """The built-in scopes."""
    return [
        ConfigScope(app.config),
        ConfigFlagScope("cp.api", "soap", "enabled",
                        "Serve the SOAP and XML-RPC API ([soap] enabled); false answers every API URL with 403."),
        ConfigFlagScope("cp.debug", "core", "debug", "Debug logging ([core] debug), switched at once."),
        BootstrapperScope(),
        DavScope(),
        BootstrapperFlagScope("apache.insecure-ssl", ("apache_insecure_ssl",),
                              "Allow TLSv1.0/v1.1 in Apache (SSLv2/SSLv3 stay disabled)."),
        BootstrapperFlagScope("mail.insecure-ssl", MAIL_INSECURE_SSL_VARS,
                              "Allow TLSv1.0/v1.1 for mail: sets the Bootstrapper variables "
                              + ", ".join(MAIL_INSECURE_SSL_VARS) + " together."),
        GeoipKeyScope(),
    ]


# --- config.ini -----------------------------------------------------------------------------

#: Keys that would point the server at other state or lock every key out; edit config.ini and run init.
PROTECTED_KEYS = {
    ("auth", "secret"): "it encrypts the stored API keys; changing it at run time would lock every client out",
    ("core", "state_dir"): "it names the database and certificate; edit config.ini and run 'apiserver init'",
    ("db", "url"): "it names the database; edit config.ini and run 'apiserver init'",
}


def file_config(app) -> Config:
    """config.ini as the next start will read it (the live config when the app has no file)."""
    if app.config.path is None:
        return app.config
    try:
        return reread_config(app.config)
    except ConfigError as exc:
        raise ServerError(f"{app.config.path} cannot be read: {exc}") from None


def plain_value(config: Config, section: str, key: str) -> Any:
    """A config value as a client sees it: bools and ints typed, networks as their text."""
    value = config.get(section, key)
    return config.raw(section, key).strip() if isinstance(value, tuple) else value


def write_config(app, edits) -> None:
    """Validate ``(section, key, value)`` edits like start-up does and write them to config.ini at once.

    Raises InvalidArgument naming the key and the reason; config.ini is then untouched.
    """
    if app.config.path is None:
        raise ServerError("this server was started without a config file; there is nothing to edit")
    texts = []
    for section, key, value in edits:
        try:
            app.config.key(section, key)
        except ConfigError as exc:
            raise InvalidArgument(f"cp.config: {exc}") from None
        if (section, key) in PROTECTED_KEYS:
            raise InvalidArgument(f"cp.config: [{section}] {key} cannot be changed by a scope: {PROTECTED_KEYS[section, key]}")
        if isinstance(value, dict):
            raise InvalidArgument(f"cp.config: [{section}] {key}: expected a single value, got a hash")
        text = format_value(value)
        try:
            check_value_text(text)
            app.config.validate(section, key, text)
        except ValueError as exc:
            raise InvalidArgument(f"cp.config: [{section}] {key}: {exc}") from None
        except ConfigError as exc:
            raise InvalidArgument(f"cp.config: {exc}") from None
        texts.append((section, key, text))
    set_values(app.config.path, texts, check=lambda candidate: check_startable(app, candidate),
               mode=_private_mode_if_secret(app, texts))


def _private_mode_if_secret(app, texts) -> Optional[int]:
    """0600 (or tighter) when config.ini will hold a secret (a licence key, an SMTP password, a
    Redis URL with a password), so no other user can read it; None keeps the file's mode."""
    holds = any(app.config.key(section, key).secret and text for section, key, text in texts)
    if not holds:
        holds = bool(secret_values(file_config(app)))
    if not holds:
        return None
    try:
        current = os.stat(app.config.path).st_mode & 0o7777
    except OSError:
        return 0o600
    return current & 0o700 or 0o600


def check_startable(app, path: str) -> None:
    """Refuse (InvalidArgument) a candidate config file that would stop the server starting."""
    try:
        config = reread_config(app.config, path)
        cross_check(config)  # what start-up checks too
        check_listenable(app, config)
        check_cli_socket(app, config)
        if config.get("frontend", "tls_certificate") or config.get("frontend", "tls_key"):
            from apiserver.transport.tls import ensure_certificate

            ensure_certificate(config)
    except ConfigError as exc:
        raise InvalidArgument(f"cp.config: refused, the server would not start: {exc}") from None


def check_listenable(app, config: Config) -> None:
    """ConfigError unless ``[frontend] bind`` is an address of this host and the ports this server
    does not hold already are free to listen on (a port taken by another program, or below 1024
    without the right, would stop the next start)."""
    bind = config.get("frontend", "bind")
    held = {app.config.get("frontend", "http_port"), app.config.get("frontend", "https_port")}
    checks = [("bind", 0)] + [(key, config.get("frontend", key)) for key in ("http_port", "https_port")
                              if config.get("frontend", key) and config.get("frontend", key) not in held]
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET  # as twisted's listenTCP chooses
    for key, port in checks:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a listener sets it
            try:
                probe.bind((bind, port))
            except OSError as exc:
                where = f"{bind} port {port}" if port else bind
                raise ConfigError("frontend", key, f"cannot listen on {where}: {exc.strerror or exc}") from None


#: Longest UNIX socket path the kernel takes (sun_path holds 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


def check_cli_socket(app, config: Config) -> None:
    """ConfigError when the next start could not listen on ``[core] cli_socket``: a path too long
    for a UNIX socket, or a file that is not a socket (start-up never removes one)."""
    path = config.state_path(config.get("core", "cli_socket"))
    if path == app.config.state_path(app.config.get("core", "cli_socket")):
        return  # this server's own socket
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ConfigError("core", "cli_socket", f"{path} is longer than a UNIX socket path may be ({MAX_SOCKET_PATH} bytes)")
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise ConfigError("core", "cli_socket", f"{path} exists and is not a socket")


def _need_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a name, got {value!r}")
    return value


class ConfigScope(Scope):
    """``cp.config [SECTION [KEY [VALUE]]]``: config.ini."""

    name = "cp.config"
    type = "config"
    selectors = ("SECTION", "KEY")
    help = ("config.ini. 'scope:get cp.config' shows every key (secrets masked), 'cp.config SECTION' a section, "
            "'cp.config SECTION KEY' one value; 'scope:set cp.config SECTION KEY VALUE' validates the value like "
            "start-up, refuses anything that would stop the server starting, rewrites config.ini atomically "
            "(comments and order kept) and applies run-time keys at once; other keys apply at the next start.")

    def __init__(self, config: Config):
        self.config = config  # the live config: which keys are secret

    def get(self, app, section=None, key=None) -> Any:
        config = file_config(app)
        if section is None:
            return {s: {k.name: plain_value(config, s, k.name) for k in spec.keys} for s, spec in config.sections.items()}
        section = _need_text(section, "SECTION")
        if section not in config.sections:
            raise NotFound(f"cp.config: no section [{section}]; sections: {', '.join(config.sections)}")
        if key is None:
            return {k.name: plain_value(config, section, k.name) for k in config.sections[section].keys}
        key = _need_text(key, "KEY")
        try:
            config.key(section, key)
        except ConfigError as exc:
            raise NotFound(f"cp.config: {exc}") from None
        return plain_value(config, section, key)

    def running(self, app) -> dict:
        """Every key's value as the running server uses it."""
        return {s: {k.name: plain_value(app.config, s, k.name) for k in spec.keys} for s, spec in app.config.sections.items()}

    def set(self, app, actor, section, key, value) -> None:
        write_config(app, [(_need_text(section, "SECTION"), _need_text(key, "KEY"), value)])

    def apply(self, app, section, key, value) -> None:
        if app.config.key(section, key).runtime:
            app.config.set(section, key, format_value(value))

    def mask(self, value, *selected):
        def mask_section(section, values):
            return {k: (mask_secret(v) if self._secret(section, k) else v) for k, v in values.items()}

        if len(selected) == 2:
            return mask_secret(value) if self._secret(*selected) else value
        if len(selected) == 1:
            return mask_section(selected[0], value)
        if isinstance(value, dict):
            return {s: mask_section(s, keys) for s, keys in value.items()}
        return value

    def _secret(self, section, key) -> bool:
        return self.config.key(section, key).secret


class ConfigFlagScope(Scope):
    """A boolean config key with a scope of its own (``cp.api``, ``cp.debug``)."""

    type = "bool"
    allowed = ("true", "false")

    def __init__(self, name: str, section: str, key: str, help: str):
        self.name, self.section, self.key, self.help = name, section, key, help
        spec = next(k for s in BUILTIN_SECTIONS if s.name == section for k in s.keys if k.name == key)
        self.default = spec.parse(spec.default)

    def get(self, app) -> bool:
        return file_config(app).get(self.section, self.key)

    def running(self, app) -> bool:
        return app.config.get(self.section, self.key)

    def set(self, app, actor, value) -> None:
        write_config(app, [(self.section, self.key, coerce(value, BOOL, self.name))])

    def apply(self, app, value) -> None:
        app.config.set(self.section, self.key, format_value(coerce(value, BOOL, self.name)))


class DavScope(ConfigFlagScope):
    """``apache.dav``: ``[dav] enabled`` (``/dav/`` at once), kept in step with the Bootstrapper
    variable ``apache_dav_enabled`` that ApisCP's Apache side reads."""

    def __init__(self):
        super().__init__("apache.dav", "dav", "enabled",
                         "WebDAV at /dav/ ([dav] enabled), switched at once; false answers /dav/ with 403. "
                         "Each account reaches only its own site's home, with its password (gate DAV).")

    def set(self, app, actor, value) -> None:
        super().set(app, actor, value)
        save_bootstrapper(app, {"apache_dav_enabled": coerce(value, BOOL, self.name)})


# --- auth.geoip-key ---------------------------------------------------------------------------

_LICENSE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


class GeoipKeyScope(Scope):
    """``auth.geoip-key '[id:1234,key:key-name]'``: MaxMind GeoIP2 web service credentials."""

    name = "auth.geoip-key"
    type = "hash"
    default = {"id": 0, "key": ""}
    help = ("MaxMind GeoIP2 web service account id and licence key for the location in login notices, "
            "as a hash '[id:1234,key:key-name]'; '[id:0,key:]' clears it. GeoIP2 is preferred over a "
            "GeoLite2 database when both are present. The key is never shown in full.")

    def get(self, app) -> dict:
        config = file_config(app)
        return {"id": config.get("geoip", "account_id"), "key": config.get("geoip", "license_key")}

    def running(self, app) -> dict:
        return {"id": app.config.get("geoip", "account_id"), "key": app.config.get("geoip", "license_key")}

    def set(self, app, actor, value) -> None:
        account, key = self.parse(value)
        write_config(app, [("geoip", "account_id", account), ("geoip", "license_key", key)])

    def apply(self, app, value) -> None:
        account, key = self.parse(value)
        app.config.set("geoip", "account_id", str(account))
        app.config.set("geoip", "license_key", key)

    def mask(self, value, *selected):
        return dict(value, key=mask_secret(value.get("key"), reveal=4)) if isinstance(value, dict) else value

    @staticmethod
    def parse(value) -> tuple[int, str]:
        """``{id, key}`` or its ApisCP spelling ``'[id:1234,key:name]'`` -> (id, key); InvalidArgument if bad."""
        if isinstance(value, str):
            from apiserver.cli.args import ArgumentSyntaxError, parse_argument

            try:
                value = parse_argument(value)
            except ArgumentSyntaxError as exc:  # its message quotes the text, which holds the key
                where = "the end" if exc.position >= len(exc.text) else f"position {exc.position + 1}"
                raise InvalidArgument(f"auth.geoip-key: cannot read the hash: {exc.reason} at {where}") from None
        if not isinstance(value, dict) or set(value) != {"id", "key"}:
            # The refused value is described, never quoted: it may be the licence key itself.
            got = f"a hash with {', '.join(sorted(map(str, value)))}" if isinstance(value, dict) else type(value).__name__
            raise InvalidArgument(f"auth.geoip-key: expected a hash '[id:1234,key:key-name]', got {got[:100]}")
        account = coerce(value["id"], TypeSpec(INT), "auth.geoip-key id")
        key = "" if value["key"] is None else str(value["key"])
        if not account and not key:
            return 0, ""
        if account <= 0 or account > 2**31 - 1:
            raise InvalidArgument(f"auth.geoip-key: id must be a MaxMind account id (a positive number), got {account}")
        if not _LICENSE_KEY.fullmatch(key):
            raise InvalidArgument("auth.geoip-key: key must be a MaxMind licence key (letters, digits, '_' or '-', at most 128)")
        return account, key


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- Bootstrapper variables -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BootstrapperVar:
    """One typed Bootstrapper setting."""

    name: str
    spec: TypeSpec
    default: Any
    help: str


BOOTSTRAPPER_VARS = (
    BootstrapperVar("postfix_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 for SMTP/submission (25, 587)."),
    BootstrapperVar("dovecot_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 for IMAP/POP3 (143, 110)."),
    BootstrapperVar("haproxy_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 for SNI client termination (465, 993, 995)."),
    BootstrapperVar("apache_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 in Apache."),
    BootstrapperVar("apache_dav_enabled", BOOL, False, "WebDAV support in Apache."),
    BootstrapperVar("has_low_memory", BOOL, False, "Low-memory mode: PHP runs as an ISAPI module under open_basedir."),
)
MAIL_INSECURE_SSL_VARS = ("postfix_insecure_ssl", "dovecot_insecure_ssl", "haproxy_insecure_ssl")
BOOTSTRAPPER_FILE = "bootstrapper.json"
_VARS = {var.name: var for var in BOOTSTRAPPER_VARS}


def load_bootstrapper(app) -> dict:
    """Every Bootstrapper variable's value: the stored ones over the defaults."""
    values = {var.name: var.default for var in BOOTSTRAPPER_VARS}
    path = app.config.state_path(BOOTSTRAPPER_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            stored = json.load(fh)
    except FileNotFoundError:
        return values
    except (OSError, ValueError) as exc:
        raise ServerError(f"cannot read the Bootstrapper variables in {path}: {exc}") from None
    values.update({k: v for k, v in stored.items() if k in values})
    return values


def save_bootstrapper(app, changes: dict) -> None:
    """Store ``changes`` (already validated) on top of the current values, atomically."""
    values = load_bootstrapper(app)
    values.update(changes)
    os.makedirs(app.config.state_dir, mode=0o700, exist_ok=True)
    atomic_write(app.config.state_path(BOOTSTRAPPER_FILE), json.dumps(values, indent=2, sort_keys=True) + "\n", mode=0o600)


class BootstrapperScope(Scope):
    """``cp.bootstrapper VAR VALUE``: typed Bootstrapper variables."""

    name = "cp.bootstrapper"
    type = "vars"
    selectors = ("VAR",)
    allowed = tuple(var.name for var in BOOTSTRAPPER_VARS)
    default = {var.name: var.default for var in BOOTSTRAPPER_VARS}
    help = "Bootstrapper variables, kept across restarts: " + " ".join(
        f"{var.name} ({var.spec.describe()}): {var.help}" for var in BOOTSTRAPPER_VARS)

    def get(self, app, var=None) -> Any:
        values = load_bootstrapper(app)
        return values if var is None else values[self.variable(var).name]

    def set(self, app, actor, var, value) -> None:
        spec = self.variable(var)
        save_bootstrapper(app, {spec.name: coerce(value, spec.spec, f"cp.bootstrapper {spec.name}")})

    @staticmethod
    def variable(name) -> BootstrapperVar:
        var = _VARS.get(name) if isinstance(name, str) else None
        if var is None:
            raise NotFound(f"cp.bootstrapper: unknown variable {_show(name)}; known: {', '.join(_VARS)}")
        return var


class BootstrapperFlagScope(Scope):
    """A boolean scope over one or more Bootstrapper variables (true when all of them are)."""

    type = "bool"
    allowed = ("true", "false")
    default = False

    def __init__(self, name: str, variables: tuple, help: str):
        self.name, self.variables, self.help = name, variables, help

    def get(self, app) -> bool:
        values = load_bootstrapper(app)
        return all(values[v] for v in self.variables)

    def set(self, app, actor, value) -> None:
        flag = coerce(value, BOOL, self.name)
        save_bootstrapper(app, {v: flag for v in self.variables})
