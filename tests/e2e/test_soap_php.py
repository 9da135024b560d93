"""PHP SoapClient end to end: WSDL mode with positional calls, and non-WSDL mode (location + uri)."""

from __future__ import annotations

from tests.e2e.clients.soap_clients import account_scenario, php_calls


def test_php_wsdl_mode_account_scenario(running_server, php):
    """Sites, users, keys, hijack, IP restrictions and Client.Denied with positional calls on /apnscp.wsdl."""
    def run(calls, key=None, cookie=None):
        location = f"{running_server.url}/soap" + (f"?authkey={key}" if key else "")
        return php_calls(calls, wsdl=running_server.wsdl_url, location=location, cookie=cookie)

    account_scenario(run, running_server.admin_key, "php-wsdl.example.com")


def test_php_non_wsdl_mode_account_scenario(running_server, php):
    """The same scenario without a WSDL: the response's xsi:types give PHP real booleans and arrays."""
    def run(calls, key=None, cookie=None):
        location = f"{running_server.url}/soap" + (f"?authkey={key}" if key else "")
        return php_calls(calls, location=location, cookie=cookie)

    account_scenario(run, running_server.admin_key, "php-plain.example.com")


def test_php_fault_is_a_soapfault(running_server, php):
    """A call that fails (unknown site) arrives as a SoapFault with the api.md code and message."""
    out = php_calls([["admin_delete_site", ["absent.example.com"]]], wsdl=running_server.wsdl_url,
                    location=running_server.soap_url)
    assert out[0]["fault"] == "SOAP-ENV:Client.NotFound" and "absent.example.com" in out[0]["message"]


def test_php_wsdl_is_served_with_the_callers_location(running_server, php):
    """The served WSDL names the URL the client used, so PHP calls the right server without a location."""
    out = php_calls([["scope_get", ["cp.api"]]], wsdl=running_server.wsdl_url, location=running_server.soap_url)
    assert out == [{"ok": True}]
