"""The cpcmd socket gate in process: JSON lines, peer-uid authentication, -d/-u, bad input.

The protocol runs over a StringTransport on a task.Clock with the real GateKeeper; the peer's
uid comes from a real UNIX socket pair.  Accounts are the middleware tests' fake plus the two
look-ups this gate uses; tests/e2e/test_cpcmd_*.py run the real server."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from apiserver.context import Identity
from apiserver.errors import AuthenticationFailed, NotFound
from apiserver.module import Module, Role, export
from apiserver.transport.cli_socket import CliFactory, listen_cli_socket, peer_uid, remove_stale_socket
from apiserver.transport.login_origin import login_address
from tests.middleware.support import ADMIN, SITE_ADMIN, FakeAccounts, Node

USER = Identity(role=Role.USER, user_id=3, username="bob", site_id=1, site="example.com")
BOB_UID = 5001  # bob's system uid


class LocalAccounts(FakeAccounts):
    """The fake accounts plus root-by-uid and the -d/-u look-up."""

    def authenticate(self, credentials, gate, address):
        if credentials.peer_uid is not None:
            identity = self.identity_for_uid(credentials.peer_uid)
            return defer.succeed(identity) if identity else defer.fail(AuthenticationFailed("uid"))
        return super().authenticate(credentials, gate, address)

    def identity_for_uid(self, uid):
        return {0: ADMIN, BOB_UID: USER}.get(uid)

    def identity_for(self, site, user):
        found = {("example.com", None): SITE_ADMIN, ("example.com", "bob"): USER}.get((site, user))
        if found is None:
            raise NotFound(f"no site {site!r}" if user is None else f"no user {user!r} in {site!r}")
        return found


class Probe(Module):
    """What the gate passed on."""

    name = "probe"

    @export(Role.ALL, blocking=False)
    def whoami(self, ctx) -> str:
        """Caller, impersonator and gate."""
        by = f" (by {ctx.identity.impersonator.describe()})" if ctx.identity.impersonator else ""
        return f"{ctx.identity.describe()}{by} via {ctx.gate.value}"

    @export(Role.ALL, blocking=False)
    def pair(self, ctx, a: str, b: int = 0) -> dict:
        """A and B in a hash."""
        return {"a": a, "b": b}

    @export(Role.ADMIN, blocking=False)
    def admin_only(self, ctx) -> bool:
        """True."""
        return True


class UidTransport(StringTransport):
    """A StringTransport whose handle is a real UNIX socket, so SO_PEERCRED reads a real uid."""

    def __init__(self, handle):
        super().__init__()
        self.handle = handle

    def getHandle(self):
        return self.handle


@pytest.fixture
def factory():
    """The socket's factory over the Probe module, the real GateKeeper and local accounts."""
    node = Node(task.Clock())
    node.accounts = LocalAccounts()
    registry = node.serve(Probe)
    return CliFactory(node.config, node.gatekeeper(), registry, node.accounts, node.run_blocking, node.fire)


