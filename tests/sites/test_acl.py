"""The in-process POSIX ACL changes give exactly what setfacl gives, checked side by side on real files."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess

import pytest

from apiserver.errors import ServerError
from apiserver.sites import acl
from tests.sites.support import WEB_USER

WEB_UID = pwd.getpwnam(WEB_USER).pw_uid

#: Starting states: (kind, mode, setfacl/chmod steps run on both twins).
STATES = {
    "plain file": ("file", 0o644, []),
    "executable file": ("file", 0o744, []),
    "private file": ("file", 0o600, []),
    "group-executable file": ("file", 0o654, []),
    "file with a named user": ("file", 0o644, [["setfacl", "-m", "u:nobody:r"]]),
    "file whose mask a chmod narrowed": ("file", 0o654, [["setfacl", "-m", "u:nobody:r"], ["chmod", "g-x"]]),
    "file the web user may read": ("file", 0o640, [["setfacl", "-m", f"u:{WEB_USER}:r"]]),
    "file the web user may write, mask narrowed": ("file", 0o640, [["setfacl", "-m", f"u:{WEB_USER}:rw"],
                                                                   ["chmod", "g-w"]]),
    "plain folder": ("dir", 0o755, []),
    "private folder": ("dir", 0o750, []),
    "folder with a default ACL": ("dir", 0o751, [["setfacl", "-m", "u:nobody:r"], ["setfacl", "-m", "d:g:adm:r"]]),
    "folder whose mask a chmod narrowed": ("dir", 0o775, [["setfacl", "-m", "u:nobody:r"], ["chmod", "g-w"]]),
    "released folder": ("dir", 0o755, [["setfacl", "-m", f"u:{WEB_USER}:rwx,d:u:{WEB_USER}:rwx"]]),
}


def _make(path: str, kind: str, mode: int, steps: list) -> None:
    if kind == "dir":
        os.mkdir(path)
    else:
        open(path, "w").close()
    os.chmod(path, mode)
    for step in steps:
        subprocess.run(step + [path], check=True)


def _state(path: str) -> tuple:
    listing = subprocess.run(["getfacl", "-n", "-c", "-p", path], capture_output=True, text=True, check=True).stdout
    return listing, oct(os.stat(path).st_mode)


def _effective(path: str) -> dict:
    """{entry: effective rights as a 3-bit string} of the access and default ACLs (getfacl's view)."""
    listing = subprocess.run(["getfacl", "-n", "-c", "-e", path], capture_output=True, text=True,
                             check=True).stdout
    rights = {}
    for line in listing.splitlines():
        entry, _sep, effective = line.partition("#effective:")
        tag, _sep, perms = entry.strip().rpartition(":")
        if not tag or tag.endswith("mask:"):
            continue
        text = (effective or perms).strip()
        rights[tag + ":"] = "".join("1" if c != "-" else "0" for c in text)
    return rights


def _ours(operation: str, path: str) -> None:
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        target = acl.handle(fd)
        if operation == "grant":
            if os.path.isdir(path):
                acl.grant_folder(target, st, WEB_UID)
            else:
                acl.grant_file(target, st, WEB_UID)
        elif operation == "grant alone":
            acl.grant_folder(target, st, WEB_UID, inherit=False)
        else:
            acl.revoke(target, st, WEB_UID)
    finally:
        os.close(fd)


def _setfacl(operation: str, path: str) -> None:
    folder = os.path.isdir(path)
    if operation == "grant":
        spec = f"u:{WEB_USER}:rwx,d:u:{WEB_USER}:rwx" if folder else f"u:{WEB_USER}:rwX"
        command = ["setfacl", "-m", spec]
    elif operation == "grant alone":
        command = ["setfacl", "-m", f"u:{WEB_USER}:rwx"]
    else:
        command = ["setfacl", "-n", "-x", f"u:{WEB_USER},d:u:{WEB_USER}" if folder else f"u:{WEB_USER}"]
    subprocess.run(command + [path], check=True, capture_output=True)


CASES = [(state, operation) for state in sorted(STATES) for operation in ("grant", "grant alone", "revoke")
         if operation != "grant alone" or STATES[state][0] == "dir"]  # only folders are granted alone


@pytest.mark.parametrize("state,operation", CASES)
def test_changes_equal_setfacls(tmp_path, state, operation):
    """grant (-m u:WEB:rwX, folders also d:u:WEB:rwx) and grant alone (-m u:WEB:rwx) write exactly
    the ACL and mode setfacl writes on a twin; after revoke (-n -x) everyone has exactly the
    effective rights setfacl leaves, with the mask narrowed and, without named entries, no mask."""
    kind, mode, steps = STATES[state]
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    for path in (ours, theirs):
        _make(path, kind, mode, steps)
    _ours(operation, ours)
    _setfacl(operation, theirs)
    if operation != "revoke":
        assert _state(ours)[0].replace(ours, "X") == _state(theirs)[0].replace(theirs, "X")
        assert _state(ours)[1] == _state(theirs)[1]
        return
    assert _effective(ours) == _effective(theirs)
    listing = _state(ours)[0]
    for prefix in ("", "default:"):
        named = [line for line in listing.splitlines()
                 if line.startswith((f"{prefix}user:", f"{prefix}group:")) and line.split(":")[-2]]
        if not named:
            assert f"{prefix}mask::" not in listing
    if "user:" not in listing.replace("user::", "") and kind == "file":
        assert acl.ACCESS not in os.listxattr(ours)  # plain mode bits again
        assert os.stat(ours).st_mode & 0o070 == int(_effective(theirs)["group::"], 2) << 3


def test_nothing_is_written_when_nothing_changes(tmp_path):
    """A second grant or a revoke of an absent entry changes nothing, not even the change time."""
    path = str(tmp_path / "f")
    _make(path, "file", 0o644, [])
    _ours("grant", path)
    before = os.stat(path).st_ctime_ns
    _ours("grant", path)
    assert os.stat(path).st_ctime_ns == before
    other = str(tmp_path / "g")
    _make(other, "file", 0o644, [])
    before = os.stat(other).st_ctime_ns
    _ours("revoke", other)
    assert os.stat(other).st_ctime_ns == before
    assert acl.read(other) is None


def test_what_setfacl_writes_is_read_and_garbage_is_refused(tmp_path):
    """An attribute setfacl wrote decodes to its entries; bytes that are no ACL are a clear error."""
    path = str(tmp_path / "f")
    _make(path, "file", 0o640, [["setfacl", "-m", f"u:{WEB_USER}:rw,g:adm:r"]])
    found = acl.read(path)
    adm = grp.getgrnam("adm").gr_gid
    assert found == acl.Acl(user_obj=6, group_obj=4, other=0, mask=6, users={WEB_UID: 6}, groups={adm: 4})
    unknown_tag = b"\x02\x00\x00\x00\x40\x00\x07\x00\x00\x00\x00\x00"
    for garbage in (b"", b"\x02\x00\x00\x00\x01", b"\x03\x00\x00\x00", unknown_tag):
        with pytest.raises(ValueError):
            acl.Acl.decode(garbage)


def test_can_search_and_grant_search_go_by_the_acl(tmp_path):
    """A 0700 folder is closed to the web user until grant_search; grant_search keeps what it could already do."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    assert not acl.can_search(str(folder), WEB_USER)
    subprocess.run(["setfacl", "-m", f"u:{WEB_USER}:r", str(folder)], check=True)
    acl.grant_search(str(folder), WEB_USER)
    assert acl.can_search(str(folder), WEB_USER)
    listing = subprocess.run(["getfacl", "-n", "-c", str(folder)], capture_output=True, text=True).stdout
    assert f"user:{WEB_UID}:r-x" in listing
    os.chmod(folder, 0o700)  # a chmod empties the mask: the entry is there, its effect is not
    assert not acl.can_search(str(folder), WEB_USER)


def test_a_filesystem_without_acls_is_a_clear_error(tmp_path, monkeypatch):
    """EOPNOTSUPP from the filesystem is a ServerError that says what to do."""
    import errno

    path = str(tmp_path / "f")
    _make(path, "file", 0o644, [])

    def unsupported(*args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    with pytest.raises(ServerError, match="does not support POSIX ACLs"):
        _ours("grant", path)
