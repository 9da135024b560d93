"""Fixtures for middleware unit tests (helpers live in ``support.py``)."""

import pytest
from twisted.internet import task

from tests.middleware.support import Node


@pytest.fixture
def clock():
    """A clock the test moves by hand."""
    return task.Clock()


@pytest.fixture
def node_factory(clock):
    """``node_factory({"anvil": {"limit": "5"}})``: one node's middleware parts on ``clock``, fake accounts."""
    return lambda overrides=None: Node(clock, overrides)
