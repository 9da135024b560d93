"""scan_setuid on template roots built from this host's real setuid binaries, checked through dpkg."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from apiserver.errors import InvalidArgument, NotFound
from apiserver.sites import setuid

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-query") or os.geteuid() != 0,
                                reason="needs dpkg and root (to keep setuid bits on copies)")


def _copy(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src, dst)
    st = os.stat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))  # chown clears setuid: set the mode again


def _by_path(results):
    return {r.path: r for r in results}


def _sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_template_root_copies_modified_unowned_and_links(tmp_path):
    """A packaged copy is trusted, a changed copy and an unowned file are not, links are not followed."""
    root = tmp_path / "template"
    _copy("/usr/bin/passwd", str(root / "usr/bin/passwd"))
    _copy("/usr/bin/chsh", str(root / "usr/bin/chsh"))
    with open(root / "usr/bin/chsh", "ab") as fh:
        fh.write(b"\0backdoor")
    rogue = root / "usr/local/bin/rootshell"
    rogue.parent.mkdir(parents=True)
    rogue.write_bytes(b"#!/bin/sh\nexec /bin/sh -p\n")
    os.chmod(rogue, 0o4755)
    os.symlink("/usr/bin/su", root / "usr/bin/su")
    os.symlink("/usr/bin", root / "linked-bin")
    plain = root / "usr/bin/plain"
    plain.write_text("not setuid")
    found = _by_path(setuid.scan(str(root)))
    assert set(found) == {str(root / "usr/bin/passwd"), str(root / "usr/bin/chsh"), str(rogue)}
    passwd = found[str(root / "usr/bin/passwd")]
    assert (passwd.package, passwd.trusted, passwd.owner, passwd.mode) == ("passwd", True, "root", "4755")
    assert passwd.sha256 == _sha256("/usr/bin/passwd")
    chsh = found[str(root / "usr/bin/chsh")]
    assert (chsh.package, chsh.trusted) == ("passwd", False)
    assert (found[str(rogue)].package, found[str(rogue)].trusted, found[str(rogue)].mode) == (None, False, "4755")


def test_merged_usr_paths_are_found_under_either_spelling(tmp_path):
    """su is listed by dpkg as /bin/su on merged-/usr systems; <root>/usr/bin/su still finds its package."""
    root = tmp_path / "template"
    _copy("/usr/bin/su", str(root / "usr/bin/su"))
    owner = subprocess.run(["dpkg-query", "-S", "/bin/su"], capture_output=True, text=True).stdout.split(":")[0]
    (result,) = setuid.scan(str(root))
    assert (result.package, result.trusted) == (owner, True)


def test_real_host_usr_bin_through_hard_links(tmp_path):
    """Every setuid/setgid file of this host's /usr/bin, hard-linked into a template, is trusted (as ApisCP's
    template layers share the system's inodes)."""
    real = []
    for entry in os.scandir("/usr/bin"):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            real.append(entry.name)
    assert real, "this host has setuid binaries in /usr/bin"
    root = tmp_path / "template"
    (root / "usr/bin").mkdir(parents=True)
    try:
        for name in real:
            os.link(f"/usr/bin/{name}", root / "usr/bin" / name)
    except OSError as exc:
        pytest.skip(f"cannot hard-link /usr/bin here: {exc}")
    found = setuid.scan(str(root))
    assert sorted(os.path.basename(r.path) for r in found) == sorted(real)
    for r in found:
        assert r.trusted and r.package, r
        assert r.sha256 == _sha256(f"/usr/bin/{os.path.basename(r.path)}")


def test_bad_roots_are_refused(tmp_path):
    """A missing root is NotFound; a file, a link, a relative path or NUL is InvalidArgument."""
    with pytest.raises(NotFound):
        setuid.scan(str(tmp_path / "none"))
    (tmp_path / "file").write_text("x")
    os.symlink(str(tmp_path), tmp_path / "link")
    for bad in (str(tmp_path / "file"), str(tmp_path / "link"), "relative/path", "/tmp/a\x00b", ""):
        with pytest.raises(InvalidArgument):
            setuid.scan(bad)


def test_other_filesystems_are_not_walked(tmp_path):
    """A setuid file on a filesystem mounted inside the root is not reported: the walk stays on one."""
    root = tmp_path / "template"
    _copy("/usr/bin/passwd", str(root / "usr/bin/passwd"))
    mounted = root / "mnt"
    mounted.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(mounted)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        _copy("/usr/bin/passwd", str(mounted / "passwd"))
        assert os.stat(mounted / "passwd").st_mode & stat.S_ISUID
        assert [r.path for r in setuid.scan(str(root))] == [str(root / "usr/bin/passwd")]
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


def test_dpkg_output_and_aliases():
    """dpkg-query -S lines with several packages, architectures and diversions; merged-/usr spellings."""
    text = ("passwd: /usr/bin/passwd\nlibc6:amd64, libc6:i386: /usr/share/doc/x\n"
            "diversion by dash from: /bin/sh\n")
    assert setuid.parse_dpkg_search(text) == [(["passwd"], "/usr/bin/passwd"),
                                              (["libc6:amd64", "libc6:i386"], "/usr/share/doc/x")]
    assert setuid.merged_alias("/usr/bin/su") == "/bin/su"
    assert setuid.merged_alias("/bin/su") == "/usr/bin/su"
    assert setuid.merged_alias("/usr/local/bin/x") is None


def test_rpm_dump_digests():
    """rpm -q --dump lines give each path's recorded digest (paths may hold spaces).

    rpm itself is not installed here: this covers the parsing, not a real rpm database."""
    digest = "a" * 64
    text = (f"/usr/bin/passwd 33424 1700000000 {digest} 0104755 root root 0 0 0 X\n"
            f"/usr/share/doc/my file 10 1700000000 {'b' * 64} 0100644 root root 0 1 0 X\n")
    assert setuid.parse_rpm_dump(text) == {"/usr/bin/passwd": digest, "/usr/share/doc/my file": "b" * 64}


def test_real_host_usr_bin_scanned_directly():
    """A scan of the host's /usr/bin itself finds every setuid/setgid file there, each trusted by its package."""
    expected = sorted(entry.path for entry in os.scandir("/usr/bin")
                      if stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)
                      and entry.stat(follow_symlinks=False).st_mode & (stat.S_ISUID | stat.S_ISGID))
    found = setuid.scan("/usr/bin")
    assert [r.path for r in found] == expected and expected
    owners = {}
    for r in found:
        assert r.trusted and r.package, r
        owners[os.path.basename(r.path)] = r.package
    assert owners.get("passwd") == "passwd"


def test_a_folder_swapped_for_a_link_mid_walk_is_not_entered(tmp_path, monkeypatch):
    """A folder of the root replaced by a link to elsewhere just before it is listed: what lies behind
    is not scanned."""
    from tests.sites.support import swap_for_link_before_listing

    root = tmp_path / "template"
    _copy("/usr/bin/passwd", str(root / "usr/bin/passwd"))
    os.makedirs(root / "opt" / "bin")
    outside = tmp_path / "outside"
    _copy("/usr/bin/passwd", str(outside / "bin" / "passwd"))
    swap_for_link_before_listing(monkeypatch, str(root / "opt"), str(outside))
    assert [r.path for r in setuid.scan(str(root))] == [str(root / "usr/bin/passwd")]
    assert os.path.islink(root / "opt")
