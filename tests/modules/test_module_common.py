"""The common module: the caller's email address and who the caller is."""

from __future__ import annotations

import pytest

from apiserver.context import Credentials
from apiserver.errors import InvalidArgument


def test_email_round_trip(harness):
    """set_email stores a valid address for the caller only; an empty string clears it."""
    site = harness.add_site()
    bob = harness.add_user(site)
    assert harness.call(bob, "common_get_email") is None
    assert harness.call(bob, "common_set_email", "bob@Example.com") is True
    assert harness.call(bob, "common_get_email") == "bob@example.com"
    assert harness.call(site, "common_get_email") == "owner@example.com"
    with pytest.raises(InvalidArgument, match="invalid email address 'bob at example'"):
        harness.call(bob, "common_set_email", "bob at example")
    harness.call(bob, "common_set_email", "")
    assert harness.call(bob, "common_get_email") is None


def test_whoami_for_each_role(harness):
    """whoami names the role, the username and the site (null for the appliance)."""
    site = harness.add_site()
    bob = harness.add_user(site)
    hijacked = harness.login(Credentials(session_id=harness.call(harness.admin, "admin_hijack", "example.com")))
    answers = [harness.call(i, "common_whoami") for i in (harness.admin, site, bob, hijacked)]
    assert [(a.role, a.username, a.site) for a in answers] == [
        ("appliance", "admin", None), ("site", "siteadmin", "example.com"), ("user", "bob", "example.com"),
        ("site", "siteadmin", "example.com")]


def test_email_is_read_once_then_shown_at_once_after_a_local_write(harness, monkeypatch):
    """get_email reads the row once per [auth] account_cache_ttl; set_email on this node shows at
    once, a write by another node (straight to the database) after at most the ttl."""
    site = harness.add_site()
    reads = []
    real = harness.app.directory._load_email
    monkeypatch.setattr(harness.app.directory._emails, "_load", lambda uid: reads.append(uid) or real(uid))
    for _ in range(3):
        assert harness.call(site, "common_get_email") == "owner@example.com"
    assert reads == [site.user_id]
    harness.call(site, "common_set_email", "new@example.com")
    assert harness.call(site, "common_get_email") == "new@example.com"
    storage = harness.app.storage
    with storage.write() as conn:  # another node's change
        conn.execute(storage.tables.users.update().where(storage.tables.users.c.id == site.user_id)
                     .values(email="elsewhere@example.com"))
    assert harness.call(site, "common_get_email") == "new@example.com"
    harness.clock.advance(harness.app.config.get("auth", "account_cache_ttl") + 0.1)
    assert harness.call(site, "common_get_email") == "elsewhere@example.com"


def test_a_deleted_account_leaves_no_cached_email(harness):
    """Deleting a user drops its cached address: an account made later with the same id reads its own."""
    site = harness.add_site()
    bob = harness.add_user(site, "bob", email="bob@example.com")
    harness.app.config.set("auth", "account_cache_ttl", "600")
    assert harness.call(bob, "common_get_email") == "bob@example.com"
    harness.call(site, "user_delete", "bob")
    carol = harness.add_user(site, "carol", email=None)
    assert harness.call(carol, "common_get_email") is None
