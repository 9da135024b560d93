"""The HTTPS listener, https_only and the API toggle against running servers, with real clients."""

import shutil
import subprocess

import pytest
import requests

from tests.scopes.clients import certificate_path, cpcmd, soap_post, zeep_service

REMOTE = {"X-Forwarded-For": "192.0.2.10"}  # through the trusted loopback proxy: a documentation address


def https_port(server) -> int:
    return int(server.https_url.rsplit(":", 1)[1])


def test_zeep_over_https_with_generated_certificate(running_server):
    """zeep verifies the self-signed certificate (SAN 127.0.0.1) and calls over HTTPS."""
    assert "cp.api" in zeep_service(running_server, https=True).scope_list("cp.*")
    with pytest.raises(requests.exceptions.SSLError):  # without trusting it, verification really fails
        requests.get(f"{running_server.https_url}/apnscp.wsdl", timeout=30)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command line tool not installed")
@pytest.mark.parametrize("flag, accepted", [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)])
def test_tls_versions_on_the_https_listener(running_server, flag, accepted):
    """openssl s_client (willing to speak old protocols) completes only TLS 1.2 and 1.3."""
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{https_port(running_server)}", flag,
                           "-cipher", "ALL:@SECLEVEL=0"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)
    output = proc.stdout + proc.stderr
    completed = proc.returncode == 0 and "Cipher is (NONE)" not in output
    assert completed is accepted, output


def test_https_only_refuses_remote_http_naming_https_url(server_factory):
    """With https_only: remote HTTP gets 403 naming the HTTPS URL; loopback HTTP and remote HTTPS work."""
    server = server_factory({"frontend": {"https_only": "true"}}, https=True)
    refused = soap_post(server.soap_url, "scope_list", headers=REMOTE)
    assert refused.status_code == 403
    assert f"https://127.0.0.1:{https_port(server)}/soap" in refused.text
    assert server.admin_key not in refused.text
    assert soap_post(server.soap_url, "scope_list").status_code == 200
    secure = soap_post(f"{server.https_url}/soap?authkey={server.admin_key}", "scope_list", headers=REMOTE,
                       verify=certificate_path(server))
    assert secure.status_code == 200 and "cp.config" in secure.text


def test_https_only_switched_at_run_time_by_cp_config(server_factory):
    """scope:set cp.config frontend https_only true takes effect at once, and false undoes it."""
    server = server_factory(https=True)
    assert soap_post(server.soap_url, "scope_list", headers=REMOTE).status_code == 200
    cpcmd(server, "scope:set", "cp.config", "frontend", "https_only", "true")
    assert soap_post(server.soap_url, "scope_list", headers=REMOTE).status_code == 403
    cpcmd(server, "scope:set", "cp.config", "frontend", "https_only", "false")
    assert soap_post(server.soap_url, "scope_list", headers=REMOTE).status_code == 200


def test_api_disabled_holds_on_both_listeners(server_factory):
    """[soap] enabled=0: SOAP and XML-RPC answer 403 on HTTP and HTTPS; cp.api true (from cpcmd) turns it back on."""
    server = server_factory({"soap": {"enabled": "0"}}, https=True)
    verify = certificate_path(server)
    for base in (server.url, server.https_url):
        for path in (f"/soap?authkey={server.admin_key}", f"/xmlrpc?authkey={server.admin_key}"):
            answer = soap_post(base + path, "scope_list", verify=verify)
            assert answer.status_code == 403, (base, path, answer.text)
            assert "[soap] enabled" in answer.text or "disabled" in answer.text.lower()
    assert cpcmd(server, "scope:get", "cp.api") is False
    cpcmd(server, "scope:set", "cp.api", "true")
    assert zeep_service(server).scope_get("cp.api") is True
    assert zeep_service(server, https=True).scope_get("cp.api") is True
    zeep_service(server, https=True).scope_set("cp.api", False)
    answer = soap_post(f"{server.https_url}/soap?authkey={server.admin_key}", "scope_list", verify=verify)
    assert answer.status_code == 403
    assert soap_post(server.soap_url, "scope_list").status_code == 403
