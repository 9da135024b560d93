"""The lockdown of binaries for real: ACLs on copies of system binaries, checked by running them as the web
server user, a site user and root (never the machine's own /usr/bin: the rest of the suite runs PHP, perl
and python as the web server user)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from apiserver.errors import Denied, InvalidArgument
from apiserver.sites.lockdown import targets
from tests.accounts.support import Harness, wait
from tests.sites.support import WEB_USER, lockdown_machine, remove_tree, requires_root

pytestmark = requires_root()

SITE_USER = "nobody"  # stands for a site's own user: not the web server user, not root


@pytest.fixture
def machine():
    """A fake machine in /tmp: bin/ with copies of cat, whoami and perl, a pyenv tree, and a template root
    holding the same paths (cat hard-linked to the host's, whoami a copy of its own)."""
    top = lockdown_machine()
    bin_dir = os.path.join(top, "bin")
    os.symlink("cat", os.path.join(bin_dir, "kitty"))  # a link: its file gets the ACL
    pyenv = os.path.join(top, "pyenv", "bin")
    os.makedirs(pyenv)
    shutil.copy2(shutil.which("true"), os.path.join(pyenv, "python"))
    for folder in (top, os.path.join(top, "pyenv")):
        os.chmod(folder, 0o755)
    shadow = os.path.join(top, "template", bin_dir.lstrip("/"))
    shutil.copy2(os.path.join(bin_dir, "whoami"), os.path.join(shadow, "whoami"))
    with open(os.path.join(top, "note.txt"), "w") as fh:
        fh.write("hello\n")
    os.chmod(os.path.join(top, "note.txt"), 0o644)
    yield top
    remove_tree(top)


@pytest.fixture
def lockdown_harness(tmp_path, machine):
    """A harness whose [security] lockdown settings name only the fake machine."""
    h = Harness(tmp_path / "state", {"security": {
        "lockdown_binaries": "cat kitty whoami perl* missing*",
        "lockdown_search_path": os.path.join(machine, "bin"),
        "lockdown_trees": f"{machine}/pyenv {machine}/rbenv",
        "template_root": os.path.join(machine, "template"),
        "lockdown_interval": "86400"}})
    yield h
    h.close()


def _run(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=30)


def test_targets_are_looked_up_by_name_in_the_search_path_and_the_template(machine):
    """Names and patterns are found in the search path, trees that exist are added, each again under the template."""
    bin_dir = os.path.join(machine, "bin")
    found = targets(["cat", "perl*", "nothing"], [bin_dir], [f"{machine}/pyenv", f"{machine}/none"],
                    os.path.join(machine, "template"))
    shadow = os.path.join(machine, "template", bin_dir.lstrip("/"))
    assert found == [f"{bin_dir}/cat", f"{bin_dir}/perl", f"{machine}/pyenv", f"{shadow}/cat"]
    with pytest.raises(InvalidArgument):
        targets(["../cat"], [bin_dir], [], "/")
    with pytest.raises(InvalidArgument, match="is a folder"):  # never a whole /usr/bin by mistake
        targets([bin_dir], [bin_dir], [], "/")


def test_lockdown_denies_the_web_user_and_keeps_site_users_and_root(lockdown_harness, machine):
    """After security_lockdown the web user cannot run (or read) a listed binary; a site user and root still can."""
    h = lockdown_harness
    cat = os.path.join(machine, "bin", "cat")
    note = os.path.join(machine, "note.txt")
    assert _run(WEB_USER, cat, note).stdout == "hello\n"  # before: anyone runs it
    assert h.call(h.admin, "security_lockdown") is True
    for argv in ([cat, note], [os.path.join(machine, "bin", "kitty"), note], [os.path.join(machine, "bin", "whoami")],
                 [os.path.join(machine, "pyenv", "bin", "python")]):
        denied = _run(WEB_USER, *argv)
        assert denied.returncode != 0 and "ermission denied" in denied.stderr, argv
    assert _run(WEB_USER, "cp", cat, "/tmp/apiserver-lockdown-copy").returncode != 0  # nor copied to run elsewhere
    assert _run(SITE_USER, cat, note).stdout == "hello\n"
    assert _run(SITE_USER, os.path.join(machine, "bin", "whoami")).stdout.strip() == SITE_USER
    assert _run("root", os.path.join(machine, "bin", "whoami")).stdout.strip() == "root"
    status = {e.path: e.denied for e in h.call(h.admin, "security_lockdown_status")}
    shadow = os.path.join(machine, "template", machine.lstrip("/"), "bin")
    assert status == {f"{machine}/bin/{n}": True for n in ("cat", "kitty", "whoami", "perl")} | {
        f"{machine}/pyenv": True, f"{shadow}/cat": True, f"{shadow}/whoami": True}
    # the template's cat is the host's (one inode, one ACL); its own whoami got its own
    assert _run(WEB_USER, f"{shadow}/whoami").returncode != 0


def test_the_timer_reapplies_the_lockdown_after_a_binary_is_replaced(lockdown_harness, machine):
    """A package update replaces a binary (new inode, no ACL): the daily timer locks it again."""
    h = lockdown_harness  # its services, the lockdown's timer among them, started with it
    whoami = os.path.join(machine, "bin", "whoami")
    h.clock.advance(86400)  # no lockdown asked for yet: the timer changes nothing
    assert _run(WEB_USER, whoami).stdout.strip() == WEB_USER
    assert not os.path.exists(os.path.join(h.config.state_dir, "lockdown.json"))
    assert h.call(h.admin, "security_lockdown", ["whoami"]) is True
    assert [(e.path, e.denied) for e in h.call(h.admin, "security_lockdown_status")] == [
        (whoami, True), (f"{machine}/pyenv", True), (os.path.join(machine, "template", whoami.lstrip("/")), True)]
    shutil.copy2(shutil.which("whoami"), whoami + ".new")
    os.replace(whoami + ".new", whoami)
    assert _run(WEB_USER, whoami).stdout.strip() == WEB_USER
    assert not {e.path: e.denied for e in h.call(h.admin, "security_lockdown_status")}[whoami]
    h.clock.advance(86399)
    assert _run(WEB_USER, whoami).returncode == 0
    h.clock.advance(1)
    wait(h.app.lockdown.idle())  # the re-apply runs on the blocking pool
    assert _run(WEB_USER, whoami).returncode != 0
    assert all(e.denied for e in h.call(h.admin, "security_lockdown_status"))


def test_lockdown_is_for_the_appliance_administrator_and_checks_its_argument(lockdown_harness):
    """A site administrator is refused; paths must be a list of names or absolute paths."""
    h = lockdown_harness
    site = h.add_site()
    with pytest.raises(Denied):
        h.call(site, "security_lockdown")
    with pytest.raises(Denied):
        h.call(site, "security_lockdown_status")
    with pytest.raises(InvalidArgument):
        h.call(h.admin, "security_lockdown", ["../../etc/passwd"])
    with pytest.raises(InvalidArgument):
        h.call(h.admin, "security_lockdown", ["x"] * 300)
    with pytest.raises(InvalidArgument, match="empty"):  # never "nothing", never "the default list" by mistake
        h.call(h.admin, "security_lockdown", [])
    assert not os.path.exists(os.path.join(h.config.state_dir, "lockdown.json"))
