"""The server's own state kept from every site and from the web server, whatever the umask.

``state_dir`` holds the database, the secret, logs and scope files; by default it also holds
``sites_root``.  Site users (and the web server) must pass through ``state_dir`` to reach their
sites, so the folders on that way are ``0711`` (pass, never list) and everything else in them is
made unreadable to all but the owner (folders ``0700``, files ``0600``, group and other bits
removed): knowing a file's name is not enough to read it.  When ``sites_root`` lies elsewhere
``state_dir`` is simply ``0700``.  Blocking; run at start-up and by ``apiserver migrate-sites``.
"""

from __future__ import annotations

import os
import stat


def protect_state(state_dir: str, sites_root: str, sites_pass: bool) -> list:
    """Blocking.  Apply the modes above; the paths changed.  ``sites_pass``: site users must pass
    through to ``sites_root`` (system accounts), else only the owner (and the web server's
    ACL entry, which is kept) passes."""
    state = os.path.realpath(state_dir)
    sites = os.path.realpath(sites_root)
    changed = []
    if sites_pass and os.path.isdir(sites):
        _set_mode(sites, 0o711, changed)  # sites pass to their own site<N>; nobody lists the domains
    if not sites.startswith(state.rstrip(os.sep) + os.sep):
        _set_mode(state, 0o700, changed)
        return changed
    way = []
    path = os.path.dirname(sites)
    while True:
        way.append(path)
        if path == state:
            break
        path = os.path.dirname(path)
    passing = set(way) | {sites}
    for folder in way:
        _set_mode(folder, 0o711 if sites_pass else 0o700, changed)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.path in passing or entry.is_symlink():
                    continue
                info = entry.stat(follow_symlinks=False)
                _set_mode(entry.path, stat.S_IMODE(info.st_mode) & 0o700, changed)
    return changed


def _set_mode(path: str, mode: int, changed: list) -> None:
    if stat.S_IMODE(os.lstat(path).st_mode) != mode:
        os.chmod(path, mode)  # never a link: those are skipped above
        changed.append(path)
