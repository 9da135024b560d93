"""The account lifecycle on a real application: add, edit, suspend, activate, delete, collect, usage."""

from __future__ import annotations

import datetime

import pytest

from apiserver.context import AuthRequest, Credentials, Gate
from apiserver.errors import (AuthenticationFailed, Denied, Exists, InvalidArgument, NotFound, ServerError,
                              SiteSuspended)
from apiserver.lifecycle.appliers import Applier
from tests.accounts.support import wait
from tests.lifecycle.support import plans_config

WHMCS_OPTS = {  # what the WHMCS module sends (all strings)
    "auth.tpasswd": "Whmcs-pass-1", "siteinfo.enabled": "1", "siteinfo.domain": "Example.COM",
    "siteinfo.admin_user": "owner", "siteinfo.email": "client@example.org", "siteinfo.plan": "basic",
    "billing.invoice": "WHMCS-42", "mysql.dbaseadmin": "owner", "mysql.dbaseprefix": "owner_",
    "pgsql.dbaseadmin": "owner", "pgsql.dbaseprefix": "owner_",
}


def admit(h, gate=Gate.SOAP, address="192.0.2.5", **credentials):
    """The context the gatekeeper admits for ``credentials`` at ``gate`` (or its error)."""
    return wait(h.app.gatekeeper.admit(AuthRequest(gate=gate, address=address, credentials=Credentials(**credentials))))


def collect(h, fields=None, match=None, sites=None):
    return h.call(h.admin, "admin_collect", fields, match, sites)


@pytest.fixture
def two_plans(tmp_path):
    """A plans folder with basic and pro (pro: more quota, shell access)."""
    return plans_config(tmp_path, {".skeleton.ini": "[users]\nmax = 10\n",
                                   "basic.ini": "[diskquota]\nquota = 100\n[ssh]\nenabled = 0\n",
                                   "pro.ini": "[diskquota]\nquota = 900\n[ssh]\nenabled = 1\n[users]\nmax = 50\n"})


def test_add_site_takes_the_plan_then_the_options(harness):
    """A new site has its plan's values, then the options; the positional domain and admin win
    over siteinfo.domain/admin_user (ApisCP), names are lower-cased, the site id is site<N>."""
    h = harness
    assert h.call(h.admin, "admin_add_site", "example.com", "Owner", dict(WHMCS_OPTS, **{
        "siteinfo.admin_user": "ignored", "diskquota": {"quota": "2", "units": "GB"}})) is True
    site = collect(h, ["*"])["site1"]
    assert site["siteinfo"] == {"enabled": 1, "domain": "example.com", "admin_user": "owner",
                                "email": "client@example.org", "plan": "basic", "notes": None, "admin": "admin1"}
    assert site["billing"]["invoice"] == "WHMCS-42" and site["billing"]["parent_invoice"] is None
    assert site["billing"]["ctime"] == 1_800_000_000
    assert site["diskquota"] == {"enabled": 1, "quota": 2, "units": "GB", "fquota": None}
    assert site["users"] == {"enabled": 1, "max": 50}  # basic's
    assert site["mysql"] == {"enabled": 0, "dbaseadmin": "owner", "dbaseprefix": "owner_", "dbasenum": None}
    assert "auth" not in site or site["auth"] == {}
    assert site["active"] is True and site["domain"] == "example.com"
    admin = admit(h, gate=Gate.UI, username="owner", site="example.com", password="Whmcs-pass-1").identity
    assert (admin.username, admin.site_id) == ("owner", 1)
    with pytest.raises(Exists):
        h.call(h.admin, "admin_add_site", "EXAMPLE.com", "other", {})
    with pytest.raises(InvalidArgument, match="siteinfo.plan: no plan 'gold'"):
        h.call(h.admin, "admin_add_site", "gold.example", "gold", {"siteinfo.plan": "gold"})
    with pytest.raises(InvalidArgument, match="siteinfo.admin: set by the server"):
        h.call(h.admin, "admin_add_site", "x.example", "x", {"siteinfo.admin": "admin9"})
    with pytest.raises(InvalidArgument, match="give one password"):
        h.call(h.admin, "admin_add_site", "x.example", "x", {"auth.tpasswd": "pass-word-1",
                                                             "auth.cpasswd": "$6$salt$" + "b" * 86})
    assert collect(h) == {"site1": collect(h)["site1"]}  # nothing else was made


