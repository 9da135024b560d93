"""setuid and setgid files of a filesystem template root, checked against the system's packages.

A template root mirrors ``/`` (ApisCP's FILESYSTEMTEMPLATE layers): ``<root>/usr/bin/passwd``
stands for ``/usr/bin/passwd``; a file no package owns there is also asked for by its own path,
so that a scan of ``/usr/bin`` itself finds the host's packages.  The walk stays on the root's
filesystem (other mounts, and so /proc, /sys and /dev, are skipped by device number) and never
follows a link.  For each setuid or setgid regular file the package manager says which package
owns the same path, and the file is trusted only when its content is that package's: dpkg's
recorded MD5 (``/var/lib/dpkg/info/<package>.md5sums``), or rpm's recorded digest (``rpm -q
--dump``).  dpkg is asked once for all paths (in batches); on merged-/usr systems ``/usr/bin/su``
and ``/bin/su`` are the same file, so the other spelling is asked too.  Blocking work throughout.
"""

from __future__ import annotations

import errno
import glob
import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from typing import Optional

from apiserver.errors import InvalidArgument, NotFound, ServerError
from apiserver.sites.home import display_path
from apiserver.sites.walk import walk_inside
from apiserver.sites.records import SetuidFile

DPKG_INFO = "/var/lib/dpkg/info"
BATCH = 200
#: Merged-/usr: each of these top-level folders is also reachable under /usr.
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_GLOB_CHARS = "*?[]\\"


def scan(root: str) -> list:
    """Blocking.  Every setuid/setgid regular file under ``root``, as :class:`SetuidFile`, by path."""
    root = _check_root(root)
    found = _find(root)
    if not found:
        return []
    template_paths = [_template_path(root, path) for path, *_rest in found]
    manager = package_manager()
    owners = manager.owners(template_paths)
    # A file no package owns under the template's view may be one the host installed where it is
    # (a scan of /usr/bin itself): ask for its own path too.
    unowned = [path for (path, *_rest), template in zip(found, template_paths)
               if template not in owners and path != template]
    host_owners = manager.owners(unowned) if unowned else {}
    results = []
    for (path, st, sha256, md5), template in zip(found, template_paths):
        package, trusted = None, False
        for name, packaged_path in owners.get(template) or host_owners.get(path, []):
            if package is None:
                package = name
            if manager.vouches(name, packaged_path, sha256=sha256, md5=md5):
                package, trusted = name, True
                break
        results.append(SetuidFile(path=path, mode=f"{stat.S_IMODE(st.st_mode):04o}", owner=_user(st.st_uid),
                                  group=_group(st.st_gid), sha256=sha256, package=package, trusted=trusted))
    return results


def _check_root(root) -> str:
    if not isinstance(root, str) or not root:
        raise InvalidArgument("root must be a folder's absolute path")
    if "\x00" in root:
        raise InvalidArgument("root may not contain NUL bytes")
    if not root.startswith("/"):
        raise InvalidArgument(f"root {display_path(root)!r} is not an absolute path")
    root = os.path.normpath(root)
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        raise NotFound(f"no folder {display_path(root)!r}") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read {display_path(root)!r}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise InvalidArgument(f"root {display_path(root)!r} is a symbolic link; give the folder it names")
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidArgument(f"root {display_path(root)!r} is not a folder")
    return root


def _find(root: str) -> list:
    """Blocking.  (host path, lstat, sha256, md5) of setuid/setgid regular files on root's filesystem,
    by path; the walk goes by descriptors (:func:`apiserver.sites.walk.walk`), so a link, even one
    swapped in mid-walk, is never followed, and other filesystems (/proc, /sys, /dev, mounts) are
    not walked."""
    found = []
    for folder in walk_inside(root, os.path.realpath(root), shown=root, one_filesystem=True):
        for entry in folder.entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                try:
                    digests = _digests(entry.name, folder.fd)
                except OSError:
                    continue  # gone or replaced since it was listed
                found.append((folder.child_path(entry.name), st) + digests)
    return sorted(found, key=lambda item: item[0])


def _template_path(root: str, path: str) -> str:
    """The path ``path`` stands for on a running system: relative to root, under /."""
    rel = os.path.relpath(path, root)
    return "/" + rel if rel != "." else "/"


def _digests(name: str, dir_fd: int) -> tuple:
    """Blocking.  (sha256, md5) hex digests of the regular file ``name`` in the folder open at
    ``dir_fd`` (a link or anything but a regular file is refused)."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def merged_alias(path: str) -> Optional[str]:
    """The other spelling of ``path`` on a merged-/usr system (/bin/su <-> /usr/bin/su), or None."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] in _MERGED:
        return "/usr" + path
    if len(parts) > 3 and parts[1] == "usr" and parts[2] in _MERGED:
        return path[len("/usr"):]
    return None


