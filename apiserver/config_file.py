"""Editing config.ini in place: one key at a time, comments and order kept, replaced atomically.

The ``cp.config`` scope writes through :func:`set_values`: the edited text goes to a temporary
file next to the original, is checked (the same validation as start-up), fsynced and renamed
over the original, so a crash or a refused value never leaves a half-written config.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Callable, Optional

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


def atomic_write(path: str, text: str, mode: Optional[int] = None,
                 check: Optional[Callable[[str], None]] = None) -> None:
    """Replace ``path`` with ``text``: temporary file in the same directory, fsync, rename.

    ``mode`` defaults to the existing file's permissions (0600 for a new file); its owner and
    group are kept when this process may set them.  A symbolic link is followed: the file it
    names is replaced and the link stays (config management often links config.ini).
    ``check``, if given, is called with the temporary file's path before the rename; an
    exception from it leaves the original untouched.
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if mode is None:
        mode = existing.st_mode & 0o7777 if existing else 0o600
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            if existing and (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fh.fileno(), existing.st_uid, existing.st_gid)
                except PermissionError:
                    pass  # not root: the file becomes ours, which only this process writes anyway
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(temp)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)


def set_values(path: str, edits, check: Optional[Callable[[str], None]] = None, mode: Optional[int] = None) -> None:
    """Apply ``edits`` (``(section, key, value)`` triples) to the ini file at ``path`` in one atomic write.

    See :func:`atomic_write` for ``check`` and ``mode``.
    """
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    for section, key, value in edits:
        text = edit_text(text, section, key, value)
    atomic_write(path, text, mode=mode, check=check)
