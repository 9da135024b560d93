"""Test helpers for plugin authors: a real apiserver application with your plugin registered.

::

    from apiserver.testing import PluginTestApp

    def test_greet(tmp_path):
        with PluginTestApp(tmp_path, plugins=[my_plugin]) as app:
            assert app.call(app.admin, "hello_greet", "bob") == ["hello bob"]

The application runs on a fresh SQLite database in the given directory, with the built-in
modules, real argument checking, role checks, the ``apiserver_call`` hook and the thread
pools; time is a ``twisted.internet.task.Clock`` (``app.clock.advance(60)``).  Nothing
listens on a port: for end-to-end tests start ``apiserver serve`` yourself.

This module is part of the plugin API: it changes only deliberately.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Optional

from twisted.internet import defer, task
from twisted.python.failure import Failure

from apiserver.context import CallContext, Credentials, Gate, Identity

__all__ = ["PluginTestApp", "wait"]

#: Fast hashing, no mail and no system accounts per site: tests need neither real cost, nor a
#: relay, nor users and groups left on the host.
TEST_SECTIONS = {"auth": {"pbkdf2_iterations": "1000"}, "mail": {"enabled": "false"},
                 "web": {"system_accounts": "false"}}


def wait(d, timeout: float = 20.0):
    """The result of Deferred (or coroutine) ``d``, letting the reactor work until it fires.

    A failure is raised as its exception (an :class:`apiserver.errors.ApiError` for faults).
    """
    from twisted.internet import reactor

    if not isinstance(d, defer.Deferred):
        d = defer.ensureDeferred(d)
    results = []
    d.addBoth(results.append)
    deadline = time.monotonic() + timeout
    while not results:
        if time.monotonic() > deadline:
            raise AssertionError(f"Deferred did not fire within {timeout}s")
        reactor.iterate(0.005)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class PluginTestApp:
    """An initialised state directory and a running application with ``plugins`` registered.

    ``sections`` overrides config values (``{"hello": {"greeting": "hi"}}``), including the
    plugin's own sections.  ``admin`` is the appliance administrator's identity.
    """

    def __init__(self, directory, plugins: Iterable[object] = (), sections: Optional[dict] = None):
        from twisted.internet import reactor

        from apiserver.accounts import initialize_state
        from apiserver.app import create_application
        from apiserver.config import BUILTIN_SECTIONS, Config
        from apiserver.plugins import make_plugin_manager, plugin_sections

        raw = {s: dict(k) for s, k in TEST_SECTIONS.items()}
        raw.setdefault("core", {})["state_dir"] = os.path.join(str(directory), "state")
        for section, keys in (sections or {}).items():
            raw.setdefault(section, {}).update({k: str(v) for k, v in keys.items()})
        pm = make_plugin_manager(load_entrypoints=False, extra=plugins)
        extra = plugin_sections(pm)
        self.config = Config(list(BUILTIN_SECTIONS) + extra, raw, None)
        init = initialize_state(self.config)
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)  # timestamps look like real ones
        self.app = create_application(self.config, reactor=reactor, clock=self.clock, plugin_manager=pm)
        self.app.start_pools()
        if init.admin_key:
            credentials = Credentials(api_key=init.admin_key)
            self.admin = wait(self.app.accounts.authenticate(credentials, Gate.SOAP, "127.0.0.1"))
        else:  # the directory was initialised by an earlier PluginTestApp
            self.admin = wait(self.app.run_blocking(self.app.directory.identity_for_uid, 0))

    @property
    def api(self):
        """The :class:`apiserver.plugin_api.PluginApi` the plugin's hooks and functions get."""
        return self.app.api

    def call(self, identity: Identity, name: str, *args, **named):
        """Call function ``name`` (any spelling) as ``identity``, as every gate does; its result.

        Faults are raised as :class:`apiserver.errors.ApiError` (``Denied``, ``InvalidArgument``...).
        """
        ctx = CallContext(self.app.api, identity, Gate.SOAP, "127.0.0.1")
        return wait(self.app.call(ctx, name, list(args), named))

    def add_site(self, domain: str = "example.com", admin_user: str = "siteadmin",
                 email: str = "owner@example.com", password: str = "site-password") -> Identity:
        """Create a site; returns its administrator's identity."""
        self.call(self.admin, "admin_add_site", domain, admin_user, {"siteinfo.email": email, "auth.tpasswd": password})
        return wait(self.app.run_blocking(self.app.directory.identity_for, domain, None))

    def add_user(self, site_admin: Identity, user: str = "bob", password: str = "user-password",
                 email: Optional[str] = None) -> Identity:
        """Create a user in ``site_admin``'s site; returns its identity."""
        self.call(site_admin, "user_add", user, password, email)
        return wait(self.app.run_blocking(self.app.directory.identity_for, site_admin.site, user))

    def blocking(self, fn, *args, **kwargs):
        """Run a blocking function (``api.state(...).get``) on the pool and return its result."""
        return wait(self.app.run_blocking(fn, *args, **kwargs))

    def settle(self, timeout: float = 20.0) -> None:
        """Let work that hooks handed to the blocking pool finish (e.g. after an event fired)."""
        from twisted.internet import reactor

        pool = self.app.pools.blocking_pool
        deadline = time.monotonic() + timeout
        idle = 0
        while idle < 2:  # idle on two passes in a row: results handed back were processed too
            reactor.iterate(0.005)
            idle = idle + 1 if not (pool.working or pool._queue.qsize()) else 0
            if time.monotonic() > deadline:
                raise AssertionError(f"work on the blocking pool did not finish within {timeout}s")

    def close(self) -> None:
        """Stop the pools and close the database."""
        self.app.stop_pools()
        self.app.storage.dispose()

    def __enter__(self) -> "PluginTestApp":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
