"""Perl SOAP::Lite end to end: ->proxy(...)->uri(...) with plain positional arguments."""

from __future__ import annotations

from tests.e2e.clients.soap_clients import account_scenario, perl_calls


def perl_bool(value):
    """SOAP::Lite decodes xsd:boolean to 0/1; a string such as 'false' stays a string."""
    return {0: False, 1: True}.get(value, value) if isinstance(value, int) else value


def test_perl_account_scenario(running_server, perl_soap_lite):
    """Sites, users, keys, hijack, IP restrictions and ->fault Client.Denied from SOAP::Lite."""
    def run(calls, key=None, cookie=None):
        proxy = f"{running_server.url}/soap" + (f"?authkey={key}" if key else "")
        return perl_calls(calls, proxy=proxy, cookie=cookie)

    account_scenario(run, running_server.admin_key, "perl.example.com", as_bool=perl_bool)


def test_perl_fault(running_server, perl_soap_lite):
    """A failing call sets ->fault with the api.md code and message."""
    out = perl_calls([["admin_delete_site", ["absent.example.com"]]], proxy=running_server.soap_url)
    assert out[0]["fault"] == "SOAP-ENV:Client.NotFound" and "absent.example.com" in out[0]["message"]