def package_manager():
    """Blocking.  The system's package manager: dpkg where it is installed, else rpm."""
    if shutil.which("dpkg-query"):
        return Dpkg()
    if shutil.which("rpm"):
        return Rpm()
    raise ServerError("no package manager to ask: neither dpkg-query nor rpm is installed")


class Dpkg:
    """Package ownership through ``dpkg-query -S``, content through the packages' md5sums files."""

    def __init__(self, info_dir: str = DPKG_INFO):
        self.info_dir = info_dir
        self._md5sums: dict = {}

    def owners(self, paths: list) -> dict:
        """Blocking.  {path: [(package, path as dpkg lists it), ...]} for every path some package owns."""
        owned = self._query(paths)
        aliases = {merged_alias(p): p for p in paths if p not in owned and merged_alias(p)}
        for alias, entries in self._query(list(aliases)).items():
            owned[aliases[alias]] = entries
        return owned

    def _query(self, paths: list) -> dict:
        owned: dict = {}
        wanted = set(paths)
        for start in range(0, len(paths), BATCH):
            chunk = paths[start:start + BATCH]
            proc = subprocess.run(["dpkg-query", "-S", "--", *[_escape_glob(p) for p in chunk]],
                                  capture_output=True, timeout=300)
            if proc.returncode not in (0, 1):  # 1: some path is not owned
                raise ServerError(f"dpkg-query failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
            for packages, path in parse_dpkg_search(proc.stdout.decode("utf-8", "surrogateescape")):
                if path in wanted:
                    owned.setdefault(path, []).extend((name, path) for name in packages)
        return owned

    def vouches(self, package: str, packaged_path: str, sha256: str, md5: str) -> bool:
        """Blocking.  Whether ``package`` recorded this MD5 for ``packaged_path``."""
        sums = self._md5sums.get(package)
        if sums is None:
            sums = self._md5sums[package] = self._read_md5sums(package)
        return sums.get(packaged_path.lstrip("/")) == md5

    def _read_md5sums(self, package: str) -> dict:
        sums = {}
        base = package.split(":")[0]
        for name in [os.path.join(self.info_dir, f"{package}.md5sums")] + sorted(
                glob.glob(os.path.join(glob.escape(self.info_dir), glob.escape(base) + ":*.md5sums"))) + [
                os.path.join(self.info_dir, f"{base}.md5sums")]:
            try:
                with open(name, encoding="utf-8", errors="surrogateescape") as fh:
                    for line in fh:
                        digest, _, path = line.rstrip("\n").partition("  ")
                        if path:
                            sums[path] = digest
            except FileNotFoundError:
                continue
        return sums


def parse_dpkg_search(output: str) -> list:
    """``dpkg-query -S`` lines as [([package, ...], path)]; diversion lines are skipped."""
    found = []
    for line in output.splitlines():
        if not line or line.startswith("diversion by "):
            continue
        packages, sep, path = line.partition(": ")
        if not sep:
            continue
        found.append(([p.strip() for p in packages.split(",") if p.strip()], path))
    return found


def _escape_glob(path: str) -> str:
    return "".join("\\" + c if c in _GLOB_CHARS else c for c in path)


class Rpm:
    """Package ownership through ``rpm -qf``, content through ``rpm -q --dump``'s recorded digests."""

    def __init__(self):
        self._dumps: dict = {}

    def owners(self, paths: list) -> dict:
        """Blocking.  {path: [(package, path)]} through ``rpm -qf`` (one call per path)."""
        owned = {}
        for path in paths:
            proc = subprocess.run(["rpm", "-qf", "--queryformat", "%{NAME}\\n", "--", path],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                owned[path] = [(name, path) for name in proc.stdout.split()]
        return owned

    def vouches(self, package: str, packaged_path: str, sha256: str, md5: str) -> bool:
        """Blocking.  Whether ``package``'s recorded digest of ``packaged_path`` is this file's."""
        dump = self._dumps.get(package)
        if dump is None:
            proc = subprocess.run(["rpm", "-q", "--dump", "--", package], capture_output=True, text=True, timeout=120)
            dump = self._dumps[package] = parse_rpm_dump(proc.stdout)
        recorded = dump.get(packaged_path)
        return recorded is not None and recorded.lower() in (sha256, md5)


def parse_rpm_dump(output: str) -> dict:
    """``rpm -q --dump`` lines (path size mtime digest mode ...) as {path: digest}."""
    digests = {}
    for line in output.splitlines():
        fields = line.rsplit(" ", 10)
        if len(fields) == 11:
            digests[fields[0]] = fields[3]
    return digests
