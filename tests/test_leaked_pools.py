"""tests/leaked_pools.py: a pool left running errors the test or the wider fixture that started it."""

from __future__ import annotations

import os

from tests.conftest import ROOT

_INNER_TESTS = '''
import pytest
from twisted.python.threadpool import ThreadPool


@pytest.fixture(scope="module")
def module_pool():
    """A module fixture that never stops its pool."""
    pool = ThreadPool(name="apiserver-module-owned")
    pool.start()
    yield pool


@pytest.fixture
def function_pool():
    """A function fixture that never stops its pool."""
    pool = ThreadPool(name="apiserver-fixture-owned")
    pool.start()
    return pool


def test_a_leaking_test():
    ThreadPool(name="apiserver-test-owned").start()


def test_a_clean_test():
    pool = ThreadPool(name="apiserver-stopped")
    pool.start()
    pool.stop()


def test_leaking_through_a_function_fixture(function_pool):
    assert function_pool.started


def test_using_the_module_pool(module_pool):
    assert module_pool.started


def test_using_it_again(module_pool):
    assert module_pool.started
'''


def test_leaked_pools_error_the_test_or_fixture_that_started_them(pytester, monkeypatch):
    """In a real pytest run: the leaking test and the function fixture's test error after their
    teardown, the module fixture's pool errors only the last test using it, clean tests pass."""
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makeconftest('pytest_plugins = ["tests.leaked_pools"]\n')
    pytester.makepyfile(test_inner=_INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE", timeout=120)
    result.assert_outcomes(passed=5, errors=3)
    out = result.stdout.str()
    assert "ERROR at teardown of test_a_leaking_test" in out and "(apiserver-test-owned)" in out
    assert "ERROR at teardown of test_leaking_through_a_function_fixture" in out
    assert "(apiserver-fixture-owned)" in out
    assert "ERROR at teardown of test_using_it_again" in out
    assert "fixture 'module_pool' (module scope) left 1 thread pool(s) running (apiserver-module-owned)" in out
    assert "test_a_clean_test" not in out.split("short test summary")[-1]
