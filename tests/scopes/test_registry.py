"""ScopeRegistry: names, look-up, argument counts, serialised changes, audit rows and the hook."""

import json

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from apiserver.errors import InvalidArgument, NotFound
from apiserver.hookspecs import hookimpl
from apiserver.config import MASK
from apiserver.scopes import Scope, ScopeRegistry, mask_secret
from tests.scopes.support import ADMIN, audit_rows, make_app, temp_dir


class Colour(Scope):
    """A plugin-style scope kept in memory, with a secret variant."""

    name = "test.colour"
    default = "red"
    allowed = ("red", "green")
    help = "A colour."

    def __init__(self, name="test.colour", secret=False):
        self.name, self.secret, self.value, self.applied = name, secret, "red", []

    def get(self, api):
        return self.value

    def set(self, api, actor, value):
        if value not in self.allowed:
            raise InvalidArgument(f"{self.name}: expected red or green, got {value!r}")
        self.value = value

    def apply(self, api, value):
        self.applied.append(value)


def test_duplicate_scope_names_stop_startup():
    """Two scopes with one name are refused when the registry is built."""
    with pytest.raises(ValueError, match="two scopes are named 'test.colour'"):
        ScopeRegistry(None, None, None, [Colour(), Colour()])


def test_non_scope_objects_are_refused():
    """A hook returning something that is not a Scope names it."""
    with pytest.raises(TypeError, match="not a named apiserver.scopes.Scope"):
        ScopeRegistry(None, None, None, ["cp.api"])


def test_glob_listing_and_lookup_suggestions():
    """names() filters with a glob; an unknown name suggests close ones."""
    registry = ScopeRegistry(None, None, None, [Colour("cp.api"), Colour("cp.config"), Colour("apache.dav")])
    assert registry.names() == ["apache.dav", "cp.api", "cp.config"]
    assert registry.names("cp.*") == ["cp.api", "cp.config"]
    assert registry.names("nothing.*") == []
    with pytest.raises(NotFound, match="did you mean cp.api"):
        registry.scope("cp.apj")


def test_overlong_glob_is_refused():
    """A filter longer than any scope name is refused instead of compiled."""
    with pytest.raises(InvalidArgument, match="longer than 200"):
        ScopeRegistry(None, None, None, [Colour()]).names("*" * 201)


def test_mask_secret_hides_short_values_whole():
    """Secrets show at most their last characters, and only when long enough."""
    assert mask_secret("") == ""
    assert mask_secret("abc", reveal=4) == MASK
    assert mask_secret("0123456789ab", reveal=4) == MASK + "89ab"
    assert mask_secret("0123456789ab") == MASK


class RegistryTests(unittest.TestCase):
    """Changes through a registry on a real application and SQLite database."""

    def setUp(self):
        self.colour, self.token = Colour(), Colour("test.token", secret=True)
        self.app, self.events = make_app(temp_dir(self), reactor)
        self.scopes = ScopeRegistry(self.app.storage, self.app.clock, self.app.run_blocking, [self.colour, self.token])
        self.app.start_pools()
        self.addCleanup(self.app.stop_pools)

    async def test_set_records_and_fires_hook(self):
        """A change is stored, applied, audited with old and new value, and announced."""
        new = await self.scopes.set(self.app.api, "test.colour", ADMIN, "green")
        self.assertEqual(new, "green")
        self.assertEqual(self.colour.applied, ["green"])
        self.assertEqual(audit_rows(self.app),
                         [("test.colour", "appliance admin", json.dumps("red"), json.dumps("green"))])
        self.assertEqual(self.events.changes, [("test.colour", "red", "green", ADMIN)])

    async def test_unchanged_value_is_not_recorded(self):
        """Setting the current value again writes no audit row and fires no hook."""
        await self.scopes.set(self.app.api, "test.colour", ADMIN, "red")
        self.assertEqual(audit_rows(self.app), [])
        self.assertEqual(self.events.changes, [])

    async def test_refused_value_changes_nothing(self):
        """A bad value fails with the scope's reason; nothing is applied or recorded."""
        with self.assertRaises(InvalidArgument) as caught:
            await self.scopes.set(self.app.api, "test.colour", ADMIN, "blue")
        self.assertIn("expected red or green, got 'blue'", str(caught.exception))
        self.assertEqual((self.colour.value, self.colour.applied, audit_rows(self.app)), ("red", [], []))

    async def test_wrong_argument_count_names_usage(self):
        """Too many or too few values are refused with the scope's usage."""
        with self.assertRaises(InvalidArgument) as caught:
            await self.scopes.set(self.app.api, "test.colour", ADMIN, "green", "extra")
        self.assertIn("test.colour VALUE", str(caught.exception))
        with self.assertRaises(InvalidArgument):
            await self.scopes.get(self.app.api, "test.colour", "part")

    async def test_secret_values_are_masked_everywhere(self):
        """get, info, the audit row and the hook never see a secret scope's value."""
        await self.scopes.set(self.app.api, "test.token", ADMIN, "green")
        self.assertEqual(await self.scopes.get(self.app.api, "test.token"), MASK)
        self.assertEqual((await self.scopes.info(self.app.api, "test.token"))["value"], MASK)
        self.assertEqual(audit_rows(self.app), [("test.token", "appliance admin", json.dumps(MASK), json.dumps(MASK))])
        self.assertNotIn("green", repr(self.events.changes))

    async def test_info_describes_scope(self):
        """info() has value, default, type, help, allowed values and usage."""
        info = await self.scopes.info(self.app.api, "test.colour")
        self.assertEqual(info, {"name": "test.colour", "type": "string", "default": "red", "help": "A colour.",
                                "allowed": ["red", "green"], "usage": "test.colour VALUE", "value": "red"})

    async def test_concurrent_changes_run_one_at_a_time(self):
        """Two changes in flight are applied in order, each seeing the other's result as old value."""
        first = self.scopes.set(self.app.api, "test.colour", ADMIN, "green")
        second = self.scopes.set(self.app.api, "test.colour", ADMIN, "red")
        await defer.gatherResults([first, second])
        self.assertEqual([c[1:3] for c in self.events.changes], [("red", "green"), ("green", "red")])


class FailingListener:
    """A plugin whose scope-changed handler raises."""

    @hookimpl
    def apiserver_scope_changed(self, name, old, new, actor):
        raise RuntimeError("plugin bug")


class FailingListenerTests(unittest.TestCase):
    """A plugin failing in apiserver_scope_changed does not turn a made change into an error."""

    def setUp(self):
        self.colour = Colour()
        self.app, self.events = make_app(temp_dir(self), reactor, extra_plugins=[FailingListener()])
        self.scopes = ScopeRegistry(self.app.storage, self.app.clock, self.app.run_blocking, [self.colour])
        self.app.start_pools()
        self.addCleanup(self.app.stop_pools)

    async def test_change_succeeds_and_is_recorded(self):
        """The set succeeds, is applied and audited, and the plugin's failure is logged."""
        self.assertEqual(await self.scopes.set(self.app.api, "test.colour", ADMIN, "green"), "green")
        self.assertEqual((self.colour.value, len(audit_rows(self.app))), ("green", 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
