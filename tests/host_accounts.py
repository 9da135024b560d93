"""Real system users and groups for tests (``groupadd``/``useradd``), removed afterwards even when the
test fails.  Names start with ``aatest`` and a random part, so parallel runs never collide."""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import pwd
import secrets
import subprocess

import pytest

from apiserver.sites.actas import FsIdentity


@dataclasses.dataclass(frozen=True)
class HostUser:
    """A user made for a test: its name, uid, primary gid (its site's group) and that group's name."""

    name: str
    uid: int
    gid: int
    group: str

    @property
    def identity(self) -> FsIdentity:
        return FsIdentity(self.uid, self.gid, (self.gid,), self.name)


def requires_root():
    return pytest.mark.skipif(os.geteuid() != 0, reason="makes system users and acts as them (root)")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def host_accounts(groups: int = 1, users_per_group: int = 1, shell: str = "/usr/sbin/nologin"):
    """Yield ``groups`` lists of ``users_per_group`` :class:`HostUser` (each group a "site")."""
    tag = secrets.token_hex(3)
    made_groups, made_users, sites = [], [], []
    try:
        for g in range(groups):
            group = f"aatest{tag}g{g}"
            _run("groupadd", group)
            made_groups.append(group)
            gid = grp.getgrnam(group).gr_gid
            members = []
            for u in range(users_per_group):
                name = f"aatest{tag}g{g}u{u}"
                _run("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--gid", group,
                     "--no-user-group", "--shell", shell, name)
                made_users.append(name)
                members.append(HostUser(name, pwd.getpwnam(name).pw_uid, gid, group))
            sites.append(members)
        yield sites
    finally:
        for name in made_users:
            subprocess.run(["userdel", "--force", name], capture_output=True, timeout=60)
        for group in made_groups:
            subprocess.run(["groupdel", group], capture_output=True, timeout=60)
