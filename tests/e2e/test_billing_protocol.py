"""Protocol details the billing modules rely on: repeated slashes, a live session deciding over a
key (and an unknown one not counted next to a key), no session cookie on API answers, data-keyed
maps in each client's own map type, the single-sign-on landing, and the WSDL in three clients."""

from __future__ import annotations

import subprocess
import xmlrpc.client

import pytest
import requests
import zeep

from tests.e2e.clients.dav_clients import xmlrpc_post
from tests.e2e.clients.soap_clients import perl_calls, php_calls, site_options
from tests.scopes.clients import soap_post

NO_DELAYS = {"anvil": {"limit": "3", "min_attempts": "1000"}}


def decoded(answer: requests.Response):
    return xmlrpc.client.loads(answer.content, use_builtin_types=True)[0][0]


@pytest.fixture(scope="module")
def sites(running_server):
    """Two sites on the module's server: (admin proxy, {domain: site id})."""
    admin = xmlrpc.client.ServerProxy(f"{running_server.url}/xmlrpc?authkey={running_server.admin_key}",
                                      allow_none=True)
    for domain in ("maps-a.example", "maps-b.example"):
        admin.admin_add_site(domain, domain.split(".")[0].replace("-", ""),
                             {"billing.invoice": "MAPS-1", "ssh.enabled": 1})
    ids = {domain: admin.admin_get_site_id(domain) for domain in ("maps-a.example", "maps-b.example")}
    return admin, ids


def test_repeated_slashes_count_as_one(running_server):
    """//apnscp.wsdl, ///soap?wsdl, //soap and //xmlrpc answer as their single-slash paths (Apache's
    MergeSlashes; ClientExec asks for //apnscp.wsdl)."""
    once = requests.get(f"{running_server.url}/apnscp.wsdl", timeout=60)
    twice = requests.get(f"{running_server.url}//apnscp.wsdl", timeout=60)
    assert twice.status_code == 200 and twice.content == once.content
    assert requests.get(f"{running_server.url}///soap?wsdl", timeout=60).content == once.content
    assert soap_post(f"{running_server.url}//soap?authkey={running_server.admin_key}",
                     "common_whoami").status_code == 200
    answer = requests.post(f"{running_server.url}//xmlrpc?authkey={running_server.admin_key}",
                           data=xmlrpc.client.dumps((), "common_whoami"), headers={"Content-Type": "text/xml"},
                           timeout=60)
    assert decoded(answer)["role"] == "appliance"
    assert requests.get(f"{running_server.url}//nothing//here", timeout=60).status_code == 404


def test_data_keyed_maps_reach_every_client_as_its_own_map(running_server, sites, php, perl_soap_lite):
    """admin_collect and admin_get_domains: PHP associative arrays (int keys stay ints), SOAP::Lite
    hashes, zeep a Map of items, XML-RPC structs (keys as strings); nothing matched: an empty array."""
    admin, ids = sites
    a, b = ids["maps-a.example"], ids["maps-b.example"]
    calls = [["admin_collect", [["ssh.enabled"], None, ["MAPS-1"]]], ["admin_get_domains", []],
             ["admin_collect", [["ssh"], None, ["nope.example"]]], ["admin_get_usage", ["storage", ["MAPS-1"]]]]
    collected, domains, empty, usage = php_calls(calls, wsdl=running_server.wsdl_url, location=running_server.soap_url)
    assert collected["ok"][a] == {"ssh": {"enabled": 1}, "active": True, "domain": "maps-a.example"}
    assert set(collected["ok"]) == {a, b} and empty["ok"] == [] and set(usage["ok"]) == {a, b}
    assert {str(number): domain for number, domain in domains["ok"].items()} == {
        a[4:]: "maps-a.example", b[4:]: "maps-b.example"}
    perl = perl_calls(calls[:1], proxy=running_server.soap_url)
    assert int(perl[0]["ok"][a]["ssh"]["enabled"]) == 1 and perl[0]["ok"][b]["domain"] == "maps-b.example"
    client = zeep.Client(f"{running_server.url}/apnscp.wsdl?style=document")
    service = client.create_service("{urn:net.apnscp.soap}apnscp", running_server.soap_url)
    answer = service.admin_collect({"string": ["ssh.enabled"]}, None, {"string": ["MAPS-1"]})
    as_dict = {item.key: item.value for item in answer}  # zeep unwraps the Map to its items
    assert set(as_dict) == {a, b}
    site_a = {item.key: item.value for item in as_dict[a].item}
    assert site_a["domain"] == "maps-a.example" and site_a["ssh"].item[0].value == 1
    assert admin.admin_get_domains()[a[4:]] == "maps-a.example"
    assert admin.admin_collect(["ssh.enabled"], None, ["MAPS-1"])[b]["ssh"] == {"enabled": 1}


