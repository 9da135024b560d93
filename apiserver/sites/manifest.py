"""Web App Manifests: ``.webapp.yml`` in an application's root declares its Fortification profile.

ApisCP's format (docs/admin/WebApps.md, "Ad hoc apps")::

    name: Shop                 # what fortification_info calls the application (ours; optional)
    base: wordpress            # optional: a built-in profile whose paths the manifest adds to
    fortification:
      max:                     # what the web server may write in mode max
        - var/cache/
        - sitemap.xml
      min:                     # and in mode min (max's paths are always included)
        - plugins/

ApisCP's other keys (``depth``, ``database``, ``signature``, ``manifest_version``) are accepted and
not used here.  A manifest takes precedence over detection.  It is refused, with the line and key
of the mistake, when it is not YAML, names an unknown key or mode, or a path that is absolute,
climbs out with ``..``, or is the manifest itself; it is honoured only when the web server user
neither owns it nor may write it (Fortification never grants the web server the manifest).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import stat
from typing import Optional

import yaml

from apiserver.errors import InvalidArgument
from apiserver.sites import acl
from apiserver.sites.home import display_path
from apiserver.sites.profiles import PROFILE_NAMES, Profile, by_name
from apiserver.sites.walk import open_folder

FILENAME = ".webapp.yml"
#: Keys of ApisCP's manifest accepted and not used here.
IGNORED_KEYS = ("depth", "database", "signature", "manifest_version")
KEYS = ("name", "base", "fortification") + IGNORED_KEYS
MODES = ("max", "min")
MAX_BYTES = 64 * 1024
MAX_PATHS = 1000
MAX_NAME = 32


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated manifest: the application's name, its base profile and its paths per mode."""

    name: str
    base: Optional[Profile]
    paths: dict  # mode -> tuple of paths

    def profile(self) -> Profile:
        """The manifest as a profile: the base's paths plus the manifest's, per mode."""
        base_max = self.base.max_paths if self.base else ()
        base_min = self.base.min_extra if self.base else ()
        mine_max = tuple((p, "named in .webapp.yml") for p in self.paths.get("max", ()))
        mine_min = tuple((p, "named in .webapp.yml") for p in self.paths.get("min", ()))
        return Profile(self.name, "manifest", (), _unique(base_max + mine_max), _unique(base_min + mine_min))


class ManifestError(InvalidArgument):
    """A manifest that cannot be used; the message names the file, line and key."""


def load(folder: str, web_uid: int) -> Optional[Manifest]:
    """Blocking.  The manifest in ``folder``, None when there is none; ManifestError when it is bad."""
    path = os.path.join(folder, FILENAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"{FILENAME}: cannot be read ({exc.strerror}); it must be a plain file, not a link")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(f"{FILENAME}: not a plain file")
        web = pwd.getpwuid(web_uid)
        web_gids = acl.user_groups(web.pw_name, web.pw_gid)
        if st.st_uid == web_uid or acl.access_of(fd, st).allows(st, web_uid, web_gids, acl.WRITE):
            raise ManifestError(f"{FILENAME}: the web server user owns it or may write it; "
                                "give it to the site's owner (fortify reset) before it is trusted")
        if st.st_size > MAX_BYTES:
            raise ManifestError(f"{FILENAME}: larger than {MAX_BYTES} bytes")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    return parse(data)


