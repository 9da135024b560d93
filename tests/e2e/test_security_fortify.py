"""Fortification, audit and the setuid scan against a running server (as root), over PHP SoapClient
(RPC/encoded), zeep (document/literal), XML-RPC and cpcmd, checked by acting as the web server user."""

from __future__ import annotations

import calendar
import datetime
import os
import pwd
import shutil
import sqlite3
import tempfile
import time
import xmlrpc.client

import pytest
import zeep

from apiserver.sites.home import FileOwner
from tests.conftest import start_server
from tests.e2e.clients.soap_clients import php_calls, site_options, zeep_map
from tests.e2e.test_cpcmd_commands import Cpcmd
from tests.e2e.test_security_htaccess_htpasswd import php_runner, xmlrpc_runner
from tests.e2e.test_soap_zeep import zeep_runner
from tests.sites.support import WEB_USER, WORDPRESS, as_web, make_tree, web_can_write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acts as the web server user through runuser (root)")

DOC = "/var/www/html"


@pytest.fixture(scope="module")
def sites_dir():
    """A sites_root outside pytest's 0700 tmp tree, reachable by the web user."""
    path = tempfile.mkdtemp(prefix="apiserver-e2e-sites-", dir="/tmp")
    os.chmod(path, 0o711)
    yield os.path.join(path, "sites")
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, sites_dir):
    """One server with its sites in sites_dir, a 60 s learning window, and a lockdown that can find nothing
    (its search path an empty folder): a lockdown call by mistake never touches the machine's binaries."""
    empty = str(tmp_path_factory.mktemp("no-binaries"))
    srv = start_server(str(tmp_path_factory.mktemp("fortify")),
                       {"web": {"sites_root": sites_dir},
                        "security": {"learning_window": "60", "lockdown_search_path": empty, "lockdown_trees": "",
                                     "template_root": empty}})
    yield srv
    srv.stop()


