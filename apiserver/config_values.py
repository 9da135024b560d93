"""Config value types: the parsers that turn raw ini text into checked values, and ``Key``/``Section``.

Each parser raises ``ValueError`` with a reason; ``config.Config`` adds the section and key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import urllib.parse
from typing import Any, Callable, Optional

from apiserver.addresses import unmap_network
from apiserver.booleans import parse_boolean

def parse_bool(raw: str) -> bool:
    value = parse_boolean(raw)
    if value is None:
        raise ValueError(f"expected true or false, got {raw!r}")
    return value


def int_range(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high}, got {value}")
        return value

    parse.type_name = "int"
    return parse


def parse_str(raw: str) -> str:
    return raw.strip()


def parse_positive_seconds(raw: str) -> float:
    """Seconds, fractions allowed: a finite number above 0."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of seconds, got {raw.strip()!r}")
    return value


def parse_networks(raw: str) -> tuple:
    """Comma/space separated addresses or CIDR networks -> tuple of ip_network (IPv4-mapped ones as IPv4)."""
    nets = []
    for word in raw.replace(",", " ").split():
        try:
            nets.append(unmap_network(ipaddress.ip_network(word, strict=False)))
        except ValueError:
            raise ValueError(f"{word!r} is not an IP address or CIDR network") from None
    return tuple(nets)


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    parse.type_name = "|".join(options)
    return parse


def parse_host(raw: str) -> str:
    """A host name or address, optionally with ``:port`` (no scheme, path or spaces)."""
    value = raw.strip()
    if not value or any(c in value for c in "/@?# \t"):
        raise ValueError(f"expected host or host:port, got {raw!r}")
    return value


def parse_system_user_or_auto(raw: str) -> str:
    """A system user name that exists here, or empty (chosen when needed)."""
    import pwd

    value = raw.strip()
    if value:
        try:
            pwd.getpwnam(value)
        except KeyError:
            raise ValueError(f"no system user {value!r} on this host") from None
    return value


parse_system_user_or_auto.type_name = "user"
def parse_account_prefix(raw: str) -> str:
    """Empty, or a lower-case letter then up to 9 lower-case letters or digits (host account names)."""
    value = raw.strip()
    if value and not (value[0].isascii() and value[0].islower() and len(value) <= 10
                      and all(c.isascii() and (c.islower() or c.isdigit()) for c in value)):
        raise ValueError(f"expected empty or a lower-case letter then up to 9 lower-case letters or digits, "
                         f"got {raw!r}")
    return value


parse_account_prefix.type_name = "prefix"


def parse_plan_name(raw: str) -> str:
    """A plan's name: letters, digits, ``.``, ``_`` or ``-`` (its file is ``<name>.ini``)."""
    value = raw.strip()
    if not value or value.startswith(".") or not all(c.isalnum() or c in "._-" for c in value) or len(value) > 64:
        raise ValueError(f"expected a plan name (letters, digits, '.', '_', '-'), got {raw!r}")
    return value


def server_url(scheme: str) -> Callable[[str], str]:
    """Empty, or ``scheme://user[:password]@host[:port][/database]`` (a database server's admin)."""
    def parse(raw: str) -> str:
        value = raw.strip()
        if not value:
            return ""
        parts = urllib.parse.urlsplit(value)
        try:
            parts.port
        except ValueError:
            raise ValueError(f"bad port in {scheme}:// URL") from None
        if parts.scheme != scheme or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"expected empty or {scheme}://user[:password]@host[:port][/database]")
        return value

    parse.type_name = f"{scheme} URL"
    return parse


def parse_names(raw: str) -> tuple:
    """``example, other`` -> ``("example", "other")``: names separated by commas or spaces."""
    return tuple(raw.replace(",", " ").split())


parse_bool.type_name = "bool"
parse_names.type_name = "names"
parse_plan_name.type_name = "name"
parse_str.type_name = "string"
parse_positive_seconds.type_name = "seconds"
parse_host.type_name = "host"
parse_networks.type_name = "networks"
port = int_range(0, 65535)
port.type_name = "port"


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: its name, parser (raw str -> value, ValueError if bad), default, help."""

    name: str
    parse: Callable[[str], Any]
    default: str
    help: str
    runtime: bool = False  # applied at once when changed while running
    secret: bool = False   # masked in scope output and logs

    @property
    def type_name(self) -> str:
        return getattr(self.parse, "type_name", "string")


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    help: str
    keys: tuple  # tuple[Key, ...]
