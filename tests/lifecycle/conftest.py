"""Fixtures of the lifecycle tests: a real application (SQLite, a Clock) and a plugin that records
the site events."""

from __future__ import annotations

import pytest

from apiserver.hookspecs import hookimpl
from tests.accounts.support import harness  # noqa: F401 - the fixture
from tests.accounts.support import harness_with_plugin


class SiteEvents:
    """A test plugin recording the site events."""

    def __init__(self):
        self.events = []

    @hookimpl
    def apiserver_site_suspended(self, site, actor, reason):
        self.events.append(("suspended", site, actor.username, reason))

    @hookimpl
    def apiserver_site_activated(self, site, actor):
        self.events.append(("activated", site, actor.username))

    @hookimpl
    def apiserver_site_deleted(self, site, actor):
        self.events.append(("deleted", site, actor.username))


@pytest.fixture
def recorded(tmp_path):
    """(harness, site events)."""
    yield from harness_with_plugin(tmp_path, SiteEvents())
