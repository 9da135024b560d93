"""XmlRpcResource driven in process through the real ApiSite and HTTP parser, with the real
GateKeeper (toggle, Anvil, IP restrictions) on a task.Clock.  Accounts are the middleware
tests' fake (one good key, one live session); e2e tests cover the real accounts."""

from __future__ import annotations

import xmlrpc.client
from typing import Any, Optional

import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web import resource

from apiserver.context import Gate
from apiserver.errors import NotFound
from apiserver.module import Module, Role, export
from apiserver.transport.http import ApiSite
from apiserver.transport.xmlrpc import XmlRpcResource
from tests.middleware.support import GOOD_KEY, Node

BAD_KEY = "b" * 64


class Probe(Module):
    """Functions that show what the gate passed on."""

    name = "probe"

    @export(Role.ALL, blocking=False)
    def whoami(self, ctx) -> str:
        """Role, name and gate of the caller."""
        return f"{ctx.identity.describe()} via {ctx.gate.value} from {ctx.client_address}"

    @export(Role.ALL, blocking=False)
    def add(self, ctx, a: int, b: int = 1) -> int:
        """A plus B."""
        return a + b

    @export(Role.ALL, blocking=False)
    def echo(self, ctx, value: Any = None) -> Any:
        """VALUE back."""
        return value

    @export(Role.ALL)
    def blocking_echo(self, ctx, text: str) -> str:
        """TEXT back, from the blocking pool."""
        return text

    @export(Role.ADMIN, blocking=False)
    def admin_only(self, ctx) -> bool:
        """True, for the appliance administrator."""
        return True

    @export(Role.ALL, blocking=False)
    def missing(self, ctx, name: str) -> str:
        """Always NotFound."""
        raise NotFound(f"no such thing {name!r}")

    @export(Role.ALL, blocking=False)
    def crash(self, ctx) -> str:
        """A bug whose message must not leak."""
        raise RuntimeError("/etc/secret-path leaked")

    pending: Optional[defer.Deferred] = None

    @export(Role.ALL)
    async def wait(self, ctx) -> str:
        """Waits for the test to fire ``pending``."""
        return await self.pending


class Server:
    """The site, a clock, and a way to send one HTTP request and read the answer."""

    def __init__(self, overrides: Optional[dict] = None):
        self.clock = task.Clock()
        self.node = Node(self.clock, overrides)
        registry = self.node.serve(Probe)
        self.probe = registry.modules["probe"]
        root = resource.Resource()
        root.putChild(b"xmlrpc", XmlRpcResource(self.node.gatekeeper(), registry))
        self.site = ApiSite(root, self.node.config, reactor=self.clock)

    def connect(self, body: bytes, path: str = "/xmlrpc?authkey=" + GOOD_KEY, method: str = "POST",
                headers: Optional[dict] = None):
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        channel = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 2082))
        channel.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: text/xml",
                 f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return channel, transport

    def post(self, body: bytes, **kwargs) -> "Answer":
        _channel, transport = self.connect(body, **kwargs)
        return Answer(transport.value())

    def call(self, method: str, *params, **kwargs) -> Any:
        """Call over XML-RPC and return the value (raising xmlrpc.client.Fault like a client)."""
        answer = self.post(xmlrpc.client.dumps(params, method, allow_none=True).encode(), **kwargs)
        assert answer.status == 200, answer.raw
        return answer.value()


class Answer:
    def __init__(self, raw: bytes):
        assert raw, "no answer was written"
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def value(self):
        (result,), _ = xmlrpc.client.loads(self.body, use_builtin_types=True)
        return result

    def fault(self) -> xmlrpc.client.Fault:
        with pytest.raises(xmlrpc.client.Fault) as info:
            self.value()
        return info.value


@pytest.fixture
def server():
    """A server on the default config."""
    return Server()


def test_call_with_key_runs_as_that_identity_through_gate_soap(server):
    """An authenticated call reaches the function as the key's identity, gate SOAP."""
    assert server.call("probe.whoami") == "appliance admin via SOAP from 127.0.0.1"
    assert server.call("probe_add", 2, 3) == 5
    assert server.call("probe.add", 2) == 3
    assert server.call("probe.blocking_echo", "x") == "x"


def test_both_name_spellings_and_all_types_round_trip(server):
    """probe_echo and probe.echo return every XML-RPC type unchanged."""
    import datetime

    value = [1, "é<&>", True, 2.5, None, {"a": [1, {"b": None}]}, datetime.datetime(2026, 1, 2, 3, 4, 5), b"\xff"]
    assert server.call("probe.echo", value) == value
    assert server.call("probe_echo", "") == ""
    assert server.call("probe_add", 2 ** 31 - 1, 2 ** 31 - 1) == 2 ** 32 - 2  # answered as <i8>


