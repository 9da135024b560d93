"""Fortification's learning mode: what the web server user made during a learn window.

ApisCP: "only files created or modified during that window will be allowed future write-access".
The web server user's files are told apart by their owner: what it creates it owns (the site's
owner and its users own everything else), so the owner's own edits during the window, however
recent, are never learned.  What it changed in place in a file it does not own keeps that
file's owner and is not learned either: only an audit of each write could tell who made it.
Everything here is blocking.
"""

from __future__ import annotations

import os
import stat

from apiserver.sites.manifest import check_path
from apiserver.sites.walk import walk_inside


def learn(folder: str, web_uid: int, home_root: str) -> list:
    """Blocking.  What the web server user made under ``folder``: the entries it owns.

    A folder it owns counts with everything under it (``dir/``), a file it owns alone.  The
    owner's own edits never count (they keep the owner's uid), nor does the manifest.  The walk
    never follows a link nor leaves the home ``home_root`` (a real path).
    """
    learned = []
    for here in walk_inside(folder, home_root, shown="."):
        descend = []
        for entry in here.entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            rel = here.child_rel(entry.name)
            if stat.S_ISDIR(st.st_mode):
                if st.st_uid == web_uid:
                    learned.append(rel + "/")  # its whole tree is writable
                else:
                    descend.append(entry.name)
            elif stat.S_ISREG(st.st_mode) and st.st_uid == web_uid and check_path(rel) is None:
                learned.append(rel)
        here.subfolders = [name for name in here.subfolders if name in descend]
    return sorted(learned)


def added_to(known, learned: list, found: list) -> list:
    """``learned`` plus what of ``found`` the profile paths ``known`` do not already cover."""
    trees = {k.rstrip("/") for k in known if k.endswith("/")}
    out = list(learned)
    for entry in found:
        if entry not in known and entry not in out and not under_any(os.path.dirname(entry.rstrip("/")), trees):
            out.append(entry)
    return sorted(out)


def under_any(rel: str, folders: set) -> bool:
    """Whether ``rel`` is one of ``folders`` or lies under one."""
    if rel in folders:
        return True
    parent = os.path.dirname(rel)
    while parent:
        if parent in folders:
            return True
        parent = os.path.dirname(parent)
    return False
