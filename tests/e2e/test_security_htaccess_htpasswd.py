"""security_check_htaccess, security_apache_policy and the htpasswd functions through a running
server: SOAP document (zeep), SOAP rpc (PHP SoapClient, WSDL and non-WSDL), XML-RPC and cpcmd,
with their role checks and Client.* faults."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import uuid
import xmlrpc.client

import pytest

from tests.e2e.clients.dav_clients import let_owner_reach
from tests.e2e.clients.soap_clients import php_calls, site_options
from tests.e2e.test_cpcmd_commands import Cpcmd
from tests.e2e.test_soap_zeep import zeep_runner

PASSWORD_FILE = "/var/www/.htpasswd"


def xmlrpc_runner(server):
    """``run(calls, key, cookie)`` over xmlrpc.client, faults as {"fault": code, "message": ...}."""

    def run(calls, key=None, cookie=None):
        headers = [("Cookie", f"esprit_id={cookie}")] if cookie else []
        url = f"{server.url}/xmlrpc" + (f"?authkey={key}" if key else "")
        client = xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True, headers=headers)
        out = []
        for operation, args in calls:
            try:
                out.append({"ok": getattr(client, operation)(*args)})
            except xmlrpc.client.Fault as fault:
                code, _, message = fault.faultString.partition(": ")
                out.append({"fault": code, "message": message})
        return out

    return run


def php_runner(server, wsdl: bool):
    def run(calls, key=None, cookie=None):
        location = f"{server.url}/soap" + (f"?authkey={key}" if key else "")
        return php_calls(calls, wsdl=server.wsdl_url if wsdl else None, location=location, cookie=cookie)

    return run


def _code(result: dict) -> str:
    return result.get("fault", "").replace("SOAP-ENV:", "")


def _ok(results: list) -> list:
    for result in results:
        assert "ok" in result, f"unexpected fault: {result}"
    return [r["ok"] for r in results]


def _docroot(server, domain: str) -> str:
    return os.path.join(server.state_dir, "sites", domain, "fst", "var", "www", "html")


def _plant(server, domain: str) -> None:
    docroot = _docroot(server, domain)
    os.makedirs(os.path.join(docroot, "blog"))
    with open(os.path.join(docroot, ".htaccess"), "w") as fh:
        fh.write("Options -Indexes\nOptions +FollowSymLinks\n")
    with open(os.path.join(docroot, "blog", ".htaccess"), "w") as fh:
        fh.write("<Files \"x.html\">\n  XBitHack on\n</Files>\n")


def _site(run, server, tag: str) -> tuple:
    domain = f"sec-{tag}-{uuid.uuid4().hex[:6]}.example.com"
    _, sid = _ok(run([["admin_add_site", [domain, "siteadmin", site_options(f"admin@{domain}", "Site-passw0rd")]],
                      ["admin_hijack", [domain]]], key=server.admin_key))
    _plant(server, domain)
    let_owner_reach(server)  # the site's account works on its files: it must pass pytest's 0700 folders
    return domain, sid


def scenario(run, server, tag: str, as_bool=lambda v: v, empty=lambda v: v == []) -> None:
    """What every client goes through: findings, the policy, htpasswd, roles and faults."""
    domain, sid = _site(run, server, tag)
    results = run([
        ["security_check_htaccess", ["/var/www/html"]],
        ["security_check_htaccess", []],
        ["security_check_htaccess", ["/var/www/html/blog"]],
        ["security_htpasswd_add", [PASSWORD_FILE, "someuser", "Invited-0nly"]],
        ["security_htpasswd_add", [PASSWORD_FILE, "other", "Other-pw-1"]],
        ["security_htpasswd_verify", [PASSWORD_FILE, "someuser", "Invited-0nly"]],
        ["security_htpasswd_verify", [PASSWORD_FILE, "someuser", "invited-0nly"]],
        ["security_htpasswd_users", [PASSWORD_FILE]],
        ["security_htpasswd_delete", [PASSWORD_FILE, "other"]],
        ["security_htpasswd_delete", [PASSWORD_FILE, "other"]],
        ["security_htpasswd_users", [PASSWORD_FILE]],
    ], cookie=sid)
    found, default, blog, added, added2, right, wrong, listed, deleted, again, left = _ok(results)
    assert [(f["file"], f["line"], f["directive"]) for f in found] == [
        ("/var/www/html/.htaccess", 2, "Options +FollowSymLinks"),
        ("/var/www/html/blog/.htaccess", 2, "XBitHack on")]
    assert "Apache answers 500" in found[0]["reason"] and "no effect" in found[1]["reason"]
    assert default == found and blog == found[1:]
    assert as_bool(added) is True and as_bool(added2) is True
    assert as_bool(right) is True and as_bool(wrong) is False
    assert listed == ["someuser", "other"]
    assert as_bool(deleted) is True and as_bool(again) is False and left == ["someuser"]

    host_file = os.path.join(server.state_dir, "sites", domain, "fst", "var", "www", ".htpasswd")
    info = os.stat(host_file)
    assert stat.S_IMODE(info.st_mode) == 0o640
    if os.geteuid() == 0:
        assert info.st_gid == pwd.getpwnam("www-data").pw_gid and info.st_uid == pwd.getpwnam("apiserver").pw_uid
    if shutil.which("htpasswd"):
        check = subprocess.run(["htpasswd", "-vb", host_file, "someuser", "Invited-0nly"], capture_output=True)
        assert check.returncode == 0, check.stderr

    faults = run([
        ["security_check_htaccess", ["/var/www/html/../../../../etc"]],
        ["security_check_htaccess", ["/var/www/html/%2e%2e/%2e%2e"]],
        ["security_check_htaccess", ["/var/www/html/missing"]],
        ["security_htpasswd_add", ["/var/www/html/../../../../tmp/x", "someuser", "pw"]],
        ["security_htpasswd_add", [PASSWORD_FILE, "bad:name", "pw"]],
        ["security_htpasswd_add", [PASSWORD_FILE, "", "pw"]],
        ["security_htpasswd_add", [PASSWORD_FILE, "two\nlines", "pw"]],
        ["security_htpasswd_verify", [PASSWORD_FILE, "a:b", "pw"]],
        ["security_htpasswd_verify", ["/var/www/none", "someuser", "pw"]],
        ["security_htpasswd_users", ["/var/www/none"]],
        ["security_htpasswd_delete", ["/var/www/none", "someuser"]],
        ["security_htpasswd_users", ["/var/www/html/%2e%2e/%2e%2e/%2e%2e/etc/passwd"]],
        ["security_apache_policy", []],
    ], cookie=sid)
    assert [_code(f) for f in faults] == [
        "Client.InvalidArgument", "Client.InvalidArgument", "Client.NotFound", "Client.InvalidArgument",
        "Client.InvalidArgument", "Client.InvalidArgument", "Client.InvalidArgument", "Client.InvalidArgument",
        "Client.NotFound", "Client.NotFound", "Client.NotFound", "Client.InvalidArgument", "Client.Denied",
    ], faults
    assert "Invited-0nly" not in json.dumps(faults)

    policy, as_admin = run([["security_apache_policy", []], ["security_check_htaccess", ["/var/www/html"]]],
                           key=server.admin_key)
    assert policy["ok"].startswith("AllowOverride ") and "AllowOverrideList None" in policy["ok"]
    assert _code(as_admin) == "Client.Denied", as_admin


def test_zeep_document_dialect(running_server):
    """zeep over the document/literal WSDL."""
    scenario(zeep_runner(running_server), running_server, "zeep")


def test_php_soapclient_wsdl(running_server, php):
    """PHP SoapClient in WSDL mode (rpc/encoded)."""
    scenario(php_runner(running_server, wsdl=True), running_server, "phpw")


def test_php_soapclient_non_wsdl(running_server, php):
    """PHP SoapClient without a WSDL (location + uri)."""
    scenario(php_runner(running_server, wsdl=False), running_server, "phpn")


def test_xmlrpc(running_server):
    """xmlrpc.client at /xmlrpc."""
    scenario(xmlrpc_runner(running_server), running_server, "xmlrpc")


@pytest.mark.parametrize("mode", ["socket", "remote"])
def test_cpcmd(running_server, mode):
    """cpcmd -d DOMAIN security:... as the appliance administrator acting as the site; apache-policy without -d."""
    cpcmd = Cpcmd(running_server, mode)
    domain = f"sec-cpcmd-{mode}-{uuid.uuid4().hex[:6]}.example.com"
    cpcmd.ok("admin:add-site", domain, "siteadmin", f"[siteinfo.email:admin@{domain},auth.tpasswd:Site-passw0rd]")
    _plant(running_server, domain)
    let_owner_reach(running_server)
    found = json.loads(cpcmd.ok("-o", "json", "-d", domain, "security:check-htaccess", "/var/www/html"))
    assert [(f["file"], f["line"]) for f in found] == [("/var/www/html/.htaccess", 2),
                                                        ("/var/www/html/blog/.htaccess", 2)]
    assert cpcmd.ok("security:apache-policy").startswith("AllowOverride AuthConfig FileInfo")
    assert cpcmd.ok("-d", domain, "security:htpasswd-add", PASSWORD_FILE, "someuser", "Invited-0nly") == "true"
    assert cpcmd.ok("-d", domain, "security:htpasswd-verify", PASSWORD_FILE, "someuser", "Invited-0nly") == "true"
    assert cpcmd.ok("-d", domain, "security:htpasswd-verify", PASSWORD_FILE, "someuser", "nope") == "false"
    assert json.loads(cpcmd.ok("-o", "json", "-d", domain, "security:htpasswd-users", PASSWORD_FILE)) == ["someuser"]
    assert cpcmd.ok("-d", domain, "security:htpasswd-delete", PASSWORD_FILE, "someuser") == "true"
    for argv, code in ((["-d", domain, "security:check-htaccess", "/var/www/html/../../.."], "Client.InvalidArgument"),
                       (["-d", domain, "security:htpasswd-users", "/var/www/nothing"], "Client.NotFound"),
                       (["-d", domain, "security:htpasswd-add", PASSWORD_FILE, "a:b", "pw"], "Client.InvalidArgument"),
                       (["-d", domain, "security:apache-policy"], "Client.Denied"),
                       (["security:check-htaccess"], "Client.Denied")):
        result = cpcmd(*argv)
        assert result.returncode != 0 and f"cpcmd: {code}:" in result.stderr, (argv, result)