def _owner() -> FileOwner:
    entry = pwd.getpwnam("apiserver")  # the sites' owner when the server runs as root
    return FileOwner(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _zeep(server, cookie=None, key=None):
    client = zeep.Client(f"{server.url}/apnscp.wsdl?style=document")
    if cookie:
        client.transport.session.cookies.set("esprit_id", cookie)
    address = f"{server.url}/soap" + (f"?authkey={key}" if key else "")
    return client, client.create_service("{urn:net.apnscp.soap}apnscp", address)


def _site(server, sites_dir, domain, files=WORDPRESS):
    """Add ``domain`` with ``files`` in its document root; returns (document root, hijacked session id)."""
    _client, admin = _zeep(server, key=server.admin_key)
    admin.admin_add_site(domain, "siteadmin", zeep_map(site_options(f"owner@{domain}", "Site-pass-123")))
    root = os.path.join(sites_dir, domain, "fst/var/www/html")
    make_tree(root, files, _owner())
    return root, admin.admin_hijack(domain)


def test_php_soapclient_rpc_encoded(server, sites_dir, php):
    """PHP SoapClient in WSDL mode: fortify max, info, audit with a hash, faults for every mistake."""
    root, sid = _site(server, sites_dir, "php-fort.example")
    calls = [
        ["security_fortify", ["php-fort.example", "", "max"]],
        ["security_fortification_info", ["php-fort.example", ""]],
        ["security_audit", [DOC, None, True]],
        ["security_fortify", ["php-fort.example", "", "lockdown"]],
        ["security_fortify", ["php-fort.example", "../../..", "max"]],
        ["security_fortify", ["other.example", "", "max"]],
        ["security_fortification_info", ["php-fort.example", "missing"]],
        ["security_audit", [f"{DOC}/missing", None, True]],
        ["security_scan_setuid", [None]],
    ]
    out = php_calls(calls, wsdl=server.wsdl_url, location=f"{server.url}/soap", cookie=sid)
    assert out[0] == {"ok": True}
    assert out[1]["ok"]["app"] == "wordpress" and out[1]["ok"]["mode"] == "max"
    assert out[1]["ok"]["writable"] == [f"{DOC}/wp-content/{p}" for p in ("cache", "updraft", "uploads", "wflogs")]
    assert out[1]["ok"]["learned"] == []
    assert f"{DOC}/wp-content/uploads/2026/photo.jpg" in out[2]["ok"] and f"{DOC}/wp-config.php" not in out[2]["ok"]
    assert out[3]["fault"] == "SOAP-ENV:Client.InvalidArgument"
    assert "max, min, learn, write, release, reset" in out[3]["message"]
    assert out[4]["fault"] == "SOAP-ENV:Client.InvalidArgument"
    assert out[5]["fault"] == "SOAP-ENV:Client.NotFound"
    assert out[6]["fault"] == "SOAP-ENV:Client.NotFound" and out[7]["fault"] == "SOAP-ENV:Client.NotFound"
    assert out[8]["fault"] == "SOAP-ENV:Client.Denied"  # appliance only
    assert web_can_write(os.path.join(root, "wp-content/uploads"))
    assert not web_can_write(os.path.join(root, "wp-config.php"))
    # an associative array arrives as the requirements hash
    as_web('echo x > "$1"', os.path.join(root, "wp-content/uploads/web.txt"))
    out = php_calls([["security_audit", [DOC, {"user": WEB_USER}, True]]], wsdl=server.wsdl_url,
                    location=f"{server.url}/soap", cookie=sid)
    assert out == [{"ok": [f"{DOC}/wp-content/uploads/web.txt"]}]
    # the appliance administrator itself is not a site
    out = php_calls([["security_fortify", ["php-fort.example", "", "max"]]], wsdl=server.wsdl_url,
                    location=server.soap_url)
    assert out[0]["fault"] == "SOAP-ENV:Client.Denied"


def test_zeep_document_literal(server, sites_dir):
    """zeep: release then reset, the audit with a Map, scan_setuid as the appliance administrator."""
    root, sid = _site(server, sites_dir, "zeep-fort.example")
    client, site = _zeep(server, cookie=sid)
    assert site.security_fortify("zeep-fort.example", "", "release") is True
    assert web_can_write(os.path.join(root, "wp-config.php"))
    assert as_web('echo x > "$1"', os.path.join(root, "dropped.php")).returncode == 0
    info = site.security_fortification_info("zeep-fort.example", "")
    assert (info.app, info.mode, _list(info.writable), info.until) == ("wordpress", "release", [DOC], None)
    wanted = {"item": [{"key": "user", "value": zeep.xsd.AnyObject(zeep.xsd.String(), WEB_USER)}]}
    assert _list(site.security_audit(DOC, wanted, True)) == [f"{DOC}/dropped.php"]
    assert site.security_fortify("zeep-fort.example", "", "reset") is True
    for path in ("wp-config.php", "dropped.php"):
        assert not web_can_write(os.path.join(root, path)), path
    assert os.stat(os.path.join(root, "dropped.php")).st_uid == _owner().uid
    assert _list(site.security_audit(DOC, None, True)) == []
    with pytest.raises(zeep.exceptions.Fault) as fault:
        site.security_fortify("zeep-fort.example", "wp-config.php", "max")
    assert fault.value.code == "SOAP-ENV:Client.InvalidArgument"
    _client, admin = _zeep(server, key=server.admin_key)
    template = tempfile.mkdtemp(prefix="apiserver-template-")
    try:
        os.makedirs(os.path.join(template, "usr/bin"))
        shutil.copy2("/usr/bin/passwd", os.path.join(template, "usr/bin/passwd"))
        os.chmod(os.path.join(template, "usr/bin/passwd"), 0o4755)
        (found,) = _list(admin.security_scan_setuid(template))
        assert (found.path, found.package, found.trusted, found.mode) == (
            os.path.join(template, "usr/bin/passwd"), "passwd", True, "4755")
        with pytest.raises(zeep.exceptions.Fault) as fault:
            admin.security_scan_setuid(os.path.join(template, "none"))
        assert fault.value.code == "SOAP-ENV:Client.NotFound"
    finally:
        shutil.rmtree(template)


def test_xmlrpc(server, sites_dir):
    """XML-RPC with the hijacked session: fortify min, info, audit with a struct, faults by code."""
    root, sid = _site(server, sites_dir, "xmlrpc-fort.example")
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc", allow_none=True,
                                    headers=[("Cookie", f"esprit_id={sid}")])
    assert api.security.fortify("xmlrpc-fort.example", "", "min") is True
    info = api.security_fortification_info("xmlrpc-fort.example")
    assert info["mode"] == "min" and f"{DOC}/wp-content" in info["writable"]
    assert web_can_write(os.path.join(root, "wp-content/plugins/akismet/akismet.php"))
    os.chmod(os.path.join(root, "index.php"), 0o666)
    assert api.security.audit(DOC, {"perm": "o+w"}, True) == [f"{DOC}/index.php"]
    for call, code in ((lambda: api.security.fortify("xmlrpc-fort.example", "", "nope"), -32602),
                       (lambda: api.security.audit(DOC, {"colour": "red"}, True), -32602),
                       (lambda: api.security.fortify("elsewhere.example", "", "max"), 404),
                       (lambda: api.security.scan_setuid(None), 403)):
        with pytest.raises(xmlrpc.client.Fault) as fault:
            call()
        assert fault.value.faultCode == code, fault.value


