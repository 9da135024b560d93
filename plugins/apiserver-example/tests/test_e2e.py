"""End to end: the installed plugin's module is in the served WSDLs and callable over SOAP and XML-RPC."""

import time
import xmlrpc.client

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
EXAMPLE_OPERATIONS = {"example_echo", "example_add", "example_is_even", "example_whoami_role", "example_key_stats"}


def soap_service(server, authkey=None, cookies=None):
    """A zeep service from the document/literal WSDL, posting to /soap with a key or a session cookie."""
    session = requests.Session()
    session.cookies.update(cookies or {})
    client = zeep.Client(f"{server.url}/apnscp.wsdl?style=document", transport=Transport(session=session))
    binding = next(iter(client.wsdl.bindings))
    address = f"{server.url}/soap" + (f"?authkey={authkey}" if authkey else "")
    return client.create_service(binding, address)


@pytest.fixture(scope="module")
def admin(running_server):
    """The appliance administrator's SOAP service."""
    return soap_service(running_server, authkey=running_server.admin_key)


@pytest.mark.parametrize("query", ["", "?style=document"])
def test_served_wsdl_lists_the_example_operations(running_server, query):
    """Both WSDL styles declare an operation for every exported example function."""
    answer = requests.get(f"{running_server.url}/apnscp.wsdl{query}", timeout=30)
    assert answer.status_code == 200
    document = etree.fromstring(answer.content)
    operations = {op.get("name") for op in document.iterfind(f"{{{WSDL_NS}}}portType/{{{WSDL_NS}}}operation")}
    assert EXAMPLE_OPERATIONS <= operations


def test_example_functions_answer_over_soap(admin):
    """Strings, optional ints, lists, ints and booleans make the round trip through zeep."""
    assert admin.example_echo(text="hi", times=3) == ["hi", "hi", "hi"]
    assert admin.example_echo(text="once") == ["once"]
    assert admin.example_add(a=40, b=2) == 42
    assert admin.example_is_even(number=7) is False


def test_bad_input_is_a_client_fault(admin):
    """A refused argument comes back as a Client.InvalidArgument SOAP fault with the reason."""
    with pytest.raises(zeep.exceptions.Fault) as caught:
        admin.example_echo(text="x", times=1000)
    assert "Client.InvalidArgument" in caught.value.code
    assert "between 0 and 100" in caught.value.message


def test_declared_role_is_enforced_over_soap(admin):
    """The appliance administrator may not call a site-administrator function."""
    with pytest.raises(zeep.exceptions.Fault) as caught:
        admin.example_whoami_role()
    assert "Client.Denied" in caught.value.code


def test_site_admin_calls_its_function_through_a_hijacked_session(running_server, admin):
    """After admin_hijack, the esprit_id session acts as the site's administrator."""
    options = {"siteinfo.email": "owner@plugin-example.test", "auth.tpasswd": "correct horse battery"}
    admin.admin_add_site(domain="plugin-example.test", admin="owner",
                         opts={"item": [{"key": key, "value": zeep.xsd.AnyObject(zeep.xsd.String(), value)}
                                        for key, value in options.items()]})
    session_id = admin.admin_hijack(site="plugin-example.test")
    site_admin = soap_service(running_server, cookies={"esprit_id": session_id})
    assert site_admin.example_whoami_role() == "site owner@plugin-example.test"


def test_event_hook_counts_keys_created_over_the_api(admin):
    """Creating an API key fires apiserver_api_key_created, which the plugin counts in its state store."""
    before = admin.example_key_stats().created
    admin.auth_create_api_key(comment="plugin e2e")
    deadline = time.monotonic() + 10
    stats = admin.example_key_stats()
    while stats.created == before and time.monotonic() < deadline:  # the hook writes on the pool, after the answer
        time.sleep(0.05)
        stats = admin.example_key_stats()
    assert stats.created == before + 1
    assert stats.last_owner == "appliance admin"


def test_example_module_is_callable_over_xmlrpc(running_server):
    """The same module answers XML-RPC in both name spellings without the plugin doing anything."""
    url = f"{running_server.url}/xmlrpc?authkey={running_server.admin_key}"
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    assert proxy.example.add(2, 3) == 5
    assert proxy.example_echo("a", 2) == ["a", "a"]


def test_plugin_scope_is_set_at_run_time(running_server, admin):
    """scope:set example.max-times over the API changes what example_echo accepts at once."""
    url = f"{running_server.url}/xmlrpc?authkey={running_server.admin_key}"
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    assert "example.max-times" in proxy.scope.list("example.*")
    proxy.scope.set("example.max-times", 2)
    try:
        assert proxy.scope.get("example.max-times") == 2
        with pytest.raises(zeep.exceptions.Fault, match="between 0 and 2"):
            admin.example_echo(text="x", times=3)
    finally:
        proxy.scope.set("example.max-times", 100)


def test_server_log_names_the_plugin_and_its_version(running_server):
    """Start-up logs each installed plugin with its distribution and version."""
    assert "plugin example loaded: apiserver-example 0.1.0 (apiserver_example)" in running_server.log()
