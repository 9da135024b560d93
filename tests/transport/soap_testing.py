"""An in-process SOAP server for the transport tests: the real Site, a sample module, a key gate.

Run as a script (``python soap_testing.py``) it builds an :class:`Application` with
:class:`Sample` as its only module and a gate that admits :data:`KEY`, listens on a free
127.0.0.1 port through :func:`apiserver.transport.site.build_site`'s pieces and prints
``PORT <n>`` once listening.  Tests start it as a subprocess so the global reactor never runs
inside pytest.  The accounts and middleware of the real server are tested in their own
packages and end to end in ``tests/e2e``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any, Optional

import pluggy

KEY = "ab" * 32
BAD_KEY = "cd" * 32
SESSION = "s" * 32
THROTTLED_KEY = "ef" * 32  # the KeyGate answers this one as Anvil does for a blocked address
SECRET_MARKER = "BODY-SECRET-7f3a"  # appears only in request bodies; must never reach a log


@dataclasses.dataclass
class Restriction:
    """An IP restriction as auth_get_ip_restrictions returns it."""

    ip: str
    gate: Optional[str] = None


def sample_module():
    from apiserver.errors import NotFound
    from apiserver.module import Module, Role, export

    class Sample(Module):
        """Functions taking and returning every supported type."""

        name = "sample"

        @export(Role.ALL, blocking=False)
        def echo(self, ctx, text: str, times: Optional[int] = None) -> str:
            """TEXT repeated TIMES times."""
            return text * (times or 1)

        @export(Role.ALL, blocking=False)
        def add(self, ctx, a: int, b: int) -> int:
            """A plus B."""
            return a + b

        @export(Role.ALL, blocking=False)
        def negate(self, ctx, flag: bool) -> bool:
            """NOT FLAG."""
            return not flag

        @export(Role.ALL, blocking=False)
        def half(self, ctx, value: float) -> float:
            """VALUE / 2."""
            return value / 2

        @export(Role.ALL, blocking=False)
        def nothing(self, ctx) -> Optional[str]:
            """Returns null."""
            return None

        @export(Role.ALL, blocking=False)
        def whoami(self, ctx) -> str:
            """The caller's name."""
            return ctx.identity.username

        @export(Role.ALL, blocking=False)
        def join(self, ctx, items: list[str], sep: str = ",") -> str:
            """ITEMS joined by SEP."""
            return sep.join(items)

        @export(Role.ALL, blocking=False)
        def split(self, ctx, text: str) -> list[str]:
            """TEXT split on commas (a one-element list stays a list)."""
            return text.split(",")

        @export(Role.ALL, blocking=False)
        def restrictions(self, ctx, count: int) -> list[Restriction]:
            """COUNT restrictions, every second one without a gate."""
            return [Restriction(f"10.0.0.{i}", None if i % 2 else "SOAP") for i in range(count)]

        @export(Role.ALL, blocking=False)
        def describe(self, ctx, options: dict) -> dict:
            """OPTIONS with the type name of each value added."""
            return {"keys": sorted(options), "types": {k: type(v).__name__ for k, v in options.items()},
                    "values": options}

        @export(Role.ALL, blocking=False)
        def store(self, ctx, restriction: Restriction) -> Restriction:
            """RESTRICTION back."""
            return restriction

        @export(Role.ALL, blocking=False)
        def flags(self, ctx) -> list[bool]:
            """[False, True]."""
            return [False, True]

        @export(Role.ALL, blocking=False)
        def anything(self, ctx, value: Any = None) -> Any:
            """VALUE back, whatever it is."""
            return value

        @export(Role.ALL, blocking=False)
        def missing(self, ctx, name: str) -> str:
            """Always NotFound."""
            raise NotFound(f"no such thing {name!r}")

        @export(Role.ALL, blocking=False)
        def crash(self, ctx) -> str:
            """A bug: a non-API error with server details."""
            raise RuntimeError("/etc/secret-path leaked")

    return Sample


class KeyGate:
    """Test gate: admits KEY (and cookie SESSION) as an appliance administrator, throttles THROTTLED_KEY.

    ``settings``: the config (``[soap] enabled``); ``api``: what the contexts it admits carry.
    """

    def __init__(self, settings, api):
        self.settings = settings
        self.api = api

    def client_address(self, request) -> str:
        return request.getClientAddress().host

    def check_http(self, request):
        if not self.settings.get("soap", "enabled"):
            return _Refusal(403, "the API is disabled on this server", {})
        return None

    def admit(self, auth_request):
        from twisted.internet import defer

        from apiserver.context import CallContext, Identity
        from apiserver.errors import AuthenticationFailed, Throttled
        from apiserver.module import Role

        creds = auth_request.credentials
        if creds.api_key == KEY or creds.session_id == SESSION:
            identity = Identity(role=Role.ADMIN, user_id=1, username="admin")
            return defer.succeed(CallContext(self.api, identity, auth_request.gate, auth_request.address))
        if creds.api_key == THROTTLED_KEY:
            return defer.fail(Throttled(retry_after=42))
        return defer.fail(AuthenticationFailed("key"))


@dataclasses.dataclass
class _Refusal:
    status: int
    message: str
    headers: dict


def sample_registry(overrides: Optional[dict] = None):
    """``(registry, gatekeeper, config)``: the Sample module called through the built-in
    ``apiserver_call`` (functions run at once), and the KeyGate admitting to it."""
    from twisted.internet import defer

    from apiserver import dispatch, hookspecs
    from apiserver.config import BUILTIN_SECTIONS, Config
    from tests.middleware.support import ApiStub, CoreStub

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(dispatch)
    config = Config(BUILTIN_SECTIONS, overrides or {}, None)
    core = CoreStub(None, defer.maybeDeferred)
    api = ApiStub(core)
    core.registry = dispatch.Registry([sample_module()(api)], call_hook=pm.hook.apiserver_call)
    return core.registry, KeyGate(config, api), config


def serve(overrides: dict) -> None:
    """Listen on a free port with the SOAP resources and print ``PORT n``."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.web import resource

    from apiserver.transport.http import ApiSite
    from apiserver.transport.soap import SoapResource, WsdlResource
    from apiserver.transport.wsdl import WsdlCache

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    registry, gatekeeper, config = sample_registry(overrides)
    cache = WsdlCache(registry)
    root = resource.Resource()
    root.putChild(b"soap", SoapResource(gatekeeper, registry, config, cache))
    root.putChild(b"apnscp.wsdl", WsdlResource(gatekeeper, config, cache))
    port = reactor.listenTCP(0, ApiSite(root, config), interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


class SoapTestServer:
    """A running ``soap_testing.py`` subprocess; ``url`` is its base URL, ``log()`` its output."""

    def __init__(self, log_path: str, overrides: Optional[dict] = None):
        import json

        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = dict(os.environ, SOAP_TEST_CONFIG=json.dumps(overrides or {}))
        self.process = subprocess.Popen([sys.executable, "-u", __file__], stdout=subprocess.PIPE,
                                        stderr=self._log, env=env)
        line = self.process.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"test server did not start: {line!r}\n{self.log()}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._log.close()


if __name__ == "__main__":
    import json

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    serve(json.loads(os.environ.get("SOAP_TEST_CONFIG", "{}")))