def test_cpcmd(server, sites_dir):
    """cpcmd -d DOMAIN for the site's functions, the appliance's own scan_setuid, and exit codes."""
    root, _sid = _site(server, sites_dir, "cpcmd-fort.example")
    run = Cpcmd(server, "socket")
    assert run.ok("-d", "cpcmd-fort.example", "security:fortify", "cpcmd-fort.example", "", "max") == "true"
    info = run.ok("-o", "json", "-d", "cpcmd-fort.example", "security:fortification-info", "cpcmd-fort.example")
    assert '"mode": "max"' in info and f"{DOC}/wp-content/uploads" in info
    as_web('echo x > "$1"', os.path.join(root, "wp-content/uploads/web.txt"))
    assert run.ok("-d", "cpcmd-fort.example", "security:audit", DOC, f"[user:{WEB_USER},perm:o+w]", "false") == "[]"
    assert run.ok("-d", "cpcmd-fort.example", "security:audit", DOC, f"[user:{WEB_USER}]") == \
        f"- {DOC}/wp-content/uploads/web.txt"
    bad = run("-d", "cpcmd-fort.example", "security:fortify", "cpcmd-fort.example", "", "lockdown")
    assert bad.returncode != 0 and "max, min, learn, write, release, reset" in bad.stderr
    assert run("-d", "cpcmd-fort.example", "security:scan-setuid", "/usr/bin").returncode != 0
    assert run("security:fortify", "cpcmd-fort.example").returncode != 0  # the appliance is no site
    template = tempfile.mkdtemp(prefix="apiserver-template-")
    try:
        assert run.ok("security:scan-setuid", template) == "[]"
    finally:
        shutil.rmtree(template)


def _list(value) -> list:
    """A zeep array as a list: None for an empty one, or a wrapper holding the items."""
    if value is None:
        return []
    if hasattr(value, "__values__"):
        (items,) = value.__values__.values()
        return list(items or [])
    return list(value)


def _info(service, domain):
    return service.security_fortification_info(domain, "")


