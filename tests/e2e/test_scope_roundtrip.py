"""Every built-in scope set and read back over SOAP (zeep, PHP SoapClient) and cpcmd against a running server."""

import json

import pytest
import zeep

from tests.e2e.clients.soap_clients import php_calls
from tests.scopes.clients import CpcmdFailed, cpcmd, scope_changes, zeep_service

MASKED_KEY = "********6789"

#: scope, selector arguments, a value set over SOAP and read back, a value set by cpcmd (its spelling)
#: and read back over SOAP
ROUND_TRIPS = [
    ("cp.config", ["anvil", "limit"], 25, 25, "30", 30),
    ("cp.debug", [], True, True, "false", False),
    ("cp.bootstrapper", ["has_low_memory"], True, True, "false", False),
    ("cp.bootstrapper", ["postfix_insecure_ssl"], True, True, "false", False),
    ("apache.dav", [], False, False, "true", True),  # [dav] enabled, true by default
    ("apache.insecure-ssl", [], True, True, "false", False),
    ("mail.insecure-ssl", [], True, True, "false", False),
    ("auth.geoip-key", [], "[id:1234,key:key-name-0123456789]", {"id": 1234, "key": MASKED_KEY},
     "[id:99,key:other-key-9876]", {"id": 99, "key": "********9876"}),
]


def as_plain(value):
    """zeep answers hashes as lists of {key, value}; turn them back into dicts."""
    value = zeep.helpers.serialize_object(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) and set(v) == {"key", "value"} for v in value):
        return {v["key"]: as_plain(v["value"]) for v in value}
    return value


@pytest.mark.parametrize("scope, selectors, soap_value, soap_expected, cli_word, cli_expected", ROUND_TRIPS,
                         ids=[f"{r[0]}{'-' + r[1][0] if r[1] else ''}" for r in ROUND_TRIPS])
def test_round_trip_over_soap_and_cpcmd(running_server, scope, selectors, soap_value, soap_expected,
                                        cli_word, cli_expected):
    """scope_set over SOAP is seen by cpcmd scope:get; cpcmd scope:set is seen by SOAP scope_get; both audited."""
    soap = zeep_service(running_server)
    before = len(scope_changes(running_server))
    assert soap.scope_set(scope, *selectors, soap_value) is True
    assert cpcmd(running_server, "scope:get", scope, *selectors) == soap_expected
    assert cpcmd(running_server, "scope:set", scope, *selectors, cli_word) is True
    assert as_plain(soap.scope_get(scope, *selectors)) == cli_expected
    label = " ".join([scope, *selectors])
    rows = scope_changes(running_server)[before:]
    assert [(r[0], r[1]) for r in rows] == [(label, "appliance admin")] * 2
    assert json.loads(rows[1][3]) == cli_expected
    assert "key-name-0123456789" not in repr(rows)


def test_mail_insecure_ssl_sets_the_three_bootstrapper_variables(running_server):
    """The seed: mail.insecure-ssl is the same as setting the three mail Bootstrapper variables."""
    cpcmd(running_server, "scope:set", "mail.insecure-ssl", "true")
    values = cpcmd(running_server, "scope:get", "cp.bootstrapper")
    assert [values[v] for v in ("postfix_insecure_ssl", "dovecot_insecure_ssl", "haproxy_insecure_ssl")] == [True] * 3
    cpcmd(running_server, "scope:set", "mail.insecure-ssl", "false")