@pytest.fixture
def connect(factory):
    """``connect(uid=None)``: a CliProtocol connection; ``uid`` overrides the peer's real uid."""
    pairs = []

    def make(uid=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pairs.append((ours, theirs))
        proto = factory.buildProtocol(None)
        transport = UidTransport(ours)
        proto.makeConnection(transport)
        if uid is not None:
            proto._uid = uid
        return Connection(proto, transport)

    yield make
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


class Connection:
    def __init__(self, proto, transport):
        self.proto, self.transport = proto, transport

    def send(self, raw: bytes) -> list:
        self.transport.clear()
        self.proto.dataReceived(raw)
        return [json.loads(line) for line in self.transport.value().splitlines()]

    def call(self, **request) -> dict:
        (answer,) = self.send(json.dumps(request).encode() + b"\n")
        return answer


def test_peer_uid_reads_the_real_uid():
    """SO_PEERCRED on a socket pair gives this process's uid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert peer_uid(ours) == os.getuid()


def test_peer_uid_of_a_non_unix_socket_is_none():
    """A socket without peer credentials gives None, not an exception."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert peer_uid(sock) is None


def test_root_calls_as_appliance_administrator_through_gate_cli(connect):
    """The server's own uid (root here) is the appliance administrator on gate CLI."""
    conn = connect()
    assert conn.call(function="probe:whoami") == {"result": "appliance admin via CLI"}


def test_arguments_positional_and_named_and_every_spelling(connect):
    """args and kwargs bind like any call; cpcmd and API spellings both work."""
    conn = connect()
    assert conn.call(function="probe:pair", args=["x"], kwargs={"b": 2}) == {"result": {"a": "x", "b": 2}}
    assert conn.call(function="probe_pair", args=["y", "5"]) == {"result": {"a": "y", "b": 5}}


def test_domain_and_user_act_as_that_identity(connect):
    """site/user switch to the site administrator or user, remembering who hijacked."""
    conn = connect()
    assert conn.call(function="probe:whoami", site="example.com") == {
        "result": "site admin@example.com (by appliance admin) via CLI"}
    assert conn.call(function="probe:whoami", site="example.com", user="bob") == {
        "result": "user bob@example.com (by appliance admin) via CLI"}
    assert conn.call(function="probe:admin_only", site="example.com")["fault"]["code"] == "Client.Denied"


def test_unknown_site_is_not_found(connect):
    """-d with a site that does not exist is Client.NotFound naming it."""
    answer = connect().call(function="probe:whoami", site="nope.example")
    assert answer == {"fault": {"code": "Client.NotFound", "message": "no site 'nope.example'"}}


def test_other_uids_are_refused(connect):
    """A peer that is neither root, the server's user nor a site account's uid gets Client.Denied naming its uid."""
    answer = connect(uid=4242).call(function="probe:whoami")
    assert answer["fault"]["code"] == "Client.Denied"
    assert "uid 4242 is neither root nor" in answer["fault"]["message"]
    assert "--url URL --key KEY" in answer["fault"]["message"]


def test_a_site_accounts_uid_calls_as_that_account(connect):
    """A site user's system uid calls as that user at gate CLI, from the address its login came from."""
    conn = connect(uid=BOB_UID)
    assert conn.call(function="probe:whoami") == {"result": "user bob@example.com via CLI"}
    assert conn.proto._address == login_address(os.getpid())  # this test run's own login (loopback on a console)
    assert conn.call(function="probe:admin_only")["fault"]["code"] == "Client.Denied"
    assert conn.call(function="probe:whoami", site="example.com")["fault"]["code"] == "Client.Denied"


def test_a_site_accounts_call_meets_its_ip_restrictions(factory, connect):
    """bob restricted to 198.51.100.0/24: a login from 192.0.2.7 is refused, one from 198.51.100.9 admitted."""
    factory.directory.restrictions[USER.user_id] = [("198.51.100.0/24", None)]
    refused = connect(uid=BOB_UID)
    refused.proto._address = "192.0.2.7"
    assert refused.call(function="probe:whoami")["fault"]["code"] == "Client.Denied"
    admitted = connect(uid=BOB_UID)
    admitted.proto._address = "198.51.100.9"
    assert admitted.call(function="probe:whoami") == {"result": "user bob@example.com via CLI"}


def test_a_caller_that_is_gone_is_refused(connect):
    """When the connecting process no longer exists, its login cannot be placed: refused."""
    conn = connect(uid=BOB_UID)
    conn.proto._pid = 2 ** 22 + 1  # above pid_max's ceiling: no such process
    answer = conn.call(function="probe:whoami")
    assert answer["fault"]["code"] == "Client.Denied" and "has gone" in answer["fault"]["message"]


def test_uid_unknown_is_refused(connect):
    """When the peer's uid cannot be read, the call is refused."""
    conn = connect()
    conn.proto._uid = None
    assert conn.call(function="probe:whoami")["fault"]["code"] == "Client.Denied"


def test_unknown_function_suggests_names(connect):
    """An unknown command is Client.UnknownMethod with the closest names, spelt as the caller spelt it."""
    answer = connect().call(function="probe:whoam")
    assert answer["fault"]["code"] == "Client.UnknownMethod"
    assert "did you mean probe:whoami" in answer["fault"]["message"]


def test_wrong_argument_count_names_the_signature(connect):
    """Too many arguments is Client.InvalidArgument with the signature."""
    answer = connect().call(function="probe:pair", args=["a", 1, 2])
    assert answer["fault"]["code"] == "Client.InvalidArgument"
    assert "probe:pair(string a, int b = 0): map" in answer["fault"]["message"]


@pytest.mark.parametrize("line, fragment", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"args": []}', "no \\\"function\\\""),
    (b'{"function": "probe:whoami", "args": "x"}', "\\\"args\\\" must be a JSON array"),
    (b'{"function": "probe:whoami", "kwargs": []}', "\\\"kwargs\\\" must be a JSON object"),
    (b'{"function": "probe:whoami", "site": 5}', "\\\"site\\\" must be a string"),
    (b'{"function": "probe:whoami", "extra": 1}', "unknown request field(s): extra"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000, "too deeply"),
])
def test_bad_lines_get_a_fault_and_the_connection_survives(connect, line, fragment):
    """Malformed requests answer Client.Malformed; the next request on the connection works."""
    conn = connect()
    (answer,) = conn.send(line + b"\n")
    assert answer["fault"]["code"] == "Client.Malformed"
    assert fragment.replace("\\\"", '"') in answer["fault"]["message"]
    assert conn.call(function="probe:whoami") == {"result": "appliance admin via CLI"}


