"""Test support for real system accounts: a unique name prefix and a cleanup that always runs.

Every group and user a test makes carries the prefix ``t<hex>-`` (``[web] account_prefix``), so
what a failed run left is easy to find (``getent passwd | grep '^t'``); the fixture removes every
account and group with its prefix afterwards, whatever happened.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import subprocess

import pytest

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="system accounts need root")


def remove_accounts_with(prefix: str) -> list:
    """Remove every user and then every group whose name starts with ``prefix-``; their names."""
    head = prefix + "-"
    removed = []
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(head):
            subprocess.run(["userdel", "--", entry.pw_name], capture_output=True, timeout=60)
            removed.append(entry.pw_name)
    for entry in grp.getgrall():
        if entry.gr_name.startswith(head):
            subprocess.run(["groupdel", "--", entry.gr_name], capture_output=True, timeout=60)
            removed.append(entry.gr_name)
    return removed


@pytest.fixture
def account_prefix():
    """A fresh ``[web] account_prefix``; every account and group made with it is removed afterwards."""
    prefix = "t" + secrets.token_hex(4)
    yield prefix
    remove_accounts_with(prefix)


def runuser(user: str, *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as the system user ``user``."""
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=30)


def getent(database: str, key: str) -> str:
    done = subprocess.run(["getent", database, key], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()
