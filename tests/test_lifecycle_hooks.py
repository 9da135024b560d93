"""Start-up hooks through the real start path: apiserver_add_modules, apiserver_startup and
apiserver_shutdown (whose Deferred the shutdown waits for), each with a test plugin."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from apiserver.hookspecs import hookimpl
from apiserver.module import Module, Role, export
from apiserver.service import start_application
from apiserver.testing import PluginTestApp, wait


class Ticks(Module):
    """Reports how often the plugin's start-up timer fired."""

    name = "ticks"

    @export(roles=Role.ADMIN, blocking=False)
    def count(self, ctx) -> int:
        """Timer ticks since start-up."""
        return LIFECYCLE.ticks


class Lifecycle:
    """A plugin starting a timer on the API's clock at start-up and draining at shutdown."""

    def __init__(self):
        self.ticks = 0
        self.started_with = None
        self.drained = defer.Deferred()
        self.shutdown_called = False

    @hookimpl
    def apiserver_add_modules(self, api):
        return [Ticks]

    @hookimpl
    def apiserver_startup(self, api):
        self.started_with = api
        api.clock.callLater(10, self._tick, api)

    def _tick(self, api):
        self.ticks += 1
        api.clock.callLater(10, self._tick, api)

    @hookimpl
    def apiserver_shutdown(self, api):
        self.shutdown_called = True
        return self.drained


LIFECYCLE = Lifecycle()


class FailingShutdown:
    """A plugin whose shutdown raises, and one whose shutdown Deferred fails."""

    @hookimpl
    def apiserver_shutdown(self, api):
        raise RuntimeError("shutdown hook broke")


class FailingDeferredShutdown:
    @hookimpl
    def apiserver_shutdown(self, api):
        return defer.fail(RuntimeError("shutdown Deferred broke"))


@pytest.fixture
def started(tmp_path, request):
    """(test app, memory reactor): the application started by apiserver.service.start_application on a memory
    reactor, with the Lifecycle plugin and those of an indirect parameter."""
    global LIFECYCLE
    LIFECYCLE = Lifecycle()
    plugins = [*getattr(request, "param", ()), LIFECYCLE]
    with PluginTestApp(tmp_path, plugins=plugins, sections={"frontend": {"http_port": "0", "https_port": "0"}}) as app:
        reactor = MemoryReactorClock()
        server = start_application(app.app, reactor)
        for hook, args, kwargs in reactor.whenRunningHooks:  # as reactor.run() would
            hook(*args, **kwargs)
        yield app, reactor
        # the listeners bound real ports on the global reactor: close them for the tests after
        wait(defer.gatherResults([defer.maybeDeferred(s.stopService) for s in server.listeners if s.running]))


def test_add_modules_contributes_a_callable_module(started):
    """The module a plugin returns from apiserver_add_modules is served."""
    app, _reactor = started
    assert app.call(app.admin, "ticks_count") == 0


def test_startup_gets_the_api_and_may_start_timers_on_its_clock(started):
    """apiserver_startup runs once with the plugin API; its timer follows the injected clock."""
    app, _reactor = started
    assert LIFECYCLE.started_with is app.api
    app.clock.advance(10)
    app.clock.advance(10)
    assert app.call(app.admin, "ticks_count") == 2


def test_shutdown_is_waited_for(started):
    """apiserver_shutdown runs before the reactor stops, which waits for the Deferred it returned."""
    _app, reactor = started
    before = [trigger for trigger in reactor.triggers["before"]["shutdown"]]
    assert before, "start_application() registered no shutdown trigger"
    results = [fn(*args, **kwargs) for fn, args, kwargs in before]
    waiting = [r for r in results if isinstance(r, defer.Deferred)]
    assert waiting, "the shutdown trigger returned nothing to wait for"
    _iterate_until(lambda: LIFECYCLE.shutdown_called)  # listeners close first, on the real reactor
    assert not waiting[0].called
    LIFECYCLE.drained.callback(None)
    wait(waiting[0])  # the built-in flush of API keys' last_used runs on the pool meanwhile


@pytest.mark.parametrize("started", [[FailingShutdown(), FailingDeferredShutdown()]], indirect=True)
def test_failing_shutdown_hooks_do_not_stop_the_shutdown(started):
    """A shutdown hook that raises or whose Deferred fails is logged; the others still run and
    the shutdown completes ("apiserver stopped" logged)."""
    from twisted.logger import globalLogPublisher

    _app, reactor = started
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        results = [fn(*args, **kwargs) for fn, args, kwargs in reactor.triggers["before"]["shutdown"]]
        waiting = [r for r in results if isinstance(r, defer.Deferred)]
        _iterate_until(lambda: LIFECYCLE.shutdown_called)
        LIFECYCLE.drained.callback(None)
        wait(waiting[0])
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = sorted(str(e["log_failure"].value) for e in events if "log_failure" in e)
    assert failures == ["shutdown Deferred broke", "shutdown hook broke"]
    assert any(e.get("log_format") == "apiserver stopped" for e in events)


def _iterate_until(condition, timeout: float = 20.0) -> None:
    """Let the real reactor (the test app's) work until ``condition()`` holds."""
    import time

    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        reactor.iterate(0.005)