def test_a_live_session_decides_and_no_session_cookie_is_ever_set(running_server, sites):
    """authkey + esprit_id of a hijacked session runs as the site; no API answer carries Set-Cookie
    (PHP's SoapClient would replay it on the client's next call, as the site)."""
    admin, ids = sites
    hijack = soap_post(running_server.soap_url, "admin_hijack")  # no arguments: a fault, still no cookie
    assert "Set-Cookie" not in hijack.headers
    sid = admin.admin_hijack("maps-a.example")
    answer = xmlrpc_post(running_server, "common_whoami", key=running_server.admin_key, sid=sid)
    assert decoded(answer)["site"] == "maps-a.example" and "Set-Cookie" not in answer.headers
    soap = requests.post(f"{running_server.url}/soap?authkey={running_server.admin_key}", timeout=60,
                         data=('<?xml version="1.0"?><e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/">'
                               '<e:Body><admin_hijack xmlns="urn:net.apnscp.soap"><site>maps-b.example</site>'
                               '</admin_hijack></e:Body></e:Envelope>').encode(),
                         headers={"Content-Type": "text/xml", "Cookie": f"esprit_id={sid}"})
    assert soap.status_code == 500 and "Client.Denied" in soap.text  # as the site: admin_* is refused
    assert "Set-Cookie" not in soap.headers


def test_an_unknown_session_next_to_a_key_is_not_counted_alone_it_is(server_factory):
    """WHMCS 1.0.8 sends its own PHP session id as esprit_id with its key: the key decides and
    nothing is counted (limit 3, five calls); the same id alone is counted until Anvil blocks."""
    server = server_factory(NO_DELAYS)
    for _ in range(5):
        answer = xmlrpc_post(server, "common_whoami", key=server.admin_key, sid="c0ffee" * 5, address="192.0.2.80")
        assert decoded(answer)["role"] == "appliance"
    admin = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    assert admin.rampart_is_banned("192.0.2.80") is False
    for _ in range(3):
        assert b"<fault>" in xmlrpc_post(server, "common_whoami", sid="c0ffee" * 5, address="192.0.2.80").content
    assert admin.rampart_banned_services("192.0.2.80") == ["anvil"]


def test_the_landing_serves_once_and_bad_ids_count_in_anvil(server_factory):
    """/apps/<app>?esprit_id=ID takes a UI hijack session once (303, a fresh cookie), then the page
    says who is logged in; a reused, unknown or non-UI id lands nowhere (403) and counts in Anvil."""
    server = server_factory(NO_DELAYS)
    admin = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    admin.admin_add_site("landing.example", "lander", site_options("l@landing.example", "Lander-pass-1"))
    visitor = {"X-Forwarded-For": "192.0.2.81"}
    sid = admin.admin_hijack("landing.example", None, "UI")
    browser = requests.Session()
    first = browser.get(f"{server.url}/apps/filemanager?esprit_id={sid}&path=%2Fvar", headers=visitor,
                        allow_redirects=False, timeout=60)
    assert first.status_code == 303 and first.headers["Location"] == "/apps/filemanager?path=%2Fvar"
    assert browser.cookies["esprit_id"] != sid
    page = browser.get(f"{server.url}{first.headers['Location']}", headers=visitor, timeout=60)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "lander" in page.text and "landing.example" in page.text and "filemanager" in page.text
    assert requests.get(f"{server.url}/apps/dashboard", timeout=60).status_code == 401
    soap_session = admin.admin_hijack("landing.example")  # not made for the UI
    for bad in (sid, "0" * 64, soap_session):
        answer = requests.get(f"{server.url}/apps/dashboard?esprit_id={bad}", headers=visitor, timeout=60)
        assert answer.status_code in (403, 429)
    assert admin.rampart_banned_services("192.0.2.81") == ["anvil"]
    assert requests.get(f"{server.url}/apps/dashboard?esprit_id={sid}", headers=visitor, timeout=60).status_code == 429
    assert requests.get(f"{server.url}/apps/a/b", timeout=60).status_code == 404


def test_the_wsdls_load_in_php_zeep_and_soap_lite(running_server, php, perl_soap_lite, tmp_path):
    """The regenerated WSDLs are read by PHP's SoapClient and SOAP::Lite's service() (RPC) and zeep
    (document), which call admin_list_plans from them."""
    assert php_calls([["admin_list_plans", []]], wsdl=running_server.wsdl_url,
                     location=running_server.soap_url) == [{"ok": ["basic"]}]
    client = zeep.Client(f"{running_server.url}/apnscp.wsdl?style=document")
    service = client.create_service("{urn:net.apnscp.soap}apnscp", running_server.soap_url)
    assert list(service.admin_list_plans()) == ["basic"]
    # SOAP::Lite's stubs call the WSDL's own address: a copy of the WSDL names the key in it
    wsdl = requests.get(running_server.wsdl_url, timeout=60).text
    copy = tmp_path / "apnscp.wsdl"
    copy.write_text(wsdl.replace(f'location="{running_server.url}/soap"', f'location="{running_server.soap_url}"'),
                    encoding="utf-8")
    script = "use SOAP::Lite; print join(',', @{SOAP::Lite->service($ARGV[0])->admin_list_plans()}), \"\\n\";"
    out = subprocess.run(["perl", "-e", script, f"file:{copy}"], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "basic", out.stderr
