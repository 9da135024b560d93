"""Test support for accounts and modules: a real application on a SQLite file, driven by a Clock.

Thread-pool results reach the reactor through ``callFromThread``; :func:`wait` lets the
(not running) global reactor process them until a Deferred has fired.
"""

from __future__ import annotations

import time
from typing import Optional

import pytest
from twisted.internet import defer, reactor, task

from apiserver.accounts import initialize_state
from apiserver.app import create_application
from apiserver.config import BUILTIN_SECTIONS, Config
from apiserver.context import CallContext, Credentials, Gate
from apiserver.plugins import make_plugin_manager
from apiserver.testing import wait  # noqa: F401 - tests import it from here

# One shared owner for every site unless a test turns system accounts on (tests/host/support.py).
FAST = {"auth": {"pbkdf2_iterations": "1000"}, "mail": {"enabled": "false"}, "web": {"system_accounts": "false"}}




def eventually(predicate, timeout: float = 20.0) -> None:
    """Let the reactor and the pools work until ``predicate()`` holds (work scheduled by the clock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        reactor.iterate(0.005)


def make_config(state_dir, sections: Optional[dict] = None) -> Config:
    raw = {s: dict(k) for s, k in FAST.items()}
    raw.setdefault("core", {})["state_dir"] = str(state_dir)
    for section, keys in (sections or {}).items():
        raw.setdefault(section, {}).update(keys)
    return Config(BUILTIN_SECTIONS, raw, None)


class Harness:
    """An initialised state directory and a real application on it (pools started)."""

    def __init__(self, state_dir, sections: Optional[dict] = None, plugins=()):
        self.config = make_config(state_dir, sections)
        self.init = initialize_state(self.config)
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)  # 2027-01-15: timestamps look like real ones
        pm = make_plugin_manager(load_entrypoints=False, extra=plugins)
        self.app = create_application(self.config, reactor=reactor, clock=self.clock, plugin_manager=pm)
        self.app.start_pools()
        self.services = self.app.background_services()  # the outbox sender, the trail writer
        for each in self.services:
            each.startService()
        if self.init.admin_key:
            self.admin = self.login_key(self.init.admin_key)
        else:  # the state existed already
            self.admin = wait(self.app.run_blocking(self.app.directory.identity_for_uid, 0))

    def close(self) -> None:
        for each in reversed(self.services):  # as the server does: the trail last
            wait(defer.maybeDeferred(each.stopService))
        self.app.stop_pools()
        self.app.storage.dispose()

    def timers(self) -> list:
        """The application's WorkTimers: the trail's writer and pruning, the outbox, API key usage,
        the lockdown's re-apply, the storage recount and the traffic meter (these three once started),
        and Fortification's windows."""
        app, events = self.app, self.app.security_events
        timers = [events.flush_timer, events.prune_timer, app.notices.sender.timer, app.accounts.keys.flush_timer,
                  app.lockdown._timer, app.storage_recount.timer, app.traffic.timer, app.fortifier.windows]
        return [timer for timer in timers if timer is not None]

    def settle(self) -> None:
        """Wait until no timer has a run in progress or due (no polling: each timer says when)."""
        while any(timer.busy for timer in self.timers()):
            for timer in self.timers():
                wait(timer.idle())

    def advance(self, seconds: float) -> None:
        """Let the runs under way finish, advance the clock, then wait for the runs it made due."""
        self.settle()
        self.clock.advance(seconds)
        self.settle()

    def login_key(self, key: str, address: str = "127.0.0.1", gate: Gate = Gate.SOAP):
        return wait(self.app.accounts.authenticate(Credentials(api_key=key), gate, address))

    def login(self, credentials: Credentials, address: str = "192.0.2.1", gate: Gate = Gate.SOAP):
        return wait(self.app.accounts.authenticate(credentials, gate, address))

    def call(self, identity, name: str, *args, **named):
        """Call ``name`` as ``identity`` the way every gate does (role check, hook, threads)."""
        ctx = CallContext(self.app.api, identity, Gate.SOAP, "127.0.0.1")
        return wait(self.app.call(ctx, name, list(args), named))

    def add_site(self, domain: str = "example.com", admin_user: str = "siteadmin",
                 email: str = "owner@example.com", password: str = "site-password"):
        """Create a site and return its administrator's identity."""
        self.call(self.admin, "admin_add_site", domain, admin_user, {"siteinfo.email": email, "auth.tpasswd": password})
        return wait(self.app.run_blocking(self.app.directory.identity_for, domain, None))

    def add_user(self, site_admin, user: str = "bob", password: str = "user-password", email: Optional[str] = None):
        self.call(site_admin, "user_add", user, password, email)
        return wait(self.app.run_blocking(self.app.directory.identity_for, site_admin.site, user))


@pytest.fixture
def harness(tmp_path):
    """A real application on a fresh SQLite state directory."""
    h = Harness(tmp_path / "state")
    yield h
    h.close()


def harness_with_plugin(tmp_path, plugin, sections: Optional[dict] = None):
    """A fixture's body: ``(harness, plugin)``, a Harness on ``tmp_path/state`` with ``plugin``
    registered (a test plugin recording hooks), closed after the test."""
    h = Harness(tmp_path / "state", sections, plugins=[plugin])
    yield h, plugin
    h.close()
