"""dbasenum across nodes on the real MariaDB and PostgreSQL servers: two appliers, each with its own
administrator and connections (two nodes), racing to make databases for one site are serialized by
the server's lock; a lock held elsewhere gives a clear fault; charset and collation of
mysql_create_database are checked against the server."""

from __future__ import annotations

import threading

import pytest

from apiserver.errors import Denied, InvalidArgument, ServerError
from apiserver.host.databases import MariaDbAdmin, PostgresAdmin
from apiserver.lifecycle.databases import DatabaseApplier
from tests.lifecycle.test_databases import (  # noqa: F401 - fixture
    MYSQL_URL, PGSQL_URL, database_harness, db_harness, made_site,
)

ADMINS = {"mysql": (MariaDbAdmin, MYSQL_URL), "pgsql": (PostgresAdmin, PGSQL_URL)}


def node_applier(h, module: str) -> DatabaseApplier:
    """Test set-up: the applier another node would have: same storage, its own server administrator."""
    kind, url = ADMINS[module]
    return DatabaseApplier(module, kind(url), h.app.storage, h.app.site_accounts.identity)


def race(appliers: list, site, names: list) -> list:
    """Each applier makes its database in a thread of its own, all released together by a barrier;
    what each returned or raised."""
    barrier = threading.Barrier(len(appliers))
    outcomes = [None] * len(appliers)

    def run(index: int) -> None:
        barrier.wait(timeout=60)
        try:
            outcomes[index] = appliers[index].create_database(site, names[index])
        except Exception as exc:  # the outcome checked by the test
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(appliers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a create hung"
    return outcomes


@pytest.mark.parametrize("module", ["mysql", "pgsql"])
def test_nodes_racing_at_dbasenum_one_make_exactly_one_database(db_harness, module):
    """dbasenum 1, four nodes racing, five rounds: each round one database is made, the others get the limit fault."""
    h, tag, mysql_admin, pgsql_admin = db_harness
    made_site(h, tag, {f"{module}.enabled": 1, f"{module}.dbasenum": 1})
    site = h.app.lifecycle.record_of(h.app.directory.identity_for("a.example", None))
    prefix, admin = f"{tag}a_", (mysql_admin if module == "mysql" else pgsql_admin)
    nodes = [node_applier(h, module) for _ in range(4)]
    for round_ in range(5):
        names = [f"r{round_}n{i}" for i in range(len(nodes))]
        outcomes = race(nodes, site, names)
        made = [outcome for outcome in outcomes if isinstance(outcome, str)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, Denied)]
        assert len(made) == 1 and len(refused) == len(nodes) - 1, outcomes
        assert all("database limit 1 reached" in str(exc) for exc in refused)
        assert nodes[0].list_databases(site) == made
        admin.drop(None, prefix)  # room for the next round


@pytest.mark.parametrize("module", ["mysql", "pgsql"])
def test_a_lock_held_elsewhere_past_the_timeout_is_a_clear_fault(db_harness, module):
    """Another node holding the site's lock: the create fails naming the lock, nothing is made; freed, it works."""
    h, tag, mysql_admin, pgsql_admin = db_harness
    made_site(h, tag, {f"{module}.enabled": 1, f"{module}.dbasenum": 2})
    site = h.app.lifecycle.record_of(h.app.directory.identity_for("a.example", None))
    holder, waiter = node_applier(h, module), node_applier(h, module)
    waiter.lock_timeout = 0.2
    with holder.admin.site_lock(site.id):
        with pytest.raises(ServerError, match=rf"lock 'apiserver-dbasenum-{site.id}' was not free within 0.2 s"):
            waiter.create_database(site, "one")
    assert waiter.list_databases(site) == []
    assert waiter.create_database(site, "one") == f"{tag}a_one"


@pytest.mark.parametrize("module", ["mysql", "pgsql"])
def test_the_configured_lock_timeout_reaches_the_appliers(module):
    """[databases] lock_timeout = 0.3: a create through the API, its lock held by another node, fails after 0.3 s."""
    with database_harness({"lock_timeout": "0.3"}) as (h, tag, _mysql, _pgsql):
        site, _, _ = made_site(h, tag, {f"{module}.enabled": 1, f"{module}.dbasenum": 2})
        record = h.app.lifecycle.record_of(site)
        holder = node_applier(h, module)
        with holder.admin.site_lock(record.id):
            with pytest.raises(ServerError, match=rf"lock 'apiserver-dbasenum-{record.id}' was not free within 0.3 s"):
                h.call(site, f"{module}_create_database", "one")
        assert h.call(site, f"{module}_list_databases") == []
        assert h.call(site, f"{module}_create_database", "one") is True


def test_mysql_charset_and_collation_are_checked_against_the_server(db_harness):
    """Known charset/collation pairs are used as given; unknown or mismatched ones are InvalidArgument, nothing made."""
    h, tag, mysql_admin, _ = db_harness
    site, _, _ = made_site(h, tag, {"mysql.enabled": 1})
    prefix = f"{tag}a_"
    assert h.call(site, "mysql_create_database", "plain") is True
    assert h.call(site, "mysql_create_database", "latin", "latin1", "latin1_general_ci") is True
    assert h.call(site, "mysql_create_database", "bycoll", None, "utf8mb4_bin") is True
    assert h.call(site, "mysql_create_database", "bycs", "LATIN1") is True
    with mysql_admin._cursor() as cursor:
        cursor.execute("SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
                       "information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s ORDER BY 1", (f"{tag}a\\_%",))
        found = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
        cursor.execute("SHOW COLLATION WHERE Charset = 'latin1' AND `Default` = 'Yes'")
        latin1_default = cursor.fetchone()[0]
    assert found[f"{prefix}plain"][0] == "utf8mb4"
    assert found[f"{prefix}latin"] == ("latin1", "latin1_general_ci")
    assert found[f"{prefix}bycoll"] == ("utf8mb4", "utf8mb4_bin")
    assert found[f"{prefix}bycs"] == ("latin1", latin1_default)
    bad = [("nosuch", None, "charset: 'nosuch' is no character set"),
           (None, "nosuch_ci", "collation: 'nosuch_ci' is no collation"),
           ("latin1", "utf8mb4_bin", "is a collation of 'utf8mb4', not of the charset 'latin1'"),
           ("utf8mb4`; DROP DATABASE mysql; --", None, "is no character set"),
           ("", None, "is no character set"), (None, "%", "is no collation")]
    for charset, collation, message in bad:
        with pytest.raises(InvalidArgument, match=message):
            h.call(site, "mysql_create_database", "bad", charset, collation)
    assert mysql_admin.databases(prefix) == sorted(found)