def test_learn_window_survives_a_restart_and_closes_when_overdue(server, sites_dir):
    """A learn window is kept across a restart (same end), and one that ended while the server was down
    is closed at start: what the web user made is learned and max applies."""
    root, sid = _site(server, sites_dir, "learn-fort.example",
                      {"index.php": "<?php", "counter.txt": "0", "cache/": None, "lib/code.php": "<?php"})
    _client, site = _zeep(server, cookie=sid)
    before = time.time()
    assert site.security_fortify("learn-fort.example", "", "max") is True  # unknown application: learn
    info = _info(site, "learn-fort.example")
    assert (info.app, info.mode, _list(info.writable)) == ("unknown", "learn", [DOC])
    until = info.until
    assert before + 59 <= _epoch(until) <= time.time() + 61
    assert as_web('echo c > "$1/cache/page.html"', root).returncode == 0
    server.restart()
    sid = _zeep(server, key=server.admin_key)[1].admin_hijack("learn-fort.example")
    _client, site = _zeep(server, cookie=sid)
    assert _info(site, "learn-fort.example").mode == "learn" and _info(site, "learn-fort.example").until == until
    server.stop()
    db = sqlite3.connect(os.path.join(server.state_dir, "apiserver.db"))
    with db:
        db.execute("UPDATE fortifications SET until = until - 3600")  # the window ended an hour ago
    db.close()
    server.restart()
    sid = _zeep(server, key=server.admin_key)[1].admin_hijack("learn-fort.example")
    _client, site = _zeep(server, cookie=sid)
    deadline = time.monotonic() + 30
    while _info(site, "learn-fort.example").mode != "max":  # closed by the start-up, on the blocking pool
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    info = _info(site, "learn-fort.example")
    assert _list(info.writable) == _list(info.learned) == [f"{DOC}/cache/page.html"]
    assert info.until is None
    assert web_can_write(os.path.join(root, "cache/page.html"))
    for closed in ("index.php", "lib/code.php", "", "cache", "counter.txt"):
        assert not web_can_write(os.path.join(root, closed)), closed


def _epoch(moment) -> float:
    """Seconds since the epoch of a UTC datetime, aware or naive (zeep gives either)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6


def _setuid_template() -> str:
    """A template root holding a setuid copy of /usr/bin/passwd (the caller removes it)."""
    template = tempfile.mkdtemp(prefix="apiserver-template-")
    os.makedirs(os.path.join(template, "usr/bin"))
    shutil.copy2("/usr/bin/passwd", os.path.join(template, "usr/bin/passwd"))
    os.chmod(os.path.join(template, "usr/bin/passwd"), 0o4755)
    return template


def _items(value) -> list:
    """An array as the runners give it: a list, None (empty) or zeep's {"item": [...]} wrapper."""
    if isinstance(value, dict):
        (value,) = value.values()
    return list(value or [])