def test_a_crypted_password_logs_in(harness):
    """auth.cpasswd stores a $6$ hash as it is; the password behind it logs in."""
    from apiserver.accounts.passwords import sha512_crypt

    crypted = sha512_crypt(b"Crypted-pass-1", "$6$rounds=5000$abcdefgh$")
    harness.call(harness.admin, "admin_add_site", "example.com", "owner", {"auth.cpasswd": crypted})
    assert admit(harness, gate=Gate.UI, username="owner", site="example.com", password="Crypted-pass-1")


def test_a_site_argument_is_a_site_id_domain_or_invoice_group(harness):
    """site<N>, a domain in any case, or an invoice naming every site with it as invoice or
    parent_invoice (an account group); anything else is Client.NotFound."""
    h = harness
    h.call(h.admin, "admin_add_site", "parent.example", "parent", {"billing.invoice": "INV-1"})
    h.call(h.admin, "admin_add_site", "child.example", "child", {"billing,parent_invoice": "INV-1"})
    h.call(h.admin, "admin_add_site", "other.example", "other", {})
    assert h.call(h.admin, "admin_get_site_id", "CHILD.example") == "site2"
    assert h.call(h.admin, "admin_get_domains") == {2: "child.example", 3: "other.example", 1: "parent.example"}
    h.call(h.admin, "admin_deactivate_site", "INV-1", {"reason": "Overdue on Payment"})
    assert {k: v["active"] for k, v in collect(h).items()} == {"site1": False, "site2": False, "site3": True}
    h.call(h.admin, "admin_activate_site", "site2")
    h.call(h.admin, "admin_edit_site", "Parent.Example", {"ssh.enabled": True})
    assert collect(h, ["ssh"], {"active": False}) == {"site1": {"ssh": {"enabled": 1}, "active": False,
                                                                  "domain": "parent.example"}}
    for name in ("nope.example", "site99", "INV-2"):
        with pytest.raises(NotFound, match="no site"):
            h.call(h.admin, "admin_deactivate_site", name)
    with pytest.raises(NotFound):
        h.call(h.admin, "admin_get_site_id", "nope.example")


def test_changing_the_plan_moves_only_the_values_still_at_the_old_plans(tmp_path, two_plans):
    """EditDomain's rule: without reset, values a site changed itself stay; with reset every value a
    plan sets takes the plan's; never the names, passwords or invoices."""
    from tests.accounts.support import Harness

    h = Harness(tmp_path / "state", sections=two_plans)
    try:
        h.call(h.admin, "admin_add_site", "example.com", "owner",
               {"users.max": 3, "billing.invoice": "INV-9", "auth.tpasswd": "Owner-pass-1"})
        h.call(h.admin, "admin_edit_site", "example.com", {"siteinfo.plan": "pro"})
        site = collect(h, ["diskquota.quota", "ssh", "users", "siteinfo.plan", "billing.invoice"])["site1"]
        assert (site["diskquota"]["quota"], site["ssh"]["enabled"], site["users"]["max"]) == (900, 1, 3)
        assert (site["siteinfo"]["plan"], site["billing"]["invoice"]) == ("pro", "INV-9")
        h.call(h.admin, "admin_edit_site", "example.com", {"diskquota.quota": 5}, {"reset": "true"})
        site = collect(h, ["diskquota.quota", "users.max", "billing.invoice"])["site1"]
        assert (site["diskquota"]["quota"], site["users"]["max"], site["billing"]["invoice"]) == (5, 50, "INV-9")
        h.call(h.admin, "admin_edit_site", "example.com", {"siteinfo.plan": "basic", "0": {"reset": True}})
        site = collect(h, ["diskquota.quota", "ssh.enabled", "siteinfo.plan"])["site1"]
        assert (site["diskquota"]["quota"], site["ssh"]["enabled"], site["siteinfo"]["plan"]) == (100, 0, "basic")
        h.call(h.admin, "admin_edit_site", "example.com", {"users.max": "DEFAULT"})
        assert collect(h, ["users.max"])["site1"]["users"]["max"] == 10  # .skeleton's, basic sets none
        assert admit(h, gate=Gate.UI, username="owner", site="example.com", password="Owner-pass-1")
    finally:
        h.close()


