"""Fixtures for middleware unit tests (helpers live in ``support.py``)."""

import pytest
from twisted.internet import task

from tests.middleware.support import make_app


@pytest.fixture
def clock():
    """A clock the test moves by hand."""
    return task.Clock()


@pytest.fixture
def app_factory(clock):
    """``app_factory({"anvil": {"limit": "5"}})``: an Application on ``clock`` with fake accounts."""
    return lambda overrides=None: make_app(clock, overrides)
