"""zeep end to end against the document/literal WSDL (/apnscp.wsdl?style=document)."""

from __future__ import annotations

import pytest
import zeep

from tests.e2e.clients.soap_clients import account_scenario, zeep_map


def zeep_runner(running_server):
    """``run(calls, key, cookie)`` over zeep, in the shape account_scenario expects."""
    client = zeep.Client(f"{running_server.url}/apnscp.wsdl?style=document")

    def plain(value):
        if isinstance(value, list):
            return [plain(v) for v in value]
        if hasattr(value, "__values__"):
            return {k: plain(v) for k, v in value.__values__.items()}
        return value

    def run(calls, key=None, cookie=None):
        client.transport.session.cookies.clear()
        if cookie:
            client.transport.session.cookies.set("esprit_id", cookie)
        address = f"{running_server.url}/soap" + (f"?authkey={key}" if key else "")
        service = client.create_service("{urn:net.apnscp.soap}apnscp", address)
        out = []
        for operation, args in calls:
            # a plain dict is a data-keyed map (tns:Map); one already in zeep's shape goes as it is
            args = [zeep_map(a) if isinstance(a, dict) and "item" not in a else a for a in args]
            try:
                out.append({"ok": plain(getattr(service, operation)(*args))})
            except zeep.exceptions.Fault as fault:
                out.append({"fault": fault.code, "message": fault.message})
        return out

    return run


def test_zeep_account_scenario(running_server):
    """Sites, users, keys, hijack, IP restrictions and a Fault for a bad key, document style."""
    # zeep returns None for an empty document/literal array (a wrapper without items).
    account_scenario(zeep_runner(running_server), running_server.admin_key, "zeep.example.com",
                     empty_array_is_none=True)


def test_zeep_fault(running_server):
    """A failing call raises zeep's Fault with the api.md code and message."""
    client = zeep.Client(f"{running_server.url}/apnscp.wsdl?style=document")
    service = client.create_service("{urn:net.apnscp.soap}apnscp", running_server.soap_url)
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.admin_delete_site("absent.example.com")
    assert info.value.code == "SOAP-ENV:Client.NotFound" and "absent.example.com" in info.value.message
