"""Editing config.ini of the running server: one key at a time, comments and order kept, replaced
atomically, and never into a file the server would not start with.

:class:`ConfigFile` is what the ``cp.config`` (and ``cp.api``, ``cp.debug``, ``auth.geoip-key``,
``apache.dav``) scopes write through: each value is validated like start-up does, the edited
text goes to a temporary file next to the original, the whole candidate is checked to start
(:meth:`ConfigFile.check_startable`: the cross-key checks, the listeners, the cpcmd socket, the
TLS certificate), fsynced and renamed over the original, so a crash or a refused value never
leaves a half-written or unstartable config.  :func:`set_values` and :func:`edit_text` do the
text editing.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Callable, Optional

from apiserver.config import (
    CHECKOUT_PATH, Config, ConfigError, changed_keys, check_listenable, cross_check, mask_secret, reread_config,
    secret_values,
)
from apiserver.errors import InvalidArgument, ServerError
from apiserver.files import atomic_write

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(?:[;#].*)?$")
_KEY = re.compile(r"^(\s*)([^=:;#\s\[][^=:]*?)(\s*[=:]\s*)(.*?)(\s+;.*)?$")


def format_value(value) -> str:
    """How a value is spelled in config.ini: ``true``/``false``, lists comma separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if value is None:
        return ""
    return str(value)


MAX_VALUE_LENGTH = 4096


#: Line breaks and other control characters (a tab is allowed); str.splitlines splits at several.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def check_value_text(text: str) -> None:
    """Refuse what cannot be written as one ini value (ValueError with the reason)."""
    if len(text) > MAX_VALUE_LENGTH:
        raise ValueError(f"a config value is at most {MAX_VALUE_LENGTH} characters")
    if _CONTROL.search(text):
        raise ValueError("a config value must be a single line without control characters")
    if re.search(r"(^|\s);", text):  # written after "key = ", a leading ';' follows a space too
        raise ValueError("a config value cannot contain ' ;' or start with ';' (it starts a comment in config.ini)")
    if text != text.strip():
        raise ValueError("a config value cannot start or end with white space")