def test_pipelined_requests_are_answered_in_order(connect):
    """Several lines in one write get one answer each, in order."""
    conn = connect()
    lines = b"".join(json.dumps({"function": "probe:pair", "args": [str(i)]}).encode() + b"\n" for i in range(5))
    answers = conn.send(lines + b"\n")  # an empty line is ignored
    assert [a["result"]["a"] for a in answers] == ["0", "1", "2", "3", "4"]


def test_overlong_line_is_refused_and_the_connection_closed(factory, connect):
    """A line past [soap] max_body_size gets a fault, then the connection closes."""
    conn = connect()
    answers = conn.send(b"x" * (factory.settings.get("soap", "max_body_size") + 10))
    assert answers[0]["fault"]["code"] == "Client.Malformed"
    assert conn.transport.disconnecting


def test_listen_creates_the_socket_and_replaces_a_stale_one(tmp_path, factory):
    """The socket is 0666 (the peer's uid decides); a stale socket file is replaced; a live one refused."""
    from twisted.internet import reactor  # binding only; the reactor is not run

    path = str(tmp_path / "state" / "apiserver.sock")
    os.makedirs(os.path.dirname(path), mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    port = listen_cli_socket(factory, reactor, path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with pytest.raises(OSError, match="another server is listening"):
            remove_stale_socket(path)
    finally:
        port.stopListening()


def test_directory_is_created_owner_only(tmp_path, factory):
    """A missing state directory is created 0700."""
    from twisted.internet import reactor

    path = str(tmp_path / "new" / "apiserver.sock")
    port = listen_cli_socket(factory, reactor, path)
    try:
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    finally:
        port.stopListening()


def test_a_regular_file_in_the_way_is_not_removed(tmp_path):
    """A non-socket at the socket path is an error, never deleted."""
    path = tmp_path / "apiserver.sock"
    path.write_text("important")
    with pytest.raises(OSError, match="not a socket"):
        remove_stale_socket(str(path))
    assert path.read_text() == "important"

