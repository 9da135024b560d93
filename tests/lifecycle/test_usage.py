"""Measured use: storage counted like ``du`` and stored by the background recount, traffic counted
in memory, reported by plugins and stored per day (a real application on SQLite, a Clock)."""

from __future__ import annotations

import datetime
import grp
import os
import subprocess

import pytest
import sqlalchemy as sa
from twisted.internet import defer

from apiserver.hookspecs import hookimpl
from apiserver.lifecycle.traffic import DAY
from apiserver.sites.count import count_tree, group_quota
from tests.accounts.support import Harness, wait
from tests.host.support import account_prefix  # noqa: F401 - fixture

ONE_HOUR = 3600


def du(path: str, *flags: str) -> int:
    """``du -s`` (KB) or with ``--inodes`` of ``path``, as a user would check."""
    out = subprocess.run(["du", "-s", *flags, path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def make_tree(top) -> None:
    """Files of several sizes, a sparse file, a hard link, a symbolic link and nested folders."""
    os.makedirs(top / "a" / "b" / "c")
    (top / "small.txt").write_bytes(b"x" * 10)
    (top / "a" / "big.bin").write_bytes(os.urandom(300_000))
    (top / "a" / "b" / "c" / "deep.txt").write_bytes(b"y" * 5000)
    with open(top / "sparse.img", "wb") as fh:
        fh.truncate(50 * 1024 * 1024)
        fh.write(b"z" * 4096)
    os.link(top / "a" / "big.bin", top / "a" / "b" / "hardlink.bin")
    os.symlink("/etc", top / "link-to-etc")


def test_count_tree_matches_du_and_counts_a_group_only(tmp_path):
    """KB and inodes as ``du -s`` and ``du -s --inodes`` give them (hard links once, links not
    followed, sparse files by their blocks); with a gid only that group's files count."""
    top = tmp_path / "tree"
    make_tree(top)
    counted = count_tree(str(top))
    assert (counted.kilobytes, counted.files) == (du(str(top)), du(str(top), "--inodes"))
    assert counted.kilobytes < 1024  # the sparse file's 50 MB are not allocated
    if os.geteuid() != 0:
        pytest.skip("giving files to another group needs root")
    gid = grp.getgrnam("nogroup").gr_gid
    os.chown(top / "a" / "big.bin", -1, gid)
    os.chown(top / "small.txt", -1, gid)
    grouped = count_tree(str(top), gid)
    expected = (os.stat(top / "a" / "big.bin").st_blocks + os.stat(top / "small.txt").st_blocks + 1) // 2
    assert (grouped.kilobytes, grouped.files) == (expected, 2)


def find_group(path: str, gid: int) -> tuple:
    """KB and inodes of what group ``gid`` owns under ``path`` as ``find -group`` lists them (each
    inode once, %b in 512-byte blocks): a second tool to check the group-only count against."""
    out = subprocess.run(["find", path, "-xdev", "-group", str(gid), "-printf", "%i %b\n"], capture_output=True,
                         text=True, check=True).stdout
    blocks = dict(line.split() for line in out.splitlines())
    return (sum(int(b) for b in blocks.values()) + 1) // 2, len(blocks)


def test_count_tree_matches_du_on_links_odd_names_and_folders_of_another_group(tmp_path):
    """Links across folders and to files outside the tree, a FIFO, empty folders and names that are
    not UTF-8 count as ``du`` counts them; with a gid, folders and files of that group only (as
    ``find -group`` lists them), whatever group their parent folder has."""
    top = tmp_path / "tree"
    make_tree(top)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(os.urandom(20_000))
    os.link(outside, top / "a" / "linked-from-outside.bin")
    os.link(top / "small.txt", top / "a" / "b" / "c" / "third-link.txt")
    os.makedirs(top / "empty" / "emptier")
    os.mkfifo(top / "a" / "fifo")
    odd = os.fsencode(str(top / "a")) + b"/caf\xe9-\xff.bin"
    with open(odd, "wb") as fh:
        fh.write(b"o" * 9000)
    counted = count_tree(str(top))
    assert (counted.kilobytes, counted.files) == (du(str(top)), du(str(top), "--inodes"))
    if os.geteuid() != 0:
        pytest.skip("giving files to another group needs root")
    gid = grp.getgrnam("nogroup").gr_gid
    for path in (top / "a" / "b", top / "a" / "b" / "c" / "deep.txt", odd, top / "a" / "linked-from-outside.bin",
                 top / "empty" / "emptier", top / "link-to-etc"):
        os.chown(path, -1, gid, follow_symlinks=False)
    grouped = count_tree(str(top), gid)
    assert (grouped.kilobytes, grouped.files) == find_group(str(top), gid)
    assert grouped.files == 6


def test_group_quota_is_none_where_the_filesystem_keeps_none(tmp_path):
    """A filesystem without group quotas answers None (the recount then walks the home)."""
    assert group_quota(str(tmp_path), os.getgid()) is None


def write_files(h: Harness, domain: str, count: int, size: int) -> str:
    """``count`` files of ``size`` bytes in the document root of ``domain``; the home's path."""
    home = h.app.site_homes.get(domain).root
    folder = os.path.join(home, "var", "www", "html", "data")
    os.makedirs(folder, exist_ok=True)
    for n in range(count):
        with open(os.path.join(folder, f"f{n}.bin"), "wb") as fh:
            fh.write(os.urandom(size))
    return home


def test_storage_is_counted_in_the_background_and_answered_from_stored_figures(harness):
    """A new site is measured when made (its near-empty home, what ``du`` says, stamped with the
    clock's time); the next round, on the clock, stores what ``du`` says of its home, and the
    answers follow the files written since."""
    h = harness
    h.call(h.admin, "admin_add_site", "a.example", "a", {"diskquota.quota": 1, "diskquota.units": "GB"})
    h.call(h.admin, "admin_add_site", "b.example", "b", {})
    fresh = h.call(h.admin, "admin_get_usage", "storage")["site1"]
    home_a = h.app.site_homes.get("a.example").root
    assert (fresh["qused"], fresh["fused"]) == (du(home_a), du(home_a, "--inodes")) and fresh["fused"] > 0
    with h.app.storage.read() as conn:
        table = h.app.storage.tables.site_usage
        stamps = conn.execute(sa.select(table.c.site_id, table.c.counted_at)).all()
    assert sorted(row.site_id for row in stamps) == [1, 2]
    assert all(abs(row.counted_at.replace(tzinfo=datetime.timezone.utc).timestamp() - h.clock.seconds()) < 1
               for row in stamps)
    home_a = write_files(h, "a.example", 20, 40_000)
    h.settle()                              # the round the start began
    rounds = h.app.storage_recount.rounds
    h.advance(ONE_HOUR)                     # an hour after it ended: the next round, waited for
    assert h.app.storage_recount.rounds == rounds + 1
    usage = h.call(h.admin, "admin_get_usage", "storage")
    assert usage["site1"] == {"qused": du(home_a), "qsoft": 1024 * 1024, "qhard": 1024 * 1024,
                              "fused": du(home_a, "--inodes"), "fsoft": None, "fhard": None}
    home_b = h.app.site_homes.get("b.example").root
    assert (usage["site2"]["qused"], usage["site2"]["fused"]) == (du(home_b), du(home_b, "--inodes"))
    write_files(h, "a.example", 40, 40_000)  # 20 more files, the first 20 rewritten
    assert h.call(h.admin, "admin_get_usage", "storage")["site1"]["qused"] == usage["site1"]["qused"]
    h.advance(ONE_HOUR)
    again = h.call(h.admin, "admin_get_usage", "storage", ["a.example"])
    assert again["site1"]["qused"] == du(home_a) > usage["site1"]["qused"]
    assert again["site1"]["fused"] == du(home_a, "--inodes") == usage["site1"]["fused"] + 20
    site_a = h.app.directory.identity_for("a.example", None)
    assert h.call(site_a, "site_get_account_quota")["qused"] == again["site1"]["qused"]


def test_a_site_deleted_while_counted_leaves_no_figures(harness):
    """Figures go with their site (no row of a deleted site), and a round skips a site whose
    home is gone."""
    h = harness
    h.call(h.admin, "admin_add_site", "gone.example", "g", {})
    h.advance(ONE_HOUR)
    assert h.call(h.admin, "admin_get_usage", "storage")["site1"]["qused"] is not None
    h.call(h.admin, "admin_delete_site", "gone.example")
    with h.app.storage.read() as conn:
        assert conn.execute(h.app.storage.tables.site_usage.select()).fetchall() == []
    assert wait(defer.ensureDeferred(h.app.storage_recount.recount())) == 0


class TrafficReports:
    """A test plugin reporting traffic measured elsewhere (by domain, by site id, of no site)."""

    def __init__(self):
        self.calls = 0
        self.report = {}

    @hookimpl
    def apiserver_report_traffic(self, api):
        self.calls += 1
        report, self.report = self.report, {}
        return report


def test_traffic_is_held_then_stored_with_plugin_reports(tmp_path):
    """Bytes counted at the gates show at once (held), are stored at the flush with the plugins'
    reports (domain or site id; an unknown site dropped), and a new period starts from zero."""
    plugin = TrafficReports()
    h = Harness(tmp_path / "state", plugins=[plugin])
    try:
        h.call(h.admin, "admin_add_site", "t.example", "t", {"bandwidth.rollover": 1})
        h.call(h.admin, "admin_add_site", "u.example", "u", {})
        meter = h.app.traffic
        meter.carried(1, 1000)
        meter.carried(1, 500)
        assert h.call(h.admin, "admin_get_usage", "bandwidth")["site1"]["sum"] == 1500
        assert h.call(h.admin, "admin_get_usage", "bandwidth")["site2"]["sum"] == 0
        plugin.report = {"t.example": 70, "site2": 9, "nope.example": 5}
        h.advance(h.config.get("usage", "flush_interval"))  # the meter's own flush, waited for
        assert plugin.calls >= 1 and meter.pending() == {}
        with h.app.storage.read() as conn:
            rows = sorted(tuple(r) for r in conn.execute(h.app.storage.tables.site_traffic.select()))
        today = int(h.clock.seconds() // DAY)
        assert rows == [(1, today, 1570), (2, today, 9)]
        meter.carried(1, 30)
        usage = h.call(h.admin, "admin_get_usage", "bandwidth")
        assert (usage["site1"]["sum"], usage["site2"]["sum"]) == (1600, 9)
        site_t = h.app.directory.identity_for("t.example", None)
        assert h.call(site_t, "site_get_bandwidth_usage")["used"] == 1600
        wait(meter.flush())
        end = usage["site1"]["end"]
        h.clock.advance(end - h.clock.seconds() + 10)  # into the next period
        usage = h.call(h.admin, "admin_get_usage", "bandwidth")
        assert (usage["site1"]["sum"], usage["site1"]["begin"]) == (0, end)
    finally:
        h.close()


def test_a_failed_flush_keeps_the_bytes(harness):
    """When storing fails the bytes stay held and are stored by the next flush."""
    h = harness
    h.call(h.admin, "admin_add_site", "f.example", "f", {})
    meter = h.app.traffic
    meter.carried(1, 4096)
    real = meter._run_blocking

    def failing(fn, *args):
        raise RuntimeError("database gone")

    meter._run_blocking = failing
    try:
        wait(meter.flush())
    finally:
        meter._run_blocking = real
    assert meter.pending() == {1: 4096}
    wait(meter.flush())
    assert meter.pending() == {} and h.call(h.admin, "admin_get_usage", "bandwidth")["site1"]["sum"] == 4096


def test_the_recount_uses_the_sites_own_group_only(account_prefix):  # noqa: F811 - fixture
    """The recount counts the group <prefix>-admin<N> with system accounts, none without (admin<N> is not taken)."""
    from apiserver.host.accounts import SiteAccounts
    from apiserver.lifecycle.recount import site_group_of

    if os.geteuid() != 0:
        pytest.skip("makes a group (root)")
    made = SiteAccounts("/nonexistent", "", account_prefix, True, "nobody")
    subprocess.run(["groupadd", made.group_name(7)], check=True, capture_output=True, timeout=60)
    assert site_group_of(made)(7) == grp.getgrnam(f"{account_prefix}-admin7").gr_gid
    assert site_group_of(made)(8) is None
    shared = SiteAccounts("/nonexistent", "", "", False, "nobody")
    assert all(site_group_of(shared)(n) is None for n in (1, 7))
