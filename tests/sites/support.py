"""Test support for the security module: a site the web server user can reach, and acting as that user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

WEB_USER = "www-data"


@pytest.fixture
def sites_root():
    """An absolute ``[web] sites_root`` the web user can reach: a fresh 0711 folder in /tmp.

    Not under pytest's tmp_path: /tmp/pytest-of-root is 0700 and every new pytest session on
    the machine chmods it back to 0700, which also clears an ACL mask granted on it.
    """
    path = tempfile.mkdtemp(prefix="apiserver-sites-", dir="/tmp")
    os.chmod(path, 0o711)
    yield os.path.join(path, "sites")
    remove_tree(path)


def as_web(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``sh -c script`` as the web server user with positional ``args``."""
    return subprocess.run(["runuser", "-u", WEB_USER, "--", "sh", "-c", script, "sh", *args],
                          capture_output=True, text=True, timeout=30)


def web_can_write(path: str) -> bool:
    """Whether the web user can append to the file ``path``, or create a file in the folder ``path``."""
    if os.path.isdir(path):
        probe = os.path.join(path, ".probe-web")
        ok = as_web('echo x > "$1"', probe).returncode == 0
        if os.path.lexists(probe):
            os.unlink(probe)
        return ok
    return as_web('echo x >> "$1"', path).returncode == 0


def make_tree(root: str, files: dict, owner) -> None:
    """Create ``files`` ({relative path: content}; a path ending in '/' is a folder) owned by ``owner``."""
    for rel, content in files.items():
        path = os.path.join(root, rel)
        if rel.endswith("/"):
            os.makedirs(path, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            with open(path, "w") as fh:
                fh.write(content)
            os.chmod(path, 0o644)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.chown(name, owner.uid, owner.gid, follow_symlinks=False)


WORDPRESS = {
    "index.php": "<?php require 'wp-blog-header.php';",
    "wp-config.php": "<?php define('DB_PASSWORD', 'secret');",
    "wp-includes/version.php": "<?php $wp_version = '6.5';",
    "wp-content/uploads/2026/photo.jpg": "jpeg",
    "wp-content/plugins/akismet/akismet.php": "<?php",
    "wp-content/themes/twentytwenty/style.css": "body{}",
}


class _Listing:
    """What os.scandir returns, over entries already read."""

    def __init__(self, entries):
        self._entries = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass


def swap_for_link_before_listing(monkeypatch, folder: str, target: str) -> None:
    """Make the first listing of ``folder`` find it replaced by a link to ``target``, as a web
    application winning a race would: the last moment before a walk reads the folder."""
    real_scandir = os.scandir
    swapped = []

    def swapping_scandir(path="."):
        listed = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else path
        if listed == folder and not swapped:
            swapped.append(folder)
            shutil.rmtree(folder)
            os.symlink(target, folder)
        with real_scandir(path) as listing:
            return _Listing(list(listing))

    monkeypatch.setattr(os, "scandir", swapping_scandir)


def requires_root():
    return pytest.mark.skipif(os.geteuid() != 0, reason="acts as the web server user through runuser (root)")


def make_deep(top_fd: int, depth: int, side_folders: bool = False, leaf: str = "", name: str = "d",
              owner=None) -> None:
    """Make ``depth`` nested folders ``name/name/...`` in the folder open at ``top_fd`` (by descriptors:
    the path may be longer than PATH_MAX), each level with a folder ``side`` beside the next when
    ``side_folders``, and a file ``leaf`` at the bottom when given; owned by ``owner`` when given."""
    fd = os.dup(top_fd)
    try:
        for _level in range(depth):
            os.mkdir(name, 0o755, dir_fd=fd)
            if side_folders:
                os.mkdir("side", 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown("side", owner.uid, owner.gid, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
        if leaf:
            made = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            if owner is not None:
                os.fchown(made, owner.uid, owner.gid)
            os.close(made)
    finally:
        os.close(fd)


def stat_below(folder: str, rel: str) -> os.stat_result:
    """The lstat of ``folder/rel``, reached one name at a time (``rel`` may be longer than PATH_MAX)."""
    from apiserver.sites.walk import open_below

    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_below(top, rel, os.O_PATH | os.O_NOFOLLOW)
    finally:
        os.close(top)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _chunks(rel: str, size: int = 2000) -> list:
    """``rel`` cut at slashes into pieces shorter than ``size`` characters (each a valid path)."""
    pieces, current = [], ""
    for part in rel.split("/"):
        if current and len(current) + len(part) + 1 > size:
            pieces.append(current)
            current = part
        else:
            current = f"{current}/{part}" if current else part
    return pieces + ([current] if current else [])


def as_web_in(folder: str, rel: str, script: str) -> subprocess.CompletedProcess:
    """Run ``sh -c script`` as the web server user in the folder ``folder/rel``, reached by ``cd`` a
    piece at a time, as a web application would (``rel`` may be longer than PATH_MAX)."""
    pieces = _chunks(rel)
    steps = " && ".join(f'cd "${{{i}}}"' for i in range(1, len(pieces) + 2))
    return as_web(f"{steps} && {{ {script}; }}", folder, *pieces)


def web_can_write_below(folder: str, rel: str, name: str = "") -> bool:
    """Whether the web user can append to the file ``name`` in ``folder/rel``, or, without ``name``,
    create (and remove again) a file in that folder."""
    if name:
        return as_web_in(folder, rel, f'echo x >> "{name}"').returncode == 0
    return as_web_in(folder, rel, "echo x > .probe-web && rm -f .probe-web").returncode == 0
def lockdown_machine() -> str:
    """Test set-up for the lockdown of binaries: a fresh 0755 folder in /tmp holding ``bin/`` with
    copies of the host's cat, whoami and perl, and a template root ``template/`` whose copy of that
    ``bin/`` hard-links cat.  The caller removes it (:func:`remove_tree`)."""
    top = tempfile.mkdtemp(prefix="apiserver-lockdown-", dir="/tmp")
    os.chmod(top, 0o755)
    bin_dir = os.path.join(top, "bin")
    os.mkdir(bin_dir)
    for name in ("cat", "whoami", "perl"):
        shutil.copy2(shutil.which(name), os.path.join(bin_dir, name))
    shadow = os.path.join(top, "template", bin_dir.lstrip("/"))
    os.makedirs(shadow)
    os.link(os.path.join(bin_dir, "cat"), os.path.join(shadow, "cat"))
    return top


def remove_tree(path: str) -> None:
    """Remove the folder ``path`` however deep it goes, never through a link: by descriptors, one
    level at a time (shutil.rmtree recurses past Python's limit, rm -rf slows down with depth)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    stack = [(os.open(path, flags), "")]
    try:
        while stack:
            fd, _name = stack[-1]
            subfolder = None
            with os.scandir(fd) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        subfolder = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if subfolder is not None:
                stack.append((os.open(subfolder, flags, dir_fd=fd), subfolder))
                continue
            stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(_name, dir_fd=stack[-1][0])
    finally:
        for fd, _name in stack:
            os.close(fd)
    os.rmdir(path)