def test_php_soapclient_positional_variadic_calls(running_server, php):
    """PHP SoapClient calls scope_set('cp.config', 'frontend', 'https_only', true) and a hash value as ApisCP clients
    do."""
    calls = [
        ["scope_set", ["cp.config", "auth", "min_pw_length", 9]],
        ["scope_get", ["cp.config", "auth", "min_pw_length"]],
        ["scope_set", ["auth.geoip-key", {"id": 4321, "key": "php-key-abcdefgh"}]],
        ["scope_get", ["auth.geoip-key"]],
        ["scope_set", ["apache.dav", "maybe"]],
    ]
    for mode in ("wsdl", "nonwsdl"):
        wsdl = f"{running_server.url}/apnscp.wsdl" if mode == "wsdl" else None
        answers = php_calls(calls, location=running_server.soap_url, wsdl=wsdl)
        assert answers[0] == {"ok": True}, answers
        assert answers[1] == {"ok": 9}
        assert answers[2] == {"ok": True}
        assert answers[3] == {"ok": {"id": 4321, "key": "********efgh"}}
        assert answers[4]["fault"].endswith("Client.InvalidArgument")
        assert "apache.dav: expected boolean" in answers[4]["message"]


def test_list_and_info(running_server):
    """scope_list takes a glob; scope_info describes type, default, help and allowed values."""
    soap = zeep_service(running_server)
    assert soap.scope_list("cp.*") == ["cp.api", "cp.bootstrapper", "cp.config", "cp.debug"]
    builtin = {"apache.dav", "apache.insecure-ssl", "auth.geoip-key", "cp.api", "cp.bootstrapper", "cp.config",
               "cp.debug", "mail.insecure-ssl"}
    assert builtin <= set(cpcmd(running_server, "scope:list"))  # installed plugins may add more
    info = soap.scope_info("apache.dav")
    # zeep names array items
    assert (info.type, info.default, info.allowed["string"]) == ("bool", True, ["true", "false"])
    assert "WebDAV" in info.help
    assert cpcmd(running_server, "scope:info", "cp.bootstrapper")["usage"] == "cp.bootstrapper VAR VALUE"


@pytest.mark.parametrize("words, reason", [
    (["cp.config", "anvil", "limit", "lots"], "[anvil] limit: expected a whole number, got 'lots'"),
    (["cp.config", "auth", "secret", "guess"], "cannot be changed by a scope"),
    (["cp.api", "perhaps"], "cp.api: expected boolean"),
    (["auth.geoip-key", "[id:abc,key:x]"], "auth.geoip-key id: expected int"),
    (["cp.bootstrapper", "has_low_memory"], "expected 2 value(s)"),
])
def test_bad_values_refused_with_reason(running_server, words, reason):
    """A bad value is Client.InvalidArgument naming the reason, over cpcmd and SOAP alike."""
    with pytest.raises(CpcmdFailed) as caught:
        cpcmd(running_server, "scope:set", *words)
    assert "Client.InvalidArgument" in caught.value.stderr and reason in caught.value.stderr
    with pytest.raises(zeep.exceptions.Fault) as fault:
        zeep_service(running_server).scope_set(*words)
    assert fault.value.code.endswith("Client.InvalidArgument") and reason in fault.value.message


def test_site_administrator_cannot_use_scopes(running_server):
    """Scopes are for the appliance administrator only."""
    cpcmd(running_server, "admin:add-site", "scopes.example.com", "siteadmin",
          "[siteinfo.email:s@example.com,auth.tpasswd:Passw0rd-long]")
    with pytest.raises(CpcmdFailed) as caught:
        cpcmd(running_server, "-d", "scopes.example.com", "scope:set", "apache.dav", "true")
    assert "Client.Denied" in caught.value.stderr


def test_remote_cpcmd_over_xmlrpc_and_https(running_server):
    """cpcmd --url https://... --key (XML-RPC over the HTTPS listener) sets and reads scopes like the local socket."""
    assert cpcmd(running_server, "scope:set", "cp.config", "frontend", "https_only", "false", remote=True) is True
    assert cpcmd(running_server, "scope:set", "auth.geoip-key", "[id:777,key:remote-key-abcd1234]", remote=True) is True
    assert cpcmd(running_server, "scope:get", "auth.geoip-key", remote=True) == {"id": 777, "key": "********1234"}
    assert cpcmd(running_server, "scope:get", "auth.geoip-key") == {"id": 777, "key": "********1234"}