def test_edit_refuses_renames_and_a_dry_run_changes_nothing(harness):
    """Renaming is refused naming the parameter; dry-run (either spelling) stores nothing; a new
    tpasswd or email is the administrator's; unknown flags are named."""
    h = harness
    h.call(h.admin, "admin_add_site", "example.com", "owner", {"auth.tpasswd": "Owner-pass-1"})
    with pytest.raises(InvalidArgument, match="siteinfo.domain: renaming"):
        h.call(h.admin, "admin_edit_site", "example.com", {"siteinfo.domain": "other.example"})
    h.call(h.admin, "admin_edit_site", "example.com", {"siteinfo.domain": "EXAMPLE.com"})  # the same: fine
    before = collect(h, ["*"])
    h.call(h.admin, "admin_edit_site", "example.com", {"ssh.enabled": 1}, {"dry-run": True})
    h.call(h.admin, "admin_edit_site", "example.com", {"ssh.enabled": 1, "0": {"dry_run": "1"}})
    assert collect(h, ["*"]) == before
    with pytest.raises(InvalidArgument, match="unknown flag 'backup'"):
        h.call(h.admin, "admin_edit_site", "example.com", {}, {"backup": True})
    h.call(h.admin, "admin_edit_site", "site1", {"auth.tpasswd": "Changed-pass-2", "siteinfo.email": "n@example.com"})
    assert h.call(h.app.directory.identity_for("example.com", None), "common_get_email") == "n@example.com"
    with pytest.raises(AuthenticationFailed):
        admit(h, gate=Gate.UI, username="owner", site="example.com", password="Owner-pass-1")
    assert admit(h, gate=Gate.UI, username="owner", site="example.com", password="Changed-pass-2")


def test_suspension_refuses_every_credential_once_right(recorded):
    """A suspended site's keys, passwords and sessions are refused at every gate with a clear
    Client.Denied after the credentials were right, the same failure as ever before; sessions end,
    keys stay and work again after activation; the appliance may still hijack it."""
    h, events = recorded
    h.call(h.admin, "admin_add_site", "example.com", "owner", {"auth.tpasswd": "Owner-pass-1"})
    owner = h.app.directory.identity_for("example.com", None)
    key = h.call(owner, "auth_create_api_key", "billing")
    session = h.call(h.admin, "admin_hijack", "example.com", None, "UI")
    user_session = wait(h.app.accounts.start_ui_session(owner, "Owner-pass-1"))[0]
    assert h.call(h.admin, "admin_deactivate_site", "example.com", {"reason": "Overdue on Payment\n# ticket 7"})
    for gate, credentials in ((Gate.SOAP, {"api_key": key}),
                              (Gate.UI, {"username": "owner", "site": "example.com", "password": "Owner-pass-1"}),
                              (Gate.DAV, {"username": "owner", "site": "example.com", "password": "Owner-pass-1"})):
        with pytest.raises(SiteSuspended, match=r"site example.com is suspended.*\(Overdue on Payment\)$"):
            admit(h, gate=gate, **credentials)
    before = wait(h.app.anvil.status("192.0.2.5"))
    with pytest.raises(AuthenticationFailed):  # a wrong password learns nothing, and counts
        admit(h, gate=Gate.UI, username="owner", site="example.com", password="wrong-password")
    assert wait(h.app.anvil.status("192.0.2.5")).count == (before.count if before else 0) + 1
    for number, sid in enumerate((session, user_session)):
        with pytest.raises(AuthenticationFailed):  # the sessions ended
            admit(h, gate=Gate.UI, address=f"198.51.100.{number}", session_id=sid)
    hijacked = admit(h, address="198.51.100.9", session_id=h.call(h.admin, "admin_hijack", "example.com"))
    assert hijacked.identity.site == "example.com" and h.call(hijacked.identity, "auth_is_inactive") is True
    assert h.call(owner, "auth_is_inactive") is True and h.call(h.admin, "auth_is_inactive") is False
    h.config.set("auth", "show_suspension_reason", "false")
    with pytest.raises(SiteSuspended, match="activated$"):
        admit(h, address="198.51.100.9", api_key=key)
    assert h.call(h.admin, "admin_activate_site", "example.com")
    assert admit(h, address="198.51.100.9", api_key=key).identity.username == "owner"
    assert h.call(owner, "auth_is_inactive") is False
    assert events.events == [("suspended", "example.com", "admin", "Overdue on Payment\n# ticket 7"),
                             ("activated", "example.com", "admin")]
    kinds = [e.kind for e in h.call(h.admin, "admin_get_security_events", {"kind": "site_suspended"})]
    assert kinds == ["site_suspended"]


