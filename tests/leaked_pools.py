"""A pytest plugin: a thread pool of apiserver's (``apiserver-*``) left running fails whoever started it.

Pool threads are no daemons: a harness a test forgot to close holds the interpreter at exit.
Every start of such a :class:`~twisted.python.threadpool.ThreadPool` is recorded (weakly, so a
stopped and dropped pool costs nothing) with its owner: the module or session fixture being set
up, else the running test (its function fixtures included).  A test's pools are checked after its
teardown, a wider fixture's when it is finalized; the pools found running are stopped and the
test (or the test whose teardown finalized the fixture) errors, naming them.
"""

from __future__ import annotations

import threading
import weakref

import pytest
from twisted.python.threadpool import ThreadPool

#: The running test owns the pools started outside a module or session fixture's set-up.
THE_TEST = "the test"

_owners: "weakref.WeakKeyDictionary[ThreadPool, object]" = weakref.WeakKeyDictionary()
_owners_lock = threading.Lock()  # a pool may start on another thread while a test's are checked
_setting_up: list = []  # the module/session fixtures being set up, innermost last
_start = ThreadPool.start


def _recorded_start(pool: ThreadPool) -> None:
    _start(pool)
    if (pool.name or "").startswith("apiserver-"):
        with _owners_lock:
            _owners[pool] = _setting_up[-1] if _setting_up else THE_TEST


ThreadPool.start = _recorded_start


def stop_leaked(owner, who: str) -> None:
    """Stop the pools ``owner`` started that still run; Failed naming them and ``who`` if any."""
    with _owners_lock:
        leaked = [pool for pool, of in _owners.items() if of is owner and pool.started]
    for pool in leaked:
        pool.stop()
    if leaked:
        pytest.fail(f"{who} left {len(leaked)} thread pool(s) running ({', '.join(p.name for p in leaked)}): "
                    "close the harness or application that started them", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Pools started while a module or session fixture is set up are that fixture's."""
    if fixturedef.scope == "function":
        return (yield)
    _setting_up.append(fixturedef)
    try:
        return (yield)
    finally:
        _setting_up.pop()


def pytest_fixture_post_finalizer(fixturedef, request):
    """A module or session fixture, once finalized, has stopped every pool it started."""
    if fixturedef.scope != "function":
        stop_leaked(fixturedef, f"fixture {fixturedef.argname!r} ({fixturedef.scope} scope)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After its teardown a test has stopped every pool it (or its function fixtures) started."""
    try:
        return (yield)
    finally:
        stop_leaked(THE_TEST, item.nodeid)
