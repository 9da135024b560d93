"""mysql_create_database over SOAP (zeep, document style) on a served apiserver administering the
real MariaDB server: the optional charset and collation reach the server, a bad one is a
Client.InvalidArgument fault, and dbasenum is the limit fault."""

from __future__ import annotations

import os
import secrets

import pytest

from apiserver.host.databases import MariaDbAdmin
from tests.e2e.test_soap_zeep import zeep_runner

MYSQL_URL = "mysql://root@127.0.0.1:3306"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the served site's files are written as root")


def test_mysql_create_database_with_charset_and_collation_over_soap(server_factory):
    """A hijacked site makes databases with and without charset/collation; bad ones and the limit are faults."""
    tag = f"t{secrets.token_hex(3)}"
    admin = MariaDbAdmin(MYSQL_URL)
    try:
        server = server_factory({"databases": {"mysql_admin_url": MYSQL_URL}})
        run = zeep_runner(server)
        added, sid = run([["admin_add_site", [f"{tag}.example", f"{tag}e",
                                              {"mysql.enabled": 1, "mysql.dbasenum": 2,
                                               "siteinfo.email": f"admin@{tag}.example"}]],
                          ["admin_hijack", [f"{tag}.example"]]], key=server.admin_key)
        assert added == {"ok": True} and "ok" in sid, (added, sid)
        results = run([["mysql_create_database", ["plain"]],
                       ["mysql_create_database", ["bad", "nosuch"]],
                       ["mysql_create_database", ["bad", "latin1", "utf8mb4_bin"]],
                       ["mysql_create_database", ["latin", "latin1", "latin1_general_ci"]],
                       ["mysql_create_database", ["third"]],
                       ["mysql_list_databases", []]], cookie=sid["ok"])
        assert results[0] == {"ok": True} and results[3] == {"ok": True}, results
        for bad in results[1:3]:
            assert bad["fault"] == "SOAP-ENV:Client.InvalidArgument", bad
        assert "'nosuch' is no character set" in results[1]["message"]
        assert results[4]["fault"] == "SOAP-ENV:Client.Denied" and "database limit 2 reached" in results[4]["message"]
        assert results[5] == {"ok": [f"{tag}e_latin", f"{tag}e_plain"]}, results[5]
        with admin._cursor() as cursor:
            cursor.execute("SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                           (f"{tag}e_latin",))
            assert cursor.fetchone() == ("latin1_general_ci",)
    finally:
        admin.drop(f"{tag}e", f"{tag}e_")
