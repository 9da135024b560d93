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