def test_delete_by_since_match_and_dry_run(recorded):
    """DeleteDomain's flags: since keeps sites suspended at least that long ago (none without a
    date), match their reason (hidden lines too), dry-run deletes nothing; nothing to delete is true."""
    h, events = recorded
    for name in ("old", "new", "active", "other"):
        h.call(h.admin, "admin_add_site", f"{name}.example", name, {})
    h.call(h.admin, "admin_deactivate_site", "old.example", {"reason": "Deferred Account Cancellation"})
    h.call(h.admin, "admin_deactivate_site", "other.example", {"reason": "abuse\n# Deferred Account Cancellation"})
    h.clock.advance(31 * 86400)
    h.call(h.admin, "admin_deactivate_site", "new.example", {"reason": "Deferred Account Cancellation"})
    flags = {"since": "30 days ago", "match": "Deferred Account Cancellation"}
    assert h.call(h.admin, "admin_delete_site", None, dict(flags, **{"dry-run": True})) is True
    assert len(collect(h)) == 4
    assert h.call(h.admin, "admin_delete_site", None, flags) is True
    assert sorted(v["domain"] for v in collect(h).values()) == ["active.example", "new.example"]
    assert h.call(h.admin, "admin_delete_site", None, flags) is True  # nothing left to delete: still true
    with pytest.raises(InvalidArgument, match="site: name a site"):
        h.call(h.admin, "admin_delete_site", None, {"force": True})
    with pytest.raises(InvalidArgument, match="flags.match: not a regular expression"):
        h.call(h.admin, "admin_delete_site", None, {"since": "now", "match": "("})
    with pytest.raises(InvalidArgument, match="unknown flag 'purge'"):
        h.call(h.admin, "admin_delete_site", "new.example", {"purge": 1})
    assert h.call(h.admin, "admin_delete_site", "active.example", {"since": "now"}) is True  # never suspended
    assert h.call(h.admin, "admin_delete_site", "active.example", {"force": True}) is True
    with pytest.raises(NotFound):
        h.call(h.admin, "admin_delete_site", "active.example")
    assert [e[1] for e in events.events if e[0] == "deleted"] == ["old.example", "other.example", "active.example"]


