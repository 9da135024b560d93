"""Plans: named sets of service values a site takes (``siteinfo.plan``), read from INI files.

``[plans] dir`` holds ``<name>.ini`` files, one section per service and one key per parameter::

    ; plans/pro.ini
    [diskquota]
    quota = 20
    units = GB

    [ssh]
    enabled = 1

``.skeleton.ini`` in the same folder holds what every plan inherits; a parameter neither file
names has its built-in default (:data:`apiserver.lifecycle.services.SERVICES`).  A plan may not
set what is distinct to an account (names, addresses, passwords, invoices: the ``protected``
parameters) nor what the server derives.  Values are checked like options; ``DEFAULT``,
``None``, ``null`` and an empty value are null.  A plan file that does not validate is a
:class:`~apiserver.errors.ServerError` naming the file, the service and the parameter (the
administrator's mistake, not the caller's).

Files are read when asked (blocking; callers run on the blocking pool) and kept parsed until
their size or modification time changes, so an edited plan applies at its next use.
"""

from __future__ import annotations

import configparser
import os
import threading
from typing import Optional

from apiserver.errors import ApiError, NotFound, ServerError
from apiserver.lifecycle import services

SKELETON = ".skeleton"
SUFFIX = ".ini"


class Plans:
    """The plan files of ``directory`` (see the module docstring); ``default`` names the plan a
    site takes when it names none."""

    def __init__(self, directory: str, default: str):
        self.directory = directory
        self.default = default
        self._lock = threading.Lock()
        self._parsed: dict = {}  # path -> ((size, mtime_ns), values)

    def names(self) -> list:
        """Blocking.  Every plan's name, sorted (``.skeleton`` is no plan)."""
        try:
            entries = os.listdir(self.directory)
        except OSError as exc:
            raise ServerError(f"cannot read the plans folder ([plans] dir): {exc.strerror}") from None
        return sorted(name[:-len(SUFFIX)] for name in entries
                      if name.endswith(SUFFIX) and not name.startswith(".") and len(name) > len(SUFFIX))

    def exists(self, name: str) -> bool:
        """Blocking.  Whether plan ``name`` has a file."""
        return os.path.isfile(self._path(name))

    def values(self, name: Optional[str]) -> dict:
        """Blocking.  ``{Param: value}`` for every writable, unprotected parameter as plan ``name``
        (None: the default plan) sets it: built-in default, then ``.skeleton.ini``, then the plan's
        file.  NotFound when the plan has no file."""
        name = name or self.default
        if name == SKELETON or not self.exists(name):
            raise NotFound(f"no plan {name!r}; plans are {', '.join(self.names()) or '(none)'}")
        merged = {p: p.default for p in services.all_params() if _plannable(p)}
        merged.update(self._read(self._path(SKELETON), required=False))
        merged.update(self._read(self._path(name), required=True))
        return merged

    def describe(self, name: str) -> dict:
        """Blocking.  ``{service: {param: value}}`` of :meth:`values`, for ``admin_get_plan``."""
        out: dict = {}
        for spec, value in self.values(name).items():
            out.setdefault(spec.service, {})[spec.name] = value
        return out

    # --- internals ---------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        if not name or "/" in name or name.startswith("..") or "\x00" in name:
            raise NotFound(f"no plan {name!r}")
        return os.path.join(self.directory, name + SUFFIX)

    def _read(self, path: str, required: bool) -> dict:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if required:
                raise NotFound(f"no plan file {os.path.basename(path)!r}") from None
            return {}
        stamp = (info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._parsed.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        values = parse_plan_file(path)
        with self._lock:
            self._parsed[path] = (stamp, values)
        return values


def _plannable(spec: services.Param) -> bool:
    return spec.writable and not spec.protected


def parse_plan_file(path: str) -> dict:
    """Blocking.  ``{Param: value}`` of one plan file; ServerError naming the file and key."""
    name = os.path.basename(path)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",), default_section="\x00")
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise ServerError(f"plan file {name} cannot be read: {exc}") from None
    values: dict = {}
    for section in parser.sections():
        for key, raw in parser.items(section):
            try:
                spec = services.param(section.strip(), key.strip())
                if not _plannable(spec):
                    raise ServerError(f"plan file {name}: {spec.qualified} is distinct to each site; a plan may not "
                                      "set it")
                values[spec] = None if services.is_default(raw) else services.validate(spec, raw.strip())
            except ApiError as exc:
                if isinstance(exc, ServerError):
                    raise
                raise ServerError(f"plan file {name}: {exc.message}") from None
    return values
