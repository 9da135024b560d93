"""Fixtures of the module tests: a real application and a plugin that records event hooks."""

from __future__ import annotations

import threading

import pytest

from apiserver.hookspecs import hookimpl
from tests.accounts.support import harness  # noqa: F401 - the fixture
from tests.accounts.support import harness_with_plugin


class EventLog:
    """A plugin recording every account event with the thread it ran on."""

    def __init__(self):
        self.events = []

    def _record(self, name, **kwargs):
        self.events.append((name, kwargs, threading.current_thread() is threading.main_thread()))

    def names(self):
        return [name for name, _kw, _main in self.events]

    @hookimpl
    def apiserver_site_added(self, site, actor):
        self._record("site_added", site=site, actor=actor)

    @hookimpl
    def apiserver_site_deleted(self, site, actor):
        self._record("site_deleted", site=site, actor=actor)

    @hookimpl
    def apiserver_api_key_created(self, owner, actor, comment):
        self._record("api_key_created", owner=owner, actor=actor, comment=comment)

    @hookimpl
    def apiserver_api_key_deleted(self, owner, actor):
        self._record("api_key_deleted", owner=owner, actor=actor)

    @hookimpl
    def apiserver_password_changed(self, target, actor, reset):
        self._record("password_changed", target=target, actor=actor, reset=reset)


@pytest.fixture
def recorded(tmp_path):
    """(harness, event log): an application with the recording plugin registered."""
    yield from harness_with_plugin(tmp_path, EventLog())