def test_collect_answers_by_site_id_with_typed_values_and_matches(harness):
    """Keys site<N>; switches are ints, active a bool; match is AND over validated values (null
    matches unset); sites names id, domain or invoice; nothing matched is an empty map."""
    h = harness
    h.call(h.admin, "admin_add_site", "a.example", "a", {"billing.invoice": "INV-A", "ssh.enabled": "true"})
    h.call(h.admin, "admin_add_site", "b.example", "b", {"rampart.enabled": 0})
    assert collect(h, ["rampart.enabled"], None, ["a.example"]) == {
        "site1": {"rampart": {"enabled": 1}, "active": True, "domain": "a.example"}}
    assert list(collect(h, ["ssh"], {"ssh,enabled": "1"})) == ["site1"]
    assert list(collect(h, None, {"billing": {"invoice": None}})) == ["site2"]
    assert list(collect(h, None, {"billing.invoice": "INV-A", "rampart.enabled": True})) == ["site1"]
    assert collect(h, None, {"active": "false"}) == {}
    assert collect(h, None, None, ["nope.example", "INV-Z"]) == {}
    assert list(collect(h, None, None, ["site2", "INV-A", "a.example"])) == ["site1", "site2"]
    with pytest.raises(InvalidArgument, match="ssh.enabled: expected 1 or 0"):
        collect(h, None, {"ssh.enabled": "perhaps"})


def test_usage_answers_limits_and_unmeasured_use(harness):
    """admin_get_usage and the site module: limits from the stored values (KB, bytes), the period
    from the rollover day; a new site's storage is measured when made; storage not counted (its
    figures removed here) is null, never a made-up figure; no traffic is 0."""
    h = harness
    h.call(h.admin, "admin_add_site", "a.example", "a", {
        "diskquota": {"quota": 2, "units": "GB", "fquota": 9000},
        "bandwidth": {"threshold": 1.5, "units": "TB", "rollover": 31}})
    h.call(h.admin, "admin_add_site", "b.example", "b", {"diskquota.enabled": 0, "bandwidth.threshold": None})
    measured = h.app.storage_recount.measure(1, "a.example")
    with h.app.storage.write() as conn:
        conn.execute(h.app.storage.tables.site_usage.delete().where(h.app.storage.tables.site_usage.c.site_id == 2))
    storage = h.call(h.admin, "admin_get_usage", "storage")
    assert measured.files > 0
    assert storage == {"site1": {"qused": measured.kilobytes, "qsoft": 2 * 1024 * 1024, "qhard": 2 * 1024 * 1024,
                                 "fused": measured.files, "fsoft": 9000, "fhard": 9000},
                       "site2": {"qused": None, "qsoft": None, "qhard": None, "fused": None, "fsoft": None,
                                 "fhard": None}}
    bandwidth = h.call(h.admin, "admin_get_usage", "bandwidth", ["a.example"])
    begin = datetime.datetime.fromtimestamp(bandwidth["site1"]["begin"], datetime.timezone.utc)
    end = datetime.datetime.fromtimestamp(bandwidth["site1"]["end"], datetime.timezone.utc)
    assert bandwidth["site1"]["sum"] == 0 and bandwidth["site1"]["threshold"] == int(1.5 * 1024 ** 4)
    assert (begin, end) == (datetime.datetime(2026, 12, 31, tzinfo=datetime.timezone.utc),
                            datetime.datetime(2027, 1, 31, tzinfo=datetime.timezone.utc))  # clock: 2027-01-15
    site_b = h.app.directory.identity_for("b.example", None)
    assert h.call(site_b, "site_get_bandwidth_usage") == {"used": 0, "total": None}
    assert h.call(site_b, "site_get_account_quota")["qhard"] is None
    with pytest.raises(InvalidArgument, match="field must be one of storage, bandwidth"):
        h.call(h.admin, "admin_get_usage", "cgroup")
    with pytest.raises(Denied):
        h.call(h.admin, "site_get_account_quota")


class Recording(Applier):
    """A test applier recording its calls (and failing add when told to)."""

    def __init__(self, name, calls, fail=False):
        self.name, self.calls, self.fail = name, calls, fail

    def add(self, site, values):
        self.calls.append((self.name, "add", site.domain))
        if self.fail:
            raise RuntimeError("quota tool failed")

    def edit(self, site, before, values, changed):
        self.calls.append((self.name, "edit", sorted(s.qualified for s in changed)))

    def suspend(self, site):
        self.calls.append((self.name, "suspend", site.domain))

    def activate(self, site):
        self.calls.append((self.name, "activate", site.domain))

    def delete(self, site):
        self.calls.append((self.name, "delete", site.domain))


