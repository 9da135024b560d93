"""The admin module: sites, their deletion and hijacking, for the appliance administrator only."""

from __future__ import annotations

import pytest

from apiserver.context import Credentials
from apiserver.errors import AuthenticationFailed, Denied, Exists, InvalidArgument, NotFound, ServerError


def test_add_site_with_generated_password(recorded):
    """Without auth.tpasswd a random password is set (nobody knows it: a reset gives one); with it, it logs in."""
    h, log = recorded
    assert h.call(h.admin, "admin_add_site", "Example.COM", "Owner", {"siteinfo.email": "owner@example.com"}) is True
    with pytest.raises(AuthenticationFailed):
        h.login(Credentials(username="owner", site="example.com", password=""))
    password = h.call(h.admin, "auth_reset_password", None, "example.com")
    assert h.login(Credentials(username="owner", site="example.com", password=password)).site == "example.com"
    assert h.call(h.admin, "admin_add_site", "example.org", "owner",
                  {"siteinfo.email": "owner@example.org", "auth.tpasswd": "chosen-password"}) is True
    assert h.login(Credentials(username="owner", site="example.org", password="chosen-password")).site == "example.org"
    assert h.call(h.admin, "admin_list_sites") == ["example.com", "example.org"]
    assert [(name, kw["site"], main) for name, kw, main in log.events if name == "site_added"] == [
        ("site_added", "example.com", True), ("site_added", "example.org", True)]


def test_add_site_refuses_duplicates_and_bad_values(harness):
    """A taken domain is Exists; bad domains, usernames and emails are named in InvalidArgument."""
    harness.add_site()
    with pytest.raises(Exists, match="example.com"):
        harness.call(harness.admin, "admin_add_site", "EXAMPLE.com", "other", {"auth.tpasswd": "password-1"})
    cases = [
        (("localhost", "owner", "o@example.com"), "two labels"),
        (("-bad.example", "owner", "o@example.com"), "label '-bad'"),
        (("a..example", "owner", "o@example.com"), "empty label"),
        (("example.com2", "0wner!", "o@example.com"), "invalid username '0wner!'"),
        (("example.net", "owner", "not-an-email"), "siteinfo.email: invalid email address"),
        (("example.net", "owner", "o@localhost"), "siteinfo.email: invalid email address"),
    ]
    for (domain, admin, email), message in cases:
        with pytest.raises(InvalidArgument, match=message):
            harness.call(harness.admin, "admin_add_site", domain, admin,
                         {"siteinfo.email": email, "auth.tpasswd": "password-1"})
    with pytest.raises(InvalidArgument, match="invalid email address 'Array'"):  # what PHP sends for an array
        harness.call(harness.admin, "admin_add_site", "example.net", "owner", {"siteinfo.email": "Array"})
    assert harness.call(harness.admin, "admin_list_sites") == ["example.com"]


def test_add_site_failing_half_way_leaves_nothing(harness):
    """When the administrator's row fails after the site's, neither is kept and the domain stays free."""
    with harness.app.storage.write() as conn:
        conn.exec_driver_sql("CREATE TRIGGER refuse_boom BEFORE INSERT ON users WHEN NEW.username = 'boom' "
                             "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END")
    with pytest.raises(ServerError):
        harness.call(harness.admin, "admin_add_site", "example.com", "boom", {"auth.tpasswd": "password-1"})
    assert harness.call(harness.admin, "admin_list_sites") == []
    harness.call(harness.admin, "admin_add_site", "example.com", "owner", {"auth.tpasswd": "password-1"})


def test_delete_site_removes_accounts_keys_and_sessions(recorded):
    """After delete_site its keys and sessions fail at once and the domain is free again."""
    h, log = recorded
    site = h.add_site()
    key = h.call(site, "auth_create_api_key")
    h.login_key(key)
    sid = h.call(h.admin, "admin_hijack", "example.com")
    assert h.call(h.admin, "admin_delete_site", "example.com") is True
    with pytest.raises(AuthenticationFailed):
        h.login_key(key)
    with pytest.raises(AuthenticationFailed):
        h.login(Credentials(session_id=sid))
    with pytest.raises(NotFound):
        h.call(h.admin, "admin_delete_site", "example.com")
    assert h.call(h.admin, "admin_list_sites") == []
    assert log.names()[-1] == "site_deleted"
    h.add_site()


def test_hijack_acts_as_site_admin_or_user(harness):
    """hijack returns a session acting as the site's administrator, or a named user, on behalf of the admin."""
    site = harness.add_site()
    harness.add_user(site, "bob")
    sid = harness.call(harness.admin, "admin_hijack", "example.com")
    assert len(sid) == 64
    as_site = harness.login(Credentials(session_id=sid))
    assert (as_site.username, as_site.impersonator.username) == ("siteadmin", "admin")
    as_bob = harness.login(Credentials(session_id=harness.call(harness.admin, "admin_hijack", "example.com", "bob")))
    assert as_bob.username == "bob"
    with pytest.raises(NotFound):
        harness.call(harness.admin, "admin_hijack", "example.com", "eve")
    with pytest.raises(InvalidArgument, match="unknown gate"):
        harness.call(harness.admin, "admin_hijack", "example.com", None, "FTP")


def test_admin_functions_are_appliance_only(harness):
    """Site administrators and users get Client.Denied for every admin function."""
    site = harness.add_site()
    bob = harness.add_user(site)
    for identity in (site, bob):
        for name, args in (("admin_list_sites", ()), ("admin_add_site", ("x.example", "a", {})),
                           ("admin_delete_site", ("example.com",)), ("admin_hijack", ("example.com",)),
                           ("admin_edit_site", ("example.com", {})), ("admin_deactivate_site", ("example.com",)),
                           ("admin_activate_site", ("example.com",)), ("admin_collect", ()),
                           ("admin_get_usage", ("storage",)), ("admin_get_domains", ()), ("admin_list_plans", ()),
                           ("admin_get_plan", ("basic",)), ("admin_get_site_id", ("example.com",))):
            with pytest.raises(Denied):
                harness.call(identity, name, *args)
    hijacked = harness.login(Credentials(session_id=harness.call(harness.admin, "admin_hijack", "example.com")))
    with pytest.raises(Denied):
        harness.call(hijacked, "admin_list_sites")
