"""The built-in scopes: config.ini keys, the Bootstrapper variables and the GeoIP2 credentials.

Where each keeps its value:

* ``cp.config``, ``cp.api`` (``[soap] enabled``), ``cp.debug`` (``[core] debug``) and
  ``auth.geoip-key`` (``[geoip] account_id``/``license_key``): ``config.ini``, edited
  atomically through :class:`apiserver.config_file.ConfigFile`, and the live config for keys
  that apply at run time.
* ``apache.dav``: ``[dav] enabled`` in ``config.ini`` (``/dav/`` switches at once), mirrored
  to the Bootstrapper variable ``apache_dav_enabled``.
* ``cp.bootstrapper``, ``apache.insecure-ssl``, ``mail.insecure-ssl``: the Bootstrapper
  variables (:mod:`apiserver.scopes.bootstrapper`).

Each takes the part it keeps its value in; the ``api`` their methods get is unused.
"""

from __future__ import annotations

import re
from typing import Any

from apiserver.config import BUILTIN_SECTIONS, ConfigError, mask_secret
from apiserver.config_file import ConfigFile, format_value, plain_value
from apiserver.errors import InvalidArgument, NotFound
from apiserver.scopes.bootstrapper import (
    BOOL, BOOTSTRAPPER_VARS, MAIL_INSECURE_SSL_VARS, VARIABLES, Bootstrapper, BootstrapperVar,
)
from apiserver.scopes.registry import Scope
from apiserver.types import INT, TypeSpec, coerce


def builtin_scopes(config_file: ConfigFile, bootstrapper: Bootstrapper) -> list:
    """Every built-in scope, over ``config_file`` and ``bootstrapper``."""
    return [
        ConfigScope(config_file),
        ConfigFlagScope("cp.api", "soap", "enabled",
                        "Serve the SOAP and XML-RPC API ([soap] enabled); false answers every API URL with 403.",
                        config_file),
        ConfigFlagScope("cp.debug", "core", "debug", "Debug logging ([core] debug), switched at once.", config_file),
        BootstrapperScope(bootstrapper),
        DavScope(config_file, bootstrapper),
        BootstrapperFlagScope("apache.insecure-ssl", ("apache_insecure_ssl",),
                              "Allow TLSv1.0/v1.1 in Apache (SSLv2/SSLv3 stay disabled).", bootstrapper),
        BootstrapperFlagScope("mail.insecure-ssl", MAIL_INSECURE_SSL_VARS,
                              "Allow TLSv1.0/v1.1 for mail: sets the Bootstrapper variables "
                              + ", ".join(MAIL_INSECURE_SSL_VARS) + " together.", bootstrapper),
        GeoipKeyScope(config_file),
    ]


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

    def __init__(self, config_file: ConfigFile):
        self.config_file = config_file
        self.config = config_file.config  # the live config: which keys are secret

    def get(self, api, section=None, key=None) -> Any:
        config = self.config_file.saved()
        if section is None:
            return {s: {k.name: plain_value(config, s, k.name) for k in spec.keys}
                    for s, spec in config.sections.items()}
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

    def running(self) -> dict:
        """Every key's value as the running server uses it."""
        config = self.config
        return {s: {k.name: plain_value(config, s, k.name) for k in spec.keys} for s, spec in config.sections.items()}

    def set(self, api, actor, section, key, value) -> None:
        self.config_file.write([(_need_text(section, "SECTION"), _need_text(key, "KEY"), value)])

    def apply(self, api, section, key, value) -> None:
        if self.config.key(section, key).runtime:
            self.config.set(section, key, format_value(value))

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

    def __init__(self, name: str, section: str, key: str, help: str, config_file: ConfigFile):
        self.name, self.section, self.key, self.help = name, section, key, help
        self.config_file = config_file
        spec = next(k for s in BUILTIN_SECTIONS if s.name == section for k in s.keys if k.name == key)
        self.default = spec.parse(spec.default)

    def get(self, api) -> bool:
        return self.config_file.saved().get(self.section, self.key)

    def running(self) -> bool:
        return self.config_file.config.get(self.section, self.key)

    def set(self, api, actor, value) -> None:
        self.config_file.write([(self.section, self.key, coerce(value, BOOL, self.name))])

    def apply(self, api, value) -> None:
        self.config_file.config.set(self.section, self.key, format_value(coerce(value, BOOL, self.name)))


class DavScope(ConfigFlagScope):
    """``apache.dav``: ``[dav] enabled`` (``/dav/`` at once), kept in step with the Bootstrapper
    variable ``apache_dav_enabled`` that ApisCP's Apache side reads."""

    def __init__(self, config_file: ConfigFile, bootstrapper: Bootstrapper):
        super().__init__("apache.dav", "dav", "enabled",
                         "WebDAV at /dav/ ([dav] enabled), switched at once; false answers /dav/ with 403. "
                         "Each account reaches only its own site's home, with its password (gate DAV).", config_file)
        self.bootstrapper = bootstrapper

    def set(self, api, actor, value) -> None:
        super().set(api, actor, value)
        self.bootstrapper.save({"apache_dav_enabled": coerce(value, BOOL, self.name)})


# --- auth.geoip-key ---------------------------------------------------------------------------

