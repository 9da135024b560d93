"""The user module: a site administrator adds, lists and deletes the users of its site."""

from __future__ import annotations

import pytest

from apiserver.context import Credentials
from apiserver.errors import AuthenticationFailed, Denied, Exists, InvalidArgument, NotFound


def test_add_list_and_delete_users(harness):
    """Users are added with a password and email, listed after the administrator, deleted with their keys."""
    site = harness.add_site()
    assert harness.call(site, "user_add", "bob", "bob-password", "Bob@Example.COM") is True
    harness.call(site, "user_add", "alice", "alice-password")
    users = harness.call(site, "user_get_users")
    assert [(u.username, u.role, u.email) for u in users] == [
        ("siteadmin", "site", "owner@example.com"), ("alice", "user", None), ("bob", "user", "Bob@example.com")]
    bob = harness.login(Credentials(username="bob", site="example.com", password="bob-password"))
    key = harness.call(bob, "auth_create_api_key")
    assert harness.call(site, "user_delete", "bob") is True
    with pytest.raises(AuthenticationFailed):
        harness.login_key(key)
    with pytest.raises(NotFound, match="no user 'bob'"):
        harness.call(site, "user_delete", "bob")


def test_users_are_per_site(harness):
    """The same name may exist in two sites; a site administrator sees and deletes only its own."""
    first = harness.add_site("example.com")
    second = harness.add_site("example.org", admin_user="orgadmin")
    harness.add_user(first, "bob")
    harness.add_user(second, "bob")
    with pytest.raises(Exists):
        harness.call(first, "user_add", "bob", "another-password")
    assert [u.username for u in harness.call(second, "user_get_users")] == ["orgadmin", "bob"]
    harness.call(second, "user_delete", "bob")
    assert [u.username for u in harness.call(first, "user_get_users")] == ["siteadmin", "bob"]


def test_user_rules(harness):
    """Bad names and short passwords are refused clearly; the administrator cannot be deleted; users are denied."""
    site = harness.add_site()
    with pytest.raises(InvalidArgument, match="invalid username"):
        harness.call(site, "user_add", "Bob Smith", "bob-password")
    with pytest.raises(InvalidArgument, match="at least 7 characters"):
        harness.call(site, "user_add", "bob", "short")
    with pytest.raises(Denied, match="delete the site instead"):
        harness.call(site, "user_delete", "siteadmin")
    bob = harness.add_user(site)
    for name, args in (("user_add", ("eve", "eve-password")), ("user_delete", ("bob",)), ("user_get_users", ())):
        with pytest.raises(Denied):
            harness.call(bob, name, *args)
    with pytest.raises(Denied):
        harness.call(harness.admin, "user_get_users")