def test_response_headers(server):
    """Responses are text/xml with a content length."""
    answer = server.post(xmlrpc.client.dumps((1,), "probe.add").encode())
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    assert int(answer.headers["content-length"]) == len(answer.body)


def test_session_cookie_authenticates(server):
    """The esprit_id cookie works instead of authkey."""
    result = server.call("probe.whoami", path="/xmlrpc", headers={"Cookie": "esprit_id=live-session"})
    assert result.startswith("site admin@example.com via SOAP")


def test_bad_key_is_denied_and_counted_by_anvil(server):
    """A wrong key gets Client.Denied (403) and Anvil records a SOAP-gate failure for the address."""
    fault = server.post(xmlrpc.client.dumps((), "probe.whoami").encode(), path="/xmlrpc?authkey=" + BAD_KEY).fault()
    assert fault.faultCode == 403
    assert fault.faultString.startswith("Client.Denied: authentication failed")
    assert server.node.recorder.failed == [("127.0.0.1", Gate.SOAP, "key")]


def test_missing_credentials_are_denied(server):
    """No key and no cookie is Client.Denied, not a crash."""
    fault = server.post(xmlrpc.client.dumps((), "probe.whoami").encode(), path="/xmlrpc").fault()
    assert (fault.faultCode, fault.faultString.split(":")[0]) == (403, "Client.Denied")


def test_role_check_applies(server):
    """A site administrator (session) may not call an appliance-only function."""
    fault = server.post(xmlrpc.client.dumps((), "probe.admin_only").encode(), path="/xmlrpc",
                        headers={"Cookie": "esprit_id=live-session"}).fault()
    assert fault.faultCode == 403
    assert "may be called by: appliance" in fault.faultString


def test_unknown_method_suggests_names_before_authenticating(server):
    """An unknown name is -32601 with the closest names (dotted, as it was called), and costs no Anvil failure."""
    fault = server.post(xmlrpc.client.dumps((), "probe.whoamii").encode(), path="/xmlrpc?authkey=" + BAD_KEY).fault()
    assert fault.faultCode == -32601
    assert fault.faultString.startswith("Client.UnknownMethod: unknown function 'probe.whoamii'")
    assert "did you mean probe.whoami" in fault.faultString
    assert server.node.recorder.failed == []


def test_wrong_argument_count_names_the_signature(server):
    """Too many or too few arguments is -32602 naming the signature."""
    fault = server.post(xmlrpc.client.dumps((1, 2, 3), "probe.add").encode()).fault()
    assert fault.faultCode == -32602
    assert "probe:add(int a, int b = 1): int" in fault.faultString
    fault = server.post(xmlrpc.client.dumps((), "probe.add").encode()).fault()
    assert "missing argument 'a'" in fault.faultString


def test_bad_argument_type_is_invalid_argument(server):
    """A value of the wrong type is -32602 naming the argument."""
    fault = server.post(xmlrpc.client.dumps(("x",), "probe.add").encode()).fault()
    assert fault.faultCode == -32602
    assert "argument 'a'" in fault.faultString


def test_function_errors_become_faults_and_internal_errors_do_not_leak(server):
    """An ApiError keeps its code and message; a crash is Server.Internal without details."""
    fault = server.post(xmlrpc.client.dumps(("x",), "probe.missing").encode()).fault()
    assert (fault.faultCode, fault.faultString) == (404, "Client.NotFound: no such thing 'x'")
    fault = server.post(xmlrpc.client.dumps((), "probe.crash").encode()).fault()
    assert fault.faultCode == 500
    assert fault.faultString.startswith("Server.Internal:")
    assert "secret-path" not in fault.faultString