#: One line with its end, split where configparser's file reading splits (not at \f or U+2028).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def edit_text(text: str, section: str, key: str, value: str) -> str:
    """Return ``text`` with ``[section] key`` set to ``value``; everything else byte for byte.

    An existing key keeps its spacing and inline comment; a new key goes after the section's
    last key; a new section is appended at the end.
    """
    check_value_text(value)
    lines = _LINE.findall(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    current = None
    last_key_line = None  # index of the last key line in the wanted section
    section_line = None
    for index, line in enumerate(lines):
        header = _SECTION.match(line)
        if header:
            current = header.group(1).strip()
            if current == section:
                section_line = index
            continue
        if current != section:
            continue
        match = _KEY.match(line.rstrip("\r\n"))
        if not match:
            continue
        last_key_line = index
        if match.group(2).strip() == key:
            ending = line[len(line.rstrip("\r\n")):]
            indent, name, separator, _old, comment = match.groups()
            lines[index] = f"{indent}{name}{separator}{value}{comment or ''}{ending or newline}"
            return "".join(lines)
    if section_line is not None:
        insert_at = (last_key_line if last_key_line is not None else section_line) + 1
        if insert_at == len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        lines.insert(insert_at, f"{key} = {value}{newline}")
        return "".join(lines)
    if text and not text.endswith(("\n", "\r")):
        text += newline
    separator = newline if text.strip() else ""
    return f"{text}{separator}[{section}]{newline}{key} = {value}{newline}"


def set_values(path: str, edits, check: Optional[Callable[[str], None]] = None, mode: Optional[int] = None) -> None:
    """Apply ``edits`` (``(section, key, value)`` triples) to the ini file at ``path`` in one atomic write.

    See :func:`atomic_write` for ``check`` and ``mode``.
    """
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    for section, key, value in edits:
        text = edit_text(text, section, key, value)
    atomic_write(path, text, mode=mode, check=check)


#: Keys that would point the server at other state or lock every key out; edit config.ini and run init.
PROTECTED_KEYS = {
    ("auth", "secret"): "it encrypts the stored API keys; changing it at run time would lock every client out",
    ("core", "state_dir"): "it names the database and certificate; edit config.ini and run 'apiserver init'",
    ("db", "url"): "it names the database; edit config.ini and run 'apiserver init'",
}

#: Longest UNIX socket path the kernel takes (sun_path holds 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


def plain_value(config: Config, section: str, key: str) -> Any:
    """A config value as a client sees it: bools and ints typed, networks as their text."""
    value = config.get(section, key)
    return config.raw(section, key).strip() if isinstance(value, tuple) else value


class ConfigFile:
    """config.ini of the running server whose live config is ``config`` (its path and sections,
    plugins' included).  Every method blocks (it reads or writes the file)."""

    def __init__(self, config: Config):
        self.config = config

    def saved(self) -> Config:
        """config.ini as the next start will read it (the live config when there is no file)."""
        if self.config.path is None:
            return self.config
        try:
            return reread_config(self.config)
        except ConfigError as exc:
            raise ServerError(f"{self.config.path} cannot be read: {exc}") from None

    def write(self, edits) -> None:
        """Validate ``(section, key, value)`` edits like start-up does and write them to config.ini at once.

        Raises InvalidArgument naming the key and the reason; config.ini is then untouched.
        """
        config = self.config
        if config.path is None:
            raise ServerError("this server was started without a config file; there is nothing to edit")
        if config.path == CHECKOUT_PATH:
            raise InvalidArgument(f"cp.config: {CHECKOUT_PATH} is the tracked reference and is never written; "
                                  "start the server without --config to use the checkout's state/config.ini")
        texts = []
        for section, key, value in edits:
            try:
                config.key(section, key)
            except ConfigError as exc:
                raise InvalidArgument(f"cp.config: {exc}") from None
            if (section, key) in PROTECTED_KEYS:
                raise InvalidArgument(f"cp.config: [{section}] {key} cannot be changed by a scope: "
                                      f"{PROTECTED_KEYS[section, key]}")
            if isinstance(value, dict):
                raise InvalidArgument(f"cp.config: [{section}] {key}: expected a single value, got a hash")
            if value is None:
                raise InvalidArgument(f"cp.config: [{section}] {key}: expected a value, got null "
                                      f"(the default is {config.key(section, key).default!r})")
            text = format_value(value)
            try:
                check_value_text(text)
                config.validate(section, key, text)
            except ValueError as exc:
                raise InvalidArgument(f"cp.config: [{section}] {key}: {exc}") from None
            except ConfigError as exc:
                raise InvalidArgument(f"cp.config: {exc}") from None
            texts.append((section, key, text))
        set_values(config.path, texts, check=self.check_startable, mode=self._private_mode_if_secret(texts))

    def _private_mode_if_secret(self, texts) -> Optional[int]:
        """0600 (or tighter) when config.ini will hold a secret (a licence key, an SMTP password, a
        Redis URL with a password), so no other user can read it; None keeps the file's mode."""
        holds = any(self.config.key(section, key).secret and text for section, key, text in texts)
        if not holds:
            holds = bool(secret_values(self.saved()))
        if not holds:
            return None
        try:
            current = os.stat(self.config.path).st_mode & 0o7777
        except OSError:
            return 0o600
        return current & 0o700 or 0o600

    def check_startable(self, path: str) -> None:
        """Refuse (InvalidArgument) a candidate config file that would stop the server starting."""
        try:
            candidate = reread_config(self.config, path)
            cross_check(candidate)  # what start-up checks too
            running = self.config
            held = {running.get("frontend", "http_port"), running.get("frontend", "https_port")}
            check_listenable(candidate, [candidate.get("frontend", key) for key in ("http_port", "https_port")
                                         if candidate.get("frontend", key) not in held | {0}])
            self._check_cli_socket(candidate)
            if candidate.get("frontend", "tls_certificate") or candidate.get("frontend", "tls_key"):
                from apiserver.transport.tls import ensure_certificate

                ensure_certificate(candidate)
        except ConfigError as exc:
            raise InvalidArgument(f"cp.config: refused, the server would not start: {exc}") from None

    def _check_cli_socket(self, candidate: Config) -> None:
        """ConfigError when the next start could not listen on ``[core] cli_socket``: a path too long
        for a UNIX socket, or a file that is not a socket (start-up never removes one)."""
        path = candidate.state_path(candidate.get("core", "cli_socket"))
        if path == self.config.state_path(self.config.get("core", "cli_socket")):
            return  # this server's own socket
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ConfigError("core", "cli_socket",
                              f"{path} is longer than a UNIX socket path may be ({MAX_SOCKET_PATH} bytes)")
        if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ConfigError("core", "cli_socket", f"{path} exists and is not a socket")

    def pending_restart(self) -> dict:
        """``"[section] key" -> {"running": value, "saved": value}`` for every key whose value in
        config.ini differs from the running one (secrets masked): what a restart would change."""
        config = self.config
        if config.path is None:
            return {}
        try:
            fresh = reread_config(config)
        except ConfigError:
            return {}
        out = {}
        for section, key in changed_keys(config, fresh):
            running, saved = config.raw(section, key), fresh.raw(section, key)
            if config.key(section, key).secret:
                running, saved = mask_secret(running), mask_secret(saved)
            out[f"[{section}] {key}"] = {"running": running, "saved": saved}
        return out
