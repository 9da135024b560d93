"""Checks of domains, usernames and email addresses, with messages a person can act on."""

from __future__ import annotations

import re
from typing import Optional

from apiserver.context import Gate
from apiserver.errors import InvalidArgument

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_USERNAME = re.compile(r"[a-z_][a-z0-9._-]{0,31}")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _show(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def domain_problem(domain: str) -> Optional[str]:
    """Why ``domain`` (already lower-cased) is not a host name, or None."""
    if not domain:
        return "it is empty"
    if len(domain) > 253:
        return "it is longer than 253 characters"
    labels = domain.split(".")
    if len(labels) < 2:
        return "it needs at least two labels, like example.com"
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (f"label {label!r} must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen"
                    if label else "it has an empty label")
    if labels[-1].isdigit():
        return "the last label must not be all digits"
    return None


def normalize_domain(domain: str) -> str:
    """``Example.COM.`` -> ``example.com``; InvalidArgument naming the problem otherwise."""
    value = domain.strip().lower().rstrip(".")
    problem = domain_problem(value)
    if problem:
        raise InvalidArgument(f"invalid domain {_show(domain)}: {problem}")
    return value


def normalize_username(username: str) -> str:
    """A login name: lower-case letter or underscore first, then up to 31 of a-z 0-9 . _ -."""
    value = username.strip()
    if not _USERNAME.fullmatch(value):
        raise InvalidArgument(
            f"invalid username {_show(username)}: use 1-32 characters, lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or '_'")
    return value


def normalize_email(email: str) -> str:
    """An address ``local@domain`` (the domain is lower-cased); InvalidArgument otherwise."""
    value = email.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise InvalidArgument(f"invalid email address {_show(email)}: expected name@domain")
    if len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local):
        raise InvalidArgument(f"invalid email address {_show(email)}: the part before '@' is not valid")
    problem = domain_problem(domain.lower())
    if problem or len(value) > 254:
        raise InvalidArgument(f"invalid email address {_show(email)}: the domain {problem or 'makes it too long'}")
    return f"{local}@{domain.lower()}"


def parse_gate(gate: Optional[str]) -> Optional[str]:
    """``UI``/``SOAP``/``DAV``/``CLI`` (any case) -> its name; None/empty -> None; InvalidArgument otherwise."""
    try:
        parsed = Gate.parse(gate)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return parsed.value if parsed else None
