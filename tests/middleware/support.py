"""Helpers for middleware unit tests: the parts of one server node, built by hand on a task.Clock.

Each middleware part takes named collaborators, so a test builds it from a :class:`Node`: the
config, the clock, a pool that runs blocking work synchronously (a thread hop would need a
running reactor, and the tests read Deferred results synchronously), fake accounts whose
answers the test controls, and the plugin hooks with a recorder registered.
"""

from __future__ import annotations

import pluggy
from twisted.internet import defer
from twisted.python.failure import Failure

from apiserver import dispatch, hookspecs
from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.context import Identity
from apiserver.errors import AuthenticationFailed
from apiserver.hookspecs import hookimpl
from apiserver.middleware import GateKeeper
from apiserver.middleware.anvil import Anvil, make_anvil_store
from apiserver.middleware.https_only import HttpsOnly
from apiserver.middleware.ip_restrictions import IPRestrictions
from apiserver.module import Role
from apiserver.plugins import PluginHooks

GOOD_KEY = "a" * 64
ADMIN = Identity(role=Role.ADMIN, user_id=1, username="admin")
SITE_ADMIN = Identity(role=Role.SITE, user_id=2, username="admin", site_id=1, site="example.com")


class HookRecorder:
    """A plugin that remembers the Anvil events."""

    def __init__(self):
        self.failed: list[tuple] = []
        self.blocked: list[tuple] = []

    @hookimpl
    def apiserver_login_failed(self, address, gate, reason):
        self.failed.append((address, gate, reason))

    @hookimpl
    def apiserver_login_blocked(self, address, until):
        self.blocked.append((address, until))


class FakeAccounts:
    """Accounts reduced to what admission needs, so a test controls each answer: one good key,
    one live session; it also stands in for the IP restriction rows (``load``, ``generation``)
    (``test_gatekeeper_accounts.py`` uses the real ones)."""

    def __init__(self):
        self.restrictions: dict[int, list] = {}
        self.generations: dict[int, int] = {}  # users.ip_restriction_generation; none: unknown (reload)
        self.generation_reads = 0
        self.sessions = {"live-session": SITE_ADMIN}
        self.loads = 0

    def authenticate(self, credentials, gate, address):
        if credentials.api_key is not None:
            if credentials.api_key == GOOD_KEY:
                return defer.succeed(ADMIN)
            return defer.fail(AuthenticationFailed("key"))
        if credentials.session_id is not None:
            identity = self.sessions.get(credentials.session_id)
            return defer.succeed(identity) if identity else defer.fail(AuthenticationFailed("session"))
        return defer.fail(AuthenticationFailed("key"))

    def load(self, user_id):
        self.loads += 1
        return list(self.restrictions.get(user_id, []))

    def generation(self, user_id):
        self.generation_reads += 1
        return self.generations.get(user_id)

    def add(self, user_id, network, gate, limit):
        """Store an entry; the generations before and after (a stored one counts up by one)."""
        self.restrictions.setdefault(user_id, []).append((network, gate))
        return self._next_generation(user_id)

    def remove(self, user_id, network, gate):
        self.restrictions[user_id].remove((network, gate))
        return self._next_generation(user_id)

    def _next_generation(self, user_id):
        before = self.generations.get(user_id, 0)
        self.generations[user_id] = before + 1
        return before, before + 1


class CoreStub:
    """What the built-in dispatcher reads of the internal path: the registry and the blocking pool."""

    def __init__(self, registry, run_blocking):
        self.registry = registry
        self.run_blocking = run_blocking

    def run_blocking_for(self, account, fn, *args, **kwargs):
        """The blocking pool as one account's share: here simply the pool."""
        return self.run_blocking(fn, *args, **kwargs)


class ApiStub:
    """A plugin API with nothing but the internal path the built-in dispatcher takes
    (``apiserver.internal.internal_api``): enough for a call to reach its function."""

    def __init__(self, core: CoreStub):
        self._internal = core


class NoDevices:
    """Devices that tell nothing apart: admission reports to them, nothing is mailed."""

    def admitted(self, identity, request):
        pass


def make_config(overrides: dict | None = None) -> Config:
    """The built-in config with ``{section: {key: raw}}`` overrides."""
    return Config(BUILTIN_SECTIONS, overrides or {}, None)


def synchronously(fn, *args, **kwargs) -> defer.Deferred:
    """A blocking pool that runs ``fn`` at once."""
    return defer.maybeDeferred(fn, *args, **kwargs)


class Node:
    """The middleware of one server node from its parts: ``config`` (with ``overrides``),
    ``clock``, ``accounts`` (:class:`FakeAccounts`, also the restriction rows), ``recorder`` (the
    Anvil events fired) and ``blocking``, the pool (synchronous; a test may swap it)."""

    def __init__(self, clock, overrides: dict | None = None):
        self.clock = clock
        self.config = make_config(overrides)
        self.accounts = FakeAccounts()
        self.blocking = synchronously
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        self.recorder = HookRecorder()
        pm.register(self.recorder)
        self.plugin_manager = pm
        self.hooks = PluginHooks(pm, api=None)
        self.api = None  # until serve() gives the node modules

    def serve(self, *module_classes) -> dispatch.Registry:
        """A registry of ``module_classes`` that calls them through the built-in ``apiserver_call``;
        the node's contexts then carry an API that reaches it."""
        self.plugin_manager.register(dispatch)
        core = CoreStub(None, self.run_blocking)
        self.api = ApiStub(core)
        core.registry = dispatch.Registry([cls(self.api) for cls in module_classes],
                                          call_hook=self.plugin_manager.hook.apiserver_call)
        return core.registry

    def run_blocking(self, fn, *args, **kwargs) -> defer.Deferred:
        return self.blocking(fn, *args, **kwargs)

    def fire(self, event: str, **kwargs) -> list:
        return self.hooks.fire(event, **kwargs)

    def anvil(self, store=None) -> Anvil:
        """An Anvil on this node's clock and config (the memory store unless ``store`` is given)."""
        return Anvil(self.clock, self.config, self.fire,
                     store if store is not None else make_anvil_store(self.config, self.clock, self.run_blocking))

    def ip_restrictions(self) -> IPRestrictions:
        """The IP restrictions component over the fake rows."""
        return IPRestrictions(self.accounts, self.clock, self.run_blocking, self.config)

    def gatekeeper(self, anvil=None, ip_restrictions=None) -> GateKeeper:
        """A gatekeeper of fresh parts (or the ones given) over the fake accounts."""
        return GateKeeper(self.config, self.accounts, anvil or self.anvil(), ip_restrictions or self.ip_restrictions(),
                          HttpsOnly(self.config), NoDevices(), self.api)


def result_of(d: defer.Deferred):
    """The value a fired Deferred holds (re-raising its failure); fails the test if it has not fired."""
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def has_fired(d: defer.Deferred) -> bool:
    """Whether ``d`` has a result now (the result stays in ``d``)."""
    return d.called and not isinstance(d.result, defer.Deferred)