_LICENSE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


class GeoipKeyScope(Scope):
    """``auth.geoip-key '[id:1234,key:key-name]'``: MaxMind GeoIP2 web service credentials."""

    name = "auth.geoip-key"
    type = "hash"
    default = {"id": 0, "key": ""}
    help = ("MaxMind GeoIP2 web service account id and licence key for the location in login notices, "
            "as a hash '[id:1234,key:key-name]'; null or '[id:0,key:]' clears it. GeoIP2 is preferred over a "
            "GeoLite2 database when both are present. The key is never shown in full.")

    def __init__(self, config_file: ConfigFile):
        self.config_file = config_file

    def get(self, api) -> dict:
        config = self.config_file.saved()
        return {"id": config.get("geoip", "account_id"), "key": config.get("geoip", "license_key")}

    def running(self) -> dict:
        config = self.config_file.config
        return {"id": config.get("geoip", "account_id"), "key": config.get("geoip", "license_key")}

    def set(self, api, actor, value) -> None:
        account, key = self.parse(value)
        self.config_file.write([("geoip", "account_id", account), ("geoip", "license_key", key)])

    def apply(self, api, value) -> None:
        account, key = self.parse(value)
        self.config_file.config.set("geoip", "account_id", str(account))
        self.config_file.config.set("geoip", "license_key", key)

    def mask(self, value, *selected):
        return dict(value, key=mask_secret(value.get("key"), reveal=4)) if isinstance(value, dict) else value

    @staticmethod
    def parse(value) -> tuple[int, str]:
        """``{id, key}`` or its ApisCP spelling ``'[id:1234,key:name]'`` -> (id, key); InvalidArgument if bad.
        Null clears the credentials, as ``[id:0,key:]`` does."""
        if value is None:
            return 0, ""
        if isinstance(value, str):
            from apiserver.cli.args import ArgumentSyntaxError, parse_argument

            try:
                value = parse_argument(value)
            except ArgumentSyntaxError as exc:  # its message quotes the text, which holds the key
                where = "the end" if exc.position >= len(exc.text) else f"position {exc.position + 1}"
                raise InvalidArgument(f"auth.geoip-key: cannot read the hash: {exc.reason} at {where}") from None
        if not isinstance(value, dict) or set(value) != {"id", "key"}:
            # The refused value is described, never quoted: it may be the licence key itself.
            got = (f"a hash with {', '.join(sorted(map(str, value)))}" if isinstance(value, dict)
                   else type(value).__name__)
            raise InvalidArgument(f"auth.geoip-key: expected a hash '[id:1234,key:key-name]', got {got[:100]}")
        account = coerce(value["id"], TypeSpec(INT), "auth.geoip-key id")
        key = "" if value["key"] is None else str(value["key"])
        if not account and not key:
            return 0, ""
        if account <= 0 or account > 2**31 - 1:
            raise InvalidArgument(f"auth.geoip-key: id must be a MaxMind account id (a positive number), got {account}")
        if not _LICENSE_KEY.fullmatch(key):
            raise InvalidArgument("auth.geoip-key: key must be a MaxMind licence key "
                                  "(letters, digits, '_' or '-', at most 128)")
        return account, key


def show(value) -> str:
    """A value for a message: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- Bootstrapper variables -----------------------------------------------------------------

class BootstrapperScope(Scope):
    """``cp.bootstrapper VAR VALUE``: typed Bootstrapper variables."""

    name = "cp.bootstrapper"
    type = "vars"
    selectors = ("VAR",)
    allowed = tuple(var.name for var in BOOTSTRAPPER_VARS)
    default = {var.name: var.default for var in BOOTSTRAPPER_VARS}
    help = "Bootstrapper variables, kept across restarts: " + " ".join(
        f"{var.name} ({var.spec.describe()}): {var.help}" for var in BOOTSTRAPPER_VARS)

    def __init__(self, bootstrapper: Bootstrapper):
        self.bootstrapper = bootstrapper

    def get(self, api, var=None) -> Any:
        values = self.bootstrapper.load()
        return values if var is None else values[self.variable(var).name]

    def set(self, api, actor, var, value) -> None:
        spec = self.variable(var)
        self.bootstrapper.save({spec.name: coerce(value, spec.spec, f"cp.bootstrapper {spec.name}")})

    @staticmethod
    def variable(name) -> BootstrapperVar:
        var = VARIABLES.get(name) if isinstance(name, str) else None
        if var is None:
            raise NotFound(f"cp.bootstrapper: unknown variable {show(name)}; known: {', '.join(VARIABLES)}")
        return var


class BootstrapperFlagScope(Scope):
    """A boolean scope over one or more Bootstrapper variables (true when all of them are)."""

    type = "bool"
    allowed = ("true", "false")
    default = False

    def __init__(self, name: str, variables: tuple, help: str, bootstrapper: Bootstrapper):
        self.name, self.variables, self.help = name, variables, help
        self.bootstrapper = bootstrapper

    def get(self, api) -> bool:
        values = self.bootstrapper.load()
        return all(values[v] for v in self.variables)

    def set(self, api, actor, value) -> None:
        flag = coerce(value, BOOL, self.name)
        self.bootstrapper.save({v: flag for v in self.variables})