def parse(data) -> Manifest:
    """A Manifest from the text of a ``.webapp.yml``; ManifestError naming the line and key."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{FILENAME}: not UTF-8 text") from None
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{FILENAME}{where}: not YAML: {getattr(exc, 'problem', None) or exc}") from None
    if root is None:
        raise ManifestError(f"{FILENAME}: empty; it needs at least fortification: max: [paths]")
    mapping = _mapping(root, "the document")
    name, base, paths = None, None, {}
    for key_node, value in mapping:
        key = key_node.value
        if key not in KEYS:
            raise _error(key_node, key, f"unknown key; use {', '.join(KEYS)}")
        if key == "name":
            name = _scalar(value, key)
            if not name or len(name) > MAX_NAME or not name.isprintable():
                raise _error(value, key, f"a printable name of 1 to {MAX_NAME} characters")
        elif key == "base":
            text = _scalar(value, key) if not _is_null(value) else ""
            if text:
                base = by_name(text.lower())
                if base is None:
                    raise _error(value, key, f"unknown base {display_path(text)!r}; use {', '.join(PROFILE_NAMES)}")
        elif key == "fortification":
            paths = _modes(value)
    if not paths and base is None:
        raise ManifestError(f"{FILENAME}: names no writable paths (fortification: max: [...]) and no base")
    return Manifest(name or (base.name if base else "custom"), base, paths)


def dump(name: str, max_paths, min_paths=()) -> str:
    """The text of a manifest with these paths (what ``learn`` writes out for the owner)."""
    lines = [f"# Web App Manifest written by apiserver from {name}'s Fortification profile and what it learned.",
             "# Edit the paths and run fortify again; the web server may never write this file.",
             f"name: {yaml.safe_dump(name, default_style=None).splitlines()[0]}", "fortification:"]
    for mode, entries in (("max", max_paths), ("min", min_paths)):
        lines.append(f"  {mode}:" + ("" if entries else " []"))
        lines.extend(f"    - {yaml.safe_dump(e).splitlines()[0]}" for e in entries)
    return "\n".join(lines) + "\n"


def check_path(entry: str) -> Optional[str]:
    """Why ``entry`` cannot be a profile path, or None (relative, inside the application)."""
    if not entry or "\0" in entry or not entry.isprintable():
        return "an empty or unprintable path"
    if entry.startswith("/"):
        return "an absolute path; paths are relative to the application's root"
    parts = entry.rstrip("/").split("/")
    if any(p in ("..", "") for p in parts):
        return "a path that leaves the application or has an empty part"
    if parts[0] == FILENAME or entry in (".", "./"):
        return "the manifest itself or the whole application (use fortify release)"
    return None


def _modes(node) -> dict:
    out = {}
    count = 0
    for key_node, value in _mapping(node, "fortification"):
        mode = key_node.value
        where = f"fortification.{mode}"
        if mode not in MODES:
            raise _error(key_node, f"fortification.{mode}", f"unknown mode; use {', '.join(MODES)}")
        if _is_null(value):
            out[mode] = ()
            continue
        if not isinstance(value, yaml.SequenceNode):
            raise _error(value, where, "a list of paths")
        entries = []
        for item in value.value:
            entry = _scalar(item, where)
            why = check_path(entry)
            if why:
                raise _error(item, where, f"{display_path(entry)!r} is {why}")
            entry = entry[2:] if entry.startswith("./") else entry
            entries.append(entry)
            count += 1
            if count > MAX_PATHS:
                raise _error(item, where, f"more than {MAX_PATHS} paths")
        out[mode] = tuple(dict.fromkeys(entries))
    return out


def _mapping(node, what: str) -> list:
    if not isinstance(node, yaml.MappingNode):
        raise _error(node, what, "a mapping of keys to values")
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _error(key_node, what, "keys must be plain words")
    return node.value


def _scalar(node, key: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _error(node, key, "a single value")
    return str(node.value)


def _is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _error(node, key: str, why: str) -> ManifestError:
    return ManifestError(f"{FILENAME} line {node.start_mark.line + 1}, {key}: {why}")


def _unique(pairs: tuple) -> tuple:
    seen = {}
    for path, why in pairs:
        seen.setdefault(path, why)
    return tuple(seen.items())


def write_new(folder: str, text: str, owner) -> None:
    """Blocking.  Create the manifest in ``folder`` with ``text``, owned by ``owner``, mode 0644;
    refused when something of that name is there (never through a link)."""
    name = FILENAME
    dir_fd = open_folder(folder)
    try:
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
        except FileExistsError:
            raise InvalidArgument(f"{name} already exists: edit it, or remove it first") from None
        try:
            os.write(fd, text.encode("utf-8"))
            if os.geteuid() == 0:
                os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