def test_appliers_see_every_change_in_order_and_a_failed_add_leaves_nothing(harness):
    """The seam: appliers run in order on add, edit, suspend, activate and backwards on delete;
    secrets reach them; when one fails on add the site is undone."""
    h = harness
    calls = []
    appliers = h.app.lifecycle.appliers
    appliers.install(Recording("accounts", calls))
    appliers.install(Recording("mysql", calls))
    h.call(h.admin, "admin_add_site", "a.example", "a", {"mysql.passwd": "Db-secret-1"})
    h.call(h.admin, "admin_edit_site", "a.example", {"mysql.enabled": 1, "mysql.passwd": "Db-secret-2"})
    h.call(h.admin, "admin_deactivate_site", "a.example")
    h.call(h.admin, "admin_activate_site", "a.example")
    h.call(h.admin, "admin_delete_site", "a.example")
    assert calls == [("accounts", "add", "a.example"), ("mysql", "add", "a.example"),
                     ("accounts", "edit", ["mysql.enabled", "mysql.passwd"]),
                     ("mysql", "edit", ["mysql.enabled", "mysql.passwd"]),
                     ("accounts", "suspend", "a.example"), ("mysql", "suspend", "a.example"),
                     ("accounts", "activate", "a.example"), ("mysql", "activate", "a.example"),
                     ("mysql", "delete", "a.example"), ("accounts", "delete", "a.example")]
    assert sorted(appliers.pending()) == ["bandwidth", "diskquota", "ssh"]
    calls.clear()
    appliers.install(Recording("mysql", calls, fail=True))
    with pytest.raises(ServerError):
        h.call(h.admin, "admin_add_site", "b.example", "b", {})
    assert calls == [("accounts", "add", "b.example"), ("mysql", "add", "b.example"),
                     ("accounts", "delete", "b.example")]
    assert collect(h) == {}


def test_a_live_session_decides_over_a_key_and_an_unknown_one_falls_back(harness):
    """With authkey and esprit_id the live session decides (ApisCP); an id naming no session
    falls back to the key without counting in Anvil; alone it is a counted failure."""
    h = harness
    h.call(h.admin, "admin_add_site", "example.com", "owner", {})
    sid = h.call(h.admin, "admin_hijack", "example.com")
    ctx = admit(h, api_key=h.init.admin_key, session_id=sid)
    assert (ctx.identity.username, ctx.session_id) == ("owner", sid)
    ctx = admit(h, api_key=h.init.admin_key, session_id="f" * 26)  # WHMCS 1.0.8's own PHP session id
    assert (ctx.identity.username, ctx.session_id) == ("admin", None)
    assert wait(h.app.anvil.status("192.0.2.5")) is None
    with pytest.raises(AuthenticationFailed):
        admit(h, session_id="f" * 26)
    assert wait(h.app.anvil.status("192.0.2.5")).count == 1
    with pytest.raises(AuthenticationFailed):
        admit(h, api_key="0" * 64, session_id="f" * 26)
    assert wait(h.app.anvil.status("192.0.2.5")).count == 2


def test_users_enabled_and_max_limit_the_users_of_a_site(harness):
    """user_add is refused past users.max (the administrator not counted) and with users.enabled 0."""
    h = harness
    h.call(h.admin, "admin_add_site", "example.com", "owner", {"users.max": 1})
    owner = h.app.directory.identity_for("example.com", None)
    assert h.call(owner, "user_add", "bob", "Bob-pass-123") is True
    with pytest.raises(Denied, match="at most 1 user"):
        h.call(owner, "user_add", "carol", "Carol-pass-123")
    h.call(h.admin, "admin_edit_site", "example.com", {"users.max": None})
    assert h.call(owner, "user_add", "carol", "Carol-pass-123") is True
    h.call(h.admin, "admin_edit_site", "example.com", {"users.enabled": 0})
    with pytest.raises(Denied, match="users.enabled is 0"):
        h.call(owner, "user_add", "dave", "Dave-pass-123")