@pytest.mark.parametrize("body, fragment", [
    (b"<methodCall><methodName>probe.add", "not well-formed XML"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><methodCall><methodName>&a;</methodName></methodCall>', "DOCTYPE"),
    (b"", "empty request body"),
])
def test_malformed_body_is_a_parse_fault(server, body, fragment):
    """Broken XML is faultCode -32700 (HTTP 200, as XML-RPC clients expect) with a reason."""
    answer = server.post(body)
    assert answer.status == 200
    fault = answer.fault()
    assert fault.faultCode == -32700 and fragment in fault.faultString


def test_get_is_not_allowed(server):
    """Only POST is served."""
    answer = server.post(b"", method="GET")
    assert answer.status == 405
    assert answer.headers["allow"] == "POST"
    assert b"POST /xmlrpc?authkey=KEY" in answer.body


def test_body_over_the_limit_is_refused_before_parsing():
    """The shared request class answers 413 past [soap] max_body_size."""
    server = Server({"soap": {"max_body_size": "2048"}})
    answer = server.post(xmlrpc.client.dumps(("x" * 4096,), "probe.echo").encode())
    assert answer.status == 413


def test_disabled_api_answers_403_with_the_reason():
    """[soap] enabled=false: every XML-RPC request is refused with HTTP 403 and a reason."""
    server = Server({"soap": {"enabled": "false"}})
    answer = server.post(xmlrpc.client.dumps((), "probe.whoami").encode())
    assert answer.status == 403
    assert b"disabled" in answer.body


def test_throttled_address_gets_429_fault_even_with_the_right_key():
    """After [anvil] limit failures, even a good key gets Client.Throttled with Retry-After."""
    server = Server({"anvil": {"limit": "3", "min_attempts": "5", "whitelist": ""}})
    body = xmlrpc.client.dumps((), "probe.whoami").encode()
    for _ in range(3):
        server.post(body, path="/xmlrpc?authkey=" + BAD_KEY)
    answer = server.post(body)
    fault = answer.fault()
    assert fault.faultCode == 429
    assert fault.faultString.startswith("Client.Throttled:")
    assert int(answer.headers["retry-after"]) > 0


def test_introspection(server):
    """system.listMethods lists both spellings; methodSignature and methodHelp describe a function."""
    methods = server.call("system.listMethods", path="/xmlrpc")
    assert {"probe_add", "probe.add", "system.listMethods", "system.multicall"} <= set(methods)
    assert server.call("system.methodSignature", "probe.add") == [["int", "int"], ["int", "int", "int"]]
    assert server.call("system.methodSignature", "probe_echo") == [["undef"], ["undef", "undef"]]
    help_text = server.call("system.methodHelp", "probe.add")
    assert help_text.startswith("probe:add(int a, int b = 1): int") and "A plus B." in help_text
    fault = server.post(xmlrpc.client.dumps(("nope.nope",), "system.methodHelp").encode()).fault()
    assert fault.faultCode == -32601


def test_multicall_runs_each_call_and_reports_faults_in_place(server):
    """system.multicall returns [result] or a fault struct per call, in order."""
    calls = [{"methodName": "probe.add", "params": [1, 2]},
             {"methodName": "probe.missing", "params": ["x"]},
             {"methodName": "system.methodSignature", "params": ["probe.admin_only"]},
             {"methodName": "system.multicall", "params": [[]]},
             "garbage"]
    results = server.call("system.multicall", calls)
    assert results[0] == [3]
    assert results[1] == {"faultCode": 404, "faultString": "Client.NotFound: no such thing 'x'"}
    assert results[2] == [[["boolean"]]]
    assert results[3]["faultCode"] == -32602 and results[4]["faultCode"] == -32602


def test_multicall_needs_authentication(server):
    """system.multicall with a bad key is refused as a whole."""
    body = xmlrpc.client.dumps(([],), "system.multicall").encode()
    fault = server.post(body, path="/xmlrpc?authkey=" + BAD_KEY).fault()
    assert fault.faultCode == 403


def test_client_gone_before_the_answer_is_not_written_to(server):
    """When the client disconnects during a call, the late result is dropped quietly."""
    server.probe.pending = defer.Deferred()
    channel, transport = server.connect(xmlrpc.client.dumps((), "probe.wait").encode())
    assert transport.value() == b""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    channel.connectionLost(Failure(ConnectionDone()))
    server.probe.pending.callback("late")
    assert transport.value() == b""


def test_async_result_is_written_when_it_arrives(server):
    """A call that waits answers once its Deferred fires."""
    server.probe.pending = defer.Deferred()
    _channel, transport = server.connect(xmlrpc.client.dumps((), "probe.wait").encode())
    assert transport.value() == b""
    server.probe.pending.callback("done")
    assert Answer(transport.value()).value() == "done"


@pytest.mark.parametrize("query", [f"authkey={BAD_KEY}&authkey={GOOD_KEY}", f"authkey={GOOD_KEY}&authkey={BAD_KEY}",
                                   f"authkey={GOOD_KEY}&authkey={GOOD_KEY}"])
def test_repeated_authkey_is_denied_whatever_the_order(server, query):
    """Two authkey parameters are refused: which one counts would otherwise depend on the order."""
    fault = server.post(xmlrpc.client.dumps((), "probe.whoami").encode(), path="/xmlrpc?" + query).fault()
    assert fault.faultCode == 403 and "more than once" in fault.faultString


def test_failure_while_answering_still_gets_a_fault(server, monkeypatch):
    """A bug in turning an error into a fault ends in the last-resort fault, not a request left hanging."""
    from apiserver.transport import xmlrpc as xmlrpc_transport

    real_fault_for = xmlrpc_transport.fault_for
    calls = []

    def broken_twice(error):
        calls.append(error)
        if len(calls) <= 2:  # both errbacks of the call fail
            raise RuntimeError("bug in the fault encoder")
        return real_fault_for(error)

    monkeypatch.setattr(xmlrpc_transport, "fault_for", broken_twice)
    fault = server.post(xmlrpc.client.dumps((), "probe.crash").encode()).fault()
    assert fault.faultCode == 500 and "bug" not in fault.faultString