@pytest.mark.parametrize("client", ["zeep", "php-wsdl", "php-nonwsdl", "xmlrpc"])
def test_roles_and_client_faults_for_every_function(server, sites_dir, client, request):
    """Each client: fortify, fortification_info, audit, manifest_create, lockdown and scan_setuid answer bad
    paths, unknown hostnames, unknown modes, missing files and bad manifests with Client.* faults, refuse the
    wrong role, and scan_setuid works."""
    if client.startswith("php"):
        request.getfixturevalue("php")
    run = {"zeep": lambda: zeep_runner(server), "xmlrpc": lambda: xmlrpc_runner(server),
           "php-wsdl": lambda: php_runner(server, wsdl=True), "php-nonwsdl": lambda: php_runner(server, wsdl=False),
           }[client]()
    domain = f"faults-{client}.example"
    _root, sid = _site(server, sites_dir, domain)
    as_site = run([
        ["security_fortify", [domain, "", "lockdown"]],
        ["security_fortify", [domain, "../../..", "max"]],
        ["security_fortify", [domain, "%2e%2e/%2e%2e", "max"]],
        ["security_fortify", ["unknown.example", "", "max"]],
        ["security_fortify", [domain, "missing", "max"]],
        ["security_fortification_info", ["unknown.example", ""]],
        ["security_fortification_info", [domain, "../../.."]],
        ["security_fortification_info", [domain, "missing"]],
        ["security_audit", [f"{DOC}/../../..", None, True]],
        ["security_audit", [f"{DOC}/missing", None, True]],
        ["security_scan_setuid", [None]],
        ["security_manifest_create", ["unknown.example", ""]],
        ["security_manifest_create", [domain, "../../.."]],
        ["security_manifest_create", [domain, ""]],
        ["security_manifest_create", [domain, ""]],
        ["security_lockdown", [None]],
        ["security_lockdown_status", []],
    ], cookie=sid)
    assert [r.get("fault", "").replace("SOAP-ENV:", "") for r in as_site] == [
        "Client.InvalidArgument", "Client.InvalidArgument", "Client.InvalidArgument", "Client.NotFound",
        "Client.NotFound", "Client.NotFound", "Client.InvalidArgument", "Client.NotFound",
        "Client.InvalidArgument", "Client.NotFound", "Client.Denied",
        "Client.NotFound", "Client.InvalidArgument", "", "Client.InvalidArgument", "Client.Denied",
        "Client.Denied"], as_site
    assert as_site[13]["ok"] == f"{DOC}/.webapp.yml" and "already exists" in as_site[14]["message"]
    assert sites_dir not in str(as_site)  # faults name site paths only
    with open(os.path.join(_root, ".webapp.yml"), "w") as fh:  # the owner's edit goes wrong
        fh.write("fortification:\n  max:\n    - ../../etc/\n")
    (bad,) = run([["security_fortify", [domain, "", "max"]]], cookie=sid)
    assert bad["fault"].replace("SOAP-ENV:", "") == "Client.InvalidArgument"
    assert ".webapp.yml line 3, fortification.max" in bad["message"], bad
    template = _setuid_template()

    def names(*items):
        """A list of strings as the client sends one (zeep: the WSDL's stringArray)."""
        if client != "zeep":
            return list(items)
        return zeep.Client(f"{server.url}/apnscp.wsdl?style=document").get_type(
            "{urn:net.apnscp.soap}stringArray")(string=list(items))

    try:
        as_admin = run([
            ["security_fortify", [domain, "", "max"]],
            ["security_fortification_info", [domain, ""]],
            ["security_audit", [DOC, None, True]],
            ["security_scan_setuid", [template]],
            ["security_scan_setuid", [os.path.join(template, "none")]],
            ["security_scan_setuid", ["relative/root"]],
            ["security_lockdown", [names("../x")]],
            ["security_lockdown", [names()]],
            ["security_lockdown_status", []],
        ], key=server.admin_key)
    finally:
        shutil.rmtree(template)
    assert [r.get("fault", "ok").replace("SOAP-ENV:", "") for r in as_admin] == [
        "Client.Denied", "Client.Denied", "Client.Denied", "ok", "Client.NotFound", "Client.InvalidArgument",
        "Client.InvalidArgument", "Client.InvalidArgument", "ok"], as_admin
    (found,) = _items(as_admin[3]["ok"])
    assert (found["path"], found["package"], found["trusted"], found["mode"]) == (
        os.path.join(template, "usr/bin/passwd"), "passwd", True, "4755")


def test_cpcmd_client_faults(server, sites_dir):
    """cpcmd: bad paths, unknown hostnames and missing files for fortify, fortification-info and audit,
    and a missing root for scan-setuid, each a Client.* fault."""
    _site(server, sites_dir, "cpcmd-faults.example")
    run = Cpcmd(server, "socket")
    site = ["-d", "cpcmd-faults.example"]
    for argv, code in (
            (site + ["security:fortify", "cpcmd-faults.example", "../../..", "max"], "Client.InvalidArgument"),
            (site + ["security:fortify", "unknown.example", "", "max"], "Client.NotFound"),
            (site + ["security:fortify", "cpcmd-faults.example", "missing", "max"], "Client.NotFound"),
            (site + ["security:fortification-info", "unknown.example"], "Client.NotFound"),
            (site + ["security:fortification-info", "cpcmd-faults.example", "%2e%2e"], "Client.InvalidArgument"),
            (site + ["security:audit", f"{DOC}/missing"], "Client.NotFound"),
            (site + ["security:audit", f"{DOC}/../../../.."], "Client.InvalidArgument"),
            (["security:scan-setuid", "/nonexistent-template-root"], "Client.NotFound")):
        result = run(*argv)
        assert result.returncode != 0 and f"cpcmd: {code}:" in result.stderr, (argv, result)
