"""Helpers for middleware unit tests: a real Application on a task.Clock, its hooks recorded.

Blocking work runs synchronously (``run_blocking`` is the one thing replaced: a thread hop
would need a running reactor, and the tests read Deferred results synchronously).
"""

from __future__ import annotations

import pluggy
from twisted.internet import defer
from twisted.python.failure import Failure

from apiserver import hookspecs
from apiserver.app import Application
from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.context import Identity
from apiserver.errors import AuthenticationFailed
from apiserver.hookspecs import hookimpl
from apiserver.module import Role

GOOD_KEY = "a" * 64
ADMIN = Identity(role=Role.ADMIN, user_id=1, username="admin")
SITE_ADMIN = Identity(role=Role.SITE, user_id=2, username="admin", site_id=1, site="example.com")


class HookRecorder:
    """A plugin that remembers the Anvil events."""

    def __init__(self):
        self.failed: list[tuple] = []
        self.blocked: list[tuple] = []

    @hookimpl
    def apiserver_login_failed(self, app, address, gate, reason):
        self.failed.append((address, gate, reason))

    @hookimpl
    def apiserver_login_blocked(self, app, address, until):
        self.blocked.append((address, until))


class FakeAccounts:
    """Accounts reduced to what admission needs, so a test controls each answer: one good key,
    one live session, stored restrictions (``test_gatekeeper_accounts.py`` uses the real ones)."""

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

    def load_ip_restrictions(self, user_id):
        self.loads += 1
        return list(self.restrictions.get(user_id, []))

    def ip_restriction_generation(self, user_id):
        self.generation_reads += 1
        return self.generations.get(user_id)


def make_config(overrides: dict | None = None) -> Config:
    """The built-in config with ``{section: {key: raw}}`` overrides."""
    return Config(BUILTIN_SECTIONS, overrides or {}, None)


def make_app(clock, overrides: dict | None = None) -> Application:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    app = Application(make_config(overrides), reactor=clock, plugin_manager=pm, clock=clock)
    app.run_blocking = lambda fn, *a, **kw: defer.maybeDeferred(fn, *a, **kw)
    app.recorder = HookRecorder()
    pm.register(app.recorder)
    app.accounts = FakeAccounts()
    return app


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
