"""The security middleware through a running server over SOAP (zeep and raw HTTP): the seed's
auth:restrict-ip sequence, refused addresses and forged sessions counted by Anvil, delays that
hold up nobody else, and the API toggle switched at run time.

Remote clients are simulated the way the brief allows: the test process is the trusted proxy
(``[core] http_trusted_forward=127.0.0.1`` in the fixture's config) and names the client with
``X-Forwarded-For: 192.0.2.x``.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests
import zeep

from tests.e2e.clients.soap_clients import site_options, zeep_map
from tests.scopes.clients import cpcmd, soap_post

NO_DELAYS = {"anvil": {"min_attempts": "1000"}}  # the count is what these tests are about, not the waits


class Soap:
    """zeep on the document WSDL; each call names its client address, key or session."""

    def __init__(self, server):
        self.server = server
        self.client = zeep.Client(f"{server.url}/apnscp.wsdl?style=document")

    def __call__(self, operation: str, *args, key=None, sid=None, address="192.0.2.1"):
        session = self.client.transport.session
        session.headers["X-Forwarded-For"] = address
        session.cookies.clear()
        if sid:
            session.cookies.set("esprit_id", sid)
        location = f"{self.server.url}/soap" + (f"?authkey={key}" if key else "")
        service = self.client.create_service("{urn:net.apnscp.soap}apnscp", location)
        return getattr(service, operation)(*args)

    def fault(self, operation: str, *args, **kwargs) -> zeep.exceptions.Fault:
        with pytest.raises(zeep.exceptions.Fault) as raised:
            self(operation, *args, **kwargs)
        return raised.value


def restrictions(soap, sid, gate=None):
    """auth_get_ip_restrictions as (ip, gate) pairs (zeep shows an empty array as None)."""
    listed = soap("auth_get_ip_restrictions", gate, sid=sid) or []
    return sorted((r["ip"], r["gate"]) for r in listed)


def site_with_key(soap, admin_key, domain):
    """A new site: its hijack session (the appliance administrator acting) and its own API key."""
    soap("admin_add_site", domain, "siteadmin", zeep_map(site_options(f"admin@{domain}", "Site-passw0rd")),
         key=admin_key)
    sid = soap("admin_hijack", domain, key=admin_key)
    return sid, soap("auth_create_api_key", "middleware e2e", sid=sid)


def whoami_site(soap, key, address):
    return soap("common_whoami", key=key, address=address)["site"]


def test_seed_restrict_ip_sequence(server_factory):
    """Seed sequence: none: all; a UI entry: other gates refuse all; no gate: that address; removed: UI only."""
    server = server_factory(NO_DELAYS)
    soap = Soap(server)
    sid, key = site_with_key(soap, server.admin_key, "seed.example.com")
    here, elsewhere = "192.0.2.10", "192.0.2.11"

    assert restrictions(soap, sid) == []
    assert whoami_site(soap, key, elsewhere) == "seed.example.com"

    assert soap("auth_restrict_ip", here, "UI", sid=sid) is True
    assert restrictions(soap, sid) == [(here, "UI")]
    assert restrictions(soap, sid, "SOAP") == []
    for address in (here, elsewhere):  # all-or-nothing: SOAP has no entry, so nobody gets in there
        assert soap.fault("common_whoami", key=key, address=address).code == "SOAP-ENV:Client.Denied"

    assert soap("auth_restrict_ip", here, sid=sid) is True
    assert restrictions(soap, sid, "SOAP") == [(here, None)]
    assert whoami_site(soap, key, here) == "seed.example.com"
    assert soap.fault("common_whoami", key=key, address=elsewhere).code == "SOAP-ENV:Client.Denied"

    assert soap("auth_remove_ip_restriction", here, sid=sid) is True
    assert restrictions(soap, sid) == [(here, "UI")]
    assert soap.fault("common_whoami", key=key, address=here).code == "SOAP-ENV:Client.Denied"

    assert soap("auth_remove_ip_restriction", here, "UI", sid=sid) is True
    assert restrictions(soap, sid) == []
    assert whoami_site(soap, key, elsewhere) == "seed.example.com"


def test_invalid_entries_are_refused_naming_the_value(server_factory):
    """10.0.0.0/33, not-an-ip and an unknown gate are Client.InvalidArgument naming the value; the limit holds."""
    server = server_factory({"auth": {"ip_restriction_limit": "2"}, **NO_DELAYS})
    soap = Soap(server)
    sid, _ = site_with_key(soap, server.admin_key, "invalid.example.com")
    for args, named in ((("10.0.0.0/33",), "10.0.0.0/33"), (("not-an-ip",), "not-an-ip"),
                        (("192.0.2.1", "FTP"), "FTP")):
        fault = soap.fault("auth_restrict_ip", *args, sid=sid)
        assert fault.code == "SOAP-ENV:Client.InvalidArgument" and named in fault.message
    soap("auth_restrict_ip", "192.0.2.0/24", sid=sid)
    soap("auth_restrict_ip", "2001:db8::/32", "DAV", sid=sid)
    fault = soap.fault("auth_restrict_ip", "198.51.100.1", sid=sid)
    assert fault.code == "SOAP-ENV:Client.InvalidArgument" and "ip_restriction_limit" in fault.message
    assert restrictions(soap, sid) == [("192.0.2.0/24", None), ("2001:db8::/32", "DAV")]


def test_refused_address_counts_in_anvil(server_factory):
    """A refused address fails like a bad key and counts until Throttled, even with the admin key."""
    server = server_factory({"anvil": {"limit": "4", "min_attempts": "1000"}})
    soap = Soap(server)
    sid, key = site_with_key(soap, server.admin_key, "counted.example.com")
    soap("auth_restrict_ip", "192.0.2.50", sid=sid)
    refused = soap.fault("common_whoami", key=key, address="192.0.2.60")
    bad = soap.fault("common_whoami", key="0" * 64, address="192.0.2.61")
    assert (refused.code, refused.message) == (bad.code, bad.message) == ("SOAP-ENV:Client.Denied", bad.message)
    codes = [soap.fault("common_whoami", key=key, address="192.0.2.60").code for _ in range(3)]
    assert codes == ["SOAP-ENV:Client.Denied"] * 2 + ["SOAP-ENV:Client.Throttled"]
    throttled = soap.fault("common_whoami", key=server.admin_key, address="192.0.2.60")
    assert throttled.code == "SOAP-ENV:Client.Throttled"
    assert whoami_site(soap, key, "192.0.2.50") == "counted.example.com"
    log = server.log()
    assert "blocking 192.0.2.60" in log and key not in log and server.admin_key not in log


def test_forged_esprit_id_counts(server_factory):
    """Session fixation: esprit_id values that name no live session count until the address is throttled."""
    server = server_factory({"anvil": {"limit": "3", "min_attempts": "1000"}})
    soap = Soap(server)
    codes = [soap.fault("common_whoami", sid=f"forged-session-{n}", address="192.0.2.70").code for n in range(3)]
    assert codes == ["SOAP-ENV:Client.Denied"] * 2 + ["SOAP-ENV:Client.Throttled"]
    assert soap.fault("common_whoami", key=server.admin_key, address="192.0.2.70").code == "SOAP-ENV:Client.Throttled"
    assert soap("common_whoami", key=server.admin_key, address="192.0.2.71")["role"] == "appliance"


def test_loopback_is_whitelisted(server_factory):
    """Without a forwarded address the client is 127.0.0.1, in the default whitelist: never throttled."""
    server = server_factory({"anvil": {"limit": "2", "min_attempts": "1000"}})
    bad_url = f"{server.url}/soap?authkey={'0' * 64}"
    answers = [soap_post(bad_url, "common_whoami") for _ in range(5)]
    assert all("Client.Denied" in a.text for a in answers)
    assert "appliance" in soap_post(server.soap_url, "common_whoami").text


def timed_post(url, address):
    started = time.monotonic()
    answer = soap_post(url, "common_whoami", headers={"X-Forwarded-For": address})
    return answer, started, time.monotonic()


def test_delay_holds_up_only_that_address(server_factory):
    """Past min_attempts that address waits base_delay; another address meanwhile is not held up."""
    server = server_factory({"anvil": {"min_attempts": "1", "base_delay": "3000", "max_delay": "3000"}})
    bad_url = f"{server.url}/soap?authkey={'0' * 64}"
    assert "Client.Denied" in soap_post(bad_url, "common_whoami", headers={"X-Forwarded-For": "192.0.2.80"}).text
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        delayed = pool.submit(timed_post, server.soap_url, "192.0.2.80")
        time.sleep(0.2)  # the delayed request goes first (if it does not, the order below still holds)
        other = pool.submit(timed_post, server.soap_url, "192.0.2.81")
        (delayed_answer, delayed_sent, delayed_done), (other_answer, other_sent, other_done) = \
            delayed.result(), other.result()
    assert delayed_answer.status_code == other_answer.status_code == 200
    # Orders, not durations (a loaded machine stretches every request): the other address was
    # sent while the delayed one waited, and answered before it.
    assert delayed_done - delayed_sent >= 3.0
    assert other_sent < delayed_done and other_done < delayed_done


def test_toggle_answers_403_and_comes_back_at_run_time(server_factory):
    """cp.api false: API URLs and both WSDLs answer 403 saying why; cpcmd turns it back on."""
    server = server_factory()
    urls = [f"{server.url}/apnscp.wsdl", f"{server.url}/soap?wsdl", f"{server.url}/apnscp.wsdl?style=document"]
    assert Soap(server)("scope_set", "cp.api", False, key=server.admin_key, address="192.0.2.90") is True
    for answer in [requests.get(u, timeout=30) for u in urls] + [
            soap_post(server.soap_url, "common_whoami"),
            requests.post(f"{server.url}/xmlrpc?authkey={server.admin_key}", timeout=30,
                          data=b"<?xml version='1.0'?><methodCall><methodName>common.whoami</methodName></methodCall>",
                          headers={"Content-Type": "text/xml"})]:
        assert answer.status_code == 403
        assert "disabled by configuration ([soap] enabled=false)" in answer.text
        assert server.admin_key not in answer.text
    cpcmd(server, "scope:set", "cp.api", "true")
    assert all(requests.get(u, timeout=30).status_code == 200 for u in urls)
    assert "appliance" in soap_post(server.soap_url, "common_whoami").text


def test_block_ends_by_itself_after_ttl(server_factory):
    """A block refuses the correct key until ttl passes, then ends; block and unblock logged once."""
    server = server_factory({"anvil": {"limit": "2", "ttl": "3", "min_attempts": "1000"}})
    soap = Soap(server)
    for _ in range(2):
        soap.fault("common_whoami", key="0" * 64, address="192.0.2.95")
    blocked_at = time.monotonic()
    assert soap.fault("common_whoami", key=server.admin_key, address="192.0.2.95").code == "SOAP-ENV:Client.Throttled"
    while time.monotonic() - blocked_at < 15:
        try:
            assert soap("common_whoami", key=server.admin_key, address="192.0.2.95")["role"] == "appliance"
            break
        except zeep.exceptions.Fault as fault:
            assert fault.code == "SOAP-ENV:Client.Throttled"
        time.sleep(0.25)  # polling a real server's real clock
    else:
        pytest.fail("the block did not end within 15 s of a 3 s ttl")
    assert time.monotonic() - blocked_at >= 2.5
    deadline = time.monotonic() + 5
    while "anvil: unblocked 192.0.2.95" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)  # the unblock line is written by the server's own timer
    log = server.log()
    assert log.count("anvil: blocking 192.0.2.95") == 1 and log.count("anvil: unblocked 192.0.2.95") == 1
