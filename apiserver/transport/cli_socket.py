"""The CLI gate: a local UNIX socket that ``cpcmd`` run as root talks to, without a key.

One JSON object per line each way::

    -> {"function": "auth:restrict-ip", "args": ["10.1.2.3", "UI"], "kwargs": {},
        "site": "domain.com", "user": null}
    <- {"result": true}
    <- {"fault": {"code": "Client.NotFound", "message": "..."}}

The server authenticates the peer by its uid, read from the kernel (``SO_PEERCRED``): root, or
the uid the server runs as, is the appliance administrator; a site account's system uid is that
account (the administrator or user of its site); any other uid is refused, saying so.  A site
account's calls go through the gate like any other: Anvil and its IP restrictions apply to the
address it logged in from, found from the kernel (:mod:`apiserver.transport.login_origin`: its
SSH session's client, loopback for a local login), never from what the caller sends or its
environment.  The socket is 0666 (the kernel, not the mode, says who calls): site users reach it
when its folder lets them (``[core] cli_socket`` outside the 0700 ``state_dir``).
``site``/``user`` make the call as that site's administrator or user (what ``cpcmd -d/-u``
does); only the appliance administrator may.  Requests on one connection are answered in
order; a bad line gets a fault and the connection stays open.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import json
import os
import socket
import stat
import struct
import time
from typing import Any, Optional

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from apiserver.context import AuthRequest, CallContext, Credentials, Gate
from apiserver.errors import ApiError, AuthenticationFailed, Denied, Malformed, ServerError
from apiserver.module import Role
from apiserver.transport.login_origin import login_address
from apiserver.transport.waitable import WaitableSet
from apiserver.types import to_plain

log = Logger(namespace="apiserver.transport.cli_socket")

#: The address a local caller has for Anvil and IP restrictions.
LOCAL_ADDRESS = "127.0.0.1"
ROOT_UID = 0

_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def peer_credentials(sock: socket.socket) -> tuple:
    """``(pid, uid)`` of the process that connected the other end of a UNIX socket; None for what is unknown."""
    try:
        pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except (OSError, AttributeError, struct.error):
        return None, None
    # -1 (uid 4294967295 as unsigned): the socket has no peer credentials
    return (pid if pid > 0 else None), (uid if uid >= 0 else None)


def peer_uid(sock: socket.socket) -> Optional[int]:
    """The uid of the process at the other end of a UNIX socket, or None if unknown."""
    return peer_credentials(sock)[1]


NOT_AN_ACCOUNT = ("uid {uid} is neither root nor the system user of a site's account on this server; "
                  "use cpcmd --url URL --key KEY")
CALLER_GONE = "the process that opened this connection has gone; its login cannot be placed"


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


def encode_line(message: dict) -> bytes:
    """One response line."""
    return json.dumps(message, default=_json_default, ensure_ascii=False).encode("utf-8")


def fault(error: ApiError) -> dict:
    return {"fault": {"code": error.code, "message": error.message}}


def _request_fields(line: bytes) -> tuple:
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"the request is not JSON: {exc}") from None
    except RecursionError:
        raise Malformed("the request nests arrays or objects too deeply") from None
    if not isinstance(request, dict):
        raise Malformed("the request must be a JSON object {function, args, kwargs, site, user}")
    unknown = set(request) - {"function", "args", "kwargs", "site", "user"}
    if unknown:
        raise Malformed(f"unknown request field(s): {', '.join(sorted(unknown))[:200]}")
    function = request.get("function")
    args = [] if request.get("args") is None else request["args"]
    kwargs = {} if request.get("kwargs") is None else request["kwargs"]
    site, user = request.get("site"), request.get("user")
    if not isinstance(function, str) or not function:
        raise Malformed("the request has no \"function\" (for example \"common:whoami\")")
    if not isinstance(args, list):
        raise Malformed("\"args\" must be a JSON array")
    if not isinstance(kwargs, dict):
        raise Malformed("\"kwargs\" must be a JSON object")
    for name, value in (("site", site), ("user", user)):
        if value is not None and not isinstance(value, str):
            raise Malformed(f"\"{name}\" must be a string or null")
    return function, args, kwargs, site or None, user or None


class CliProtocol(LineOnlyReceiver):
    """One cpcmd connection: each line a call, answered in order (what it needs: its factory's)."""

    delimiter = b"\n"

    def __init__(self, factory: "CliFactory"):
        self.factory = factory
        self.MAX_LENGTH = factory.settings.get("soap", "max_body_size")
        self._queue: defer.Deferred = defer.succeed(None)
        self._uid: Optional[int] = None
        self._pid: Optional[int] = None
        self._address: Optional[str] = None  # where a site account's caller logged in from, once known

    def connectionMade(self):
        self._pid, self._uid = peer_credentials(self.transport.getHandle())

    def lineReceived(self, line: bytes):
        if not line.strip():
            return
        token = object()
        self.factory.calls.add(token)  # in flight until answered: a shutdown waits for it
        self._queue.addCallback(lambda _: defer.ensureDeferred(self._answer(line)))
        self._queue.addCallback(self._send)
        self._queue.addBoth(lambda result: (self.factory.calls.discard(token), result)[1])

    def lineLengthExceeded(self, line):
        # The rest of the oversized line cannot be told apart from the next request: close.
        self.transport.write(encode_line(fault(Malformed(f"request line longer than {self.MAX_LENGTH} bytes"))) + b"\n")
        self.transport.loseConnection()

    def _send(self, message: dict) -> None:
        try:
            data = encode_line(message)
        except (TypeError, ValueError) as exc:
            log.error("cannot encode a CLI answer: {error}", error=exc)
            data = encode_line(fault(ServerError("the result cannot be sent as JSON; the error was logged")))
        if self.transport is not None and self.connected:
            self.transport.write(data + b"\n")

    async def _answer(self, line: bytes) -> dict:
        started = time.perf_counter()
        known = []  # the operation name, once the registry knows it (for the metrics)
        answer = await self._call(line, known)
        metrics = self.factory.metrics
        if metrics is not None and known:
            metrics.count_call("cli", known[0], time.perf_counter() - started,
                               answer["fault"]["code"] if "fault" in answer else None)
        return answer

    async def _call(self, line: bytes, known: list) -> dict:
        try:
            function, args, kwargs, site, user = _request_fields(line)
            try:
                known.append(self.factory.registry.lookup(function).spec.operation)
            except ApiError:
                pass  # the registry answers the unknown name in its turn, after admission
            ctx = await self._admit()
            if site is not None or user is not None:
                ctx = await self._act_as(ctx, site, user)
            result = await self.factory.registry.call(ctx, function, args, kwargs)
        except ApiError as error:
            return fault(error)
        except Exception:
            log.failure("CLI request failed")
            return fault(ServerError())
        return {"result": to_plain(result)}

    async def _admit(self) -> CallContext:
        uid = self._uid
        if uid is None:
            raise AuthenticationFailed("uid", "the kernel gave no credentials for this connection")
        if uid not in (ROOT_UID, os.getuid()):
            return await self._admit_site_account(uid)
        # The server's own user owns the database and secret anyway: it counts as root.
        credentials = Credentials(peer_uid=ROOT_UID if uid == os.getuid() else uid)
        return await self.factory.gatekeeper.admit(
            AuthRequest(gate=Gate.CLI, address=LOCAL_ADDRESS, credentials=credentials, secure=True))

    async def _admit_site_account(self, uid: int) -> CallContext:
        """A site's system user: known by its uid, admitted at gate CLI from the address it logged in from."""
        factory = self.factory
        if await factory.run_blocking(factory.directory.identity_for_uid, uid) is None:
            # The kernel vouches for the uid: nothing was guessed, so nothing counts in Anvil.
            raise AuthenticationFailed("uid", NOT_AN_ACCOUNT.format(uid=uid))
        if self._address is None:
            self._address = await factory.run_blocking(login_address, self._pid)
            if self._address is None:
                raise AuthenticationFailed("uid", CALLER_GONE)
        return await factory.gatekeeper.admit(
            AuthRequest(gate=Gate.CLI, address=self._address, credentials=Credentials(peer_uid=uid), secure=True))

    async def _act_as(self, ctx: CallContext, site: Optional[str], user: Optional[str]) -> CallContext:
        if ctx.identity.role is not Role.ADMIN:
            raise Denied("only the appliance administrator may act as a site or user (-d/-u)")
        factory = self.factory
        target = await factory.run_blocking(factory.directory.identity_for, site, user)
        if target.impersonator is None:
            target = dataclasses.replace(target, impersonator=ctx.identity)
        # cpcmd -d/-u is the socket's admin_hijack: the trail records it the same way.
        factory.fire("apiserver_hijack_started", actor=ctx.identity, target=target, gate=Gate.CLI.value,
                     address=LOCAL_ADDRESS)
        return CallContext(api=ctx.api, identity=target, gate=Gate.CLI, client_address=LOCAL_ADDRESS)


class CliFactory(protocol.Factory):
    """Makes a :class:`CliProtocol` per cpcmd connection.

    ``settings``: the config (``[soap] max_body_size`` caps a line); ``gatekeeper``: admits the
    peer; ``registry``: the functions called; ``directory``: the account ``-d/-u`` name;
    ``run_blocking``: its look-up off the reactor; ``fire``: ``apiserver_hijack_started``;
    ``metrics``: counts the calls (None: not counted).
    """

    noisy = False  # the "cpcmd socket at" line says where it listens

    def __init__(self, settings, gatekeeper, registry, directory, run_blocking, fire, metrics=None):
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.registry = registry
        self.directory = directory
        self.run_blocking = run_blocking
        self.fire = fire
        self.metrics = metrics
        self.calls = WaitableSet()  # calls received and not yet answered, on every connection

    def buildProtocol(self, addr):
        return CliProtocol(self)


def remove_stale_socket(path: str) -> None:
    """Remove a socket left by a server that is gone; refuse if a server still answers on it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; remove it or set [core] cli_socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"another server is listening on {path}")


def listen_cli_socket(factory: CliFactory, reactor, path: str):
    """Listen for cpcmd with ``factory`` on the UNIX socket ``path`` (0666: the peer's uid decides;
    stale socket removed); the port."""
    directory = os.path.dirname(path) or "."
    # A folder made here is owner-only: for site users, [core] cli_socket names one they may enter.
    os.makedirs(directory, mode=0o700, exist_ok=True)
    remove_stale_socket(path)
    return reactor.listenUNIX(path, factory, mode=0o666, wantPID=False)
