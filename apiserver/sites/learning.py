"""Fortification's learning mode: what the web server user made or changed during a learn window.

ApisCP: "only files created or modified during that window will be allowed future write-access".
The web server user's files are told apart by their owner: what it creates it owns (the site's
owner and its users own everything else), so the owner's own edits during the window, however
recent, are never learned.  Among the files it owns, those it created or changed in the window
are told from older ones by their change time (``st_ctime``, which a write, a new entry in a
folder, a chmod or an ACL change all move), compared with the filesystem's own time taken when
the window opened, after the folder was opened up (that change moved every entry's ctime); a
change in the clock tick of that moment itself (a few milliseconds) is not told apart from the
opening and is not learned.
What the web server changed in place in a file it does not own keeps that file's owner and is
not learned: only an audit of each write could tell who made it.  Everything here is blocking.
"""

from __future__ import annotations

import os
import stat
import tempfile

from apiserver.sites.manifest import check_path
from apiserver.sites.walk import walk_inside


def learn(folder: str, web_uid: int, home_root: str, since_ns: int = 0) -> list:
    """Blocking.  What the web server user made or changed under ``folder`` since ``since_ns``
    (filesystem time): the entries it owns whose ctime is not older.

    A folder counts with everything under it (``dir/``), a file alone; an older folder of its own
    is searched like the owner's.  The manifest never counts.  The walk never follows a link nor
    leaves the home ``home_root`` (a real path).
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
            # Strictly later: the kernel stamps times from a clock that moves a tick (a few ms) at
            # a time, so the opening's own ACL changes can carry the marker's very time.
            recent = st.st_uid == web_uid and st.st_ctime_ns > since_ns
            if stat.S_ISDIR(st.st_mode):
                if recent:
                    learned.append(rel + "/")  # its whole tree is writable
                else:
                    descend.append(entry.name)
            elif stat.S_ISREG(st.st_mode) and recent and check_path(rel) is None:
                learned.append(rel)
        here.subfolders = [name for name in here.subfolders if name in descend]
    return sorted(learned)


def filesystem_now_ns(directory: str) -> int:
    """Blocking.  The filesystem's current time: the change time of a file made now in ``directory``
    (what entries' ctimes are compared with must come from the same clock as they do)."""
    with tempfile.NamedTemporaryFile(prefix=".apiserver-fortify-", dir=directory) as marker:
        return os.fstat(marker.fileno()).st_ctime_ns


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
