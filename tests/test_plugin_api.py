"""The plugin API: its deliberate surface, and each member working against a real application."""

from __future__ import annotations

import pathlib
import re
import threading

import pytest
from twisted.internet import task

import apiserver.modules
from apiserver.config import ConfigError, Key, Section, parse_str
from apiserver.context import Gate
from apiserver.errors import AuthenticationFailed, InvalidArgument, NotFound
from apiserver.hookspecs import hookimpl
from apiserver.plugin_api import PluginApi, PluginState, StoredScope
from apiserver.storage import Storage
from apiserver.testing import PluginTestApp, wait
from apiserver.types import INT, TypeSpec
from tests.conftest import run_in_threads
from tests.storage.support import storage  # noqa: F401 - the fixture

#: The plugin API.  Changing this list changes what plugins may rely on: do it on purpose,
#: document it in docs/plugins.md and say so in the release notes.
API_MEMBERS = [
    "clock", "config", "every", "fire", "get_email", "get_identity", "get_scope", "invalidate_ip_restrictions",
    "logger", "recover_ui_password", "run_blocking", "state",
]
STATE_MEMBERS = ["delete", "get", "keys", "plugin", "set"]


def _public(obj) -> list:
    return sorted(name for name in dir(obj) if not name.startswith("_"))


def test_plugin_api_members_are_exactly_these():
    """PluginApi exposes this list and nothing else; a change to it must be deliberate."""
    assert _public(PluginApi) == API_MEMBERS


def test_state_store_members_are_exactly_these(tmp_path):
    """PluginState exposes get/set/delete/keys and its namespace."""
    storage = Storage.from_url(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert _public(PluginState(storage, "x", task.Clock())) == STATE_MEMBERS


def test_blocking_members_say_so():
    """Members that touch the database start their docstring with 'Blocking.'."""
    for member in (PluginApi.get_identity, PluginApi.get_email, PluginApi.recover_ui_password, PluginState.get,
                   PluginState.set, PluginState.delete, PluginState.keys, StoredScope.current):
        assert member.__doc__.startswith("Blocking."), member.__qualname__


class Hello:
    """A test plugin with a config section, a scope and an event hook, written on the API only."""

    def __init__(self):
        self.events = []

    @hookimpl
    def apiserver_config_sections(self):
        return [Section("hello", "The hello test plugin.", (Key("greeting", parse_str, "hello", "What it says."),))]

    @hookimpl
    def apiserver_add_scopes(self, api):
        return [Count(api)]

    @hookimpl
    def apiserver_site_added(self, api, site):
        self.events.append((api, site, threading.current_thread() is threading.main_thread()))


class Count(StoredScope):
    plugin = "hello"
    name = "hello.count"
    type = "int"
    spec = TypeSpec(INT)
    default = 3
    help = "How many."

    def check(self, value):
        if value < 0:
            raise InvalidArgument(f"{self.name} must not be negative")


@pytest.fixture
def hello(tmp_path):
    """(test app, plugin): an application with the Hello plugin, greeting configured."""
    plugin = Hello()
    with PluginTestApp(tmp_path, plugins=[plugin], sections={"hello": {"greeting": "hi"}}) as app:
        yield app, plugin


def test_config_reads_plugin_and_core_keys(hello):
    """api.config gives validated values of the plugin's own section and of the core's."""
    app, _plugin = hello
    assert app.api.config("hello", "greeting") == "hi"
    assert app.api.config("auth", "min_pw_length") == 7
    with pytest.raises(ConfigError, match=r"\[hello\] nope"):
        app.api.config("hello", "nope")


def test_clock_is_the_applications_clock(hello):
    """api.clock is the injected clock: advancing it moves what the API reports."""
    app, _plugin = hello
    before = app.api.clock.seconds()
    app.clock.advance(60)
    assert app.api.clock.seconds() == before + 60


def test_run_blocking_runs_off_the_reactor_thread(hello):
    """api.run_blocking runs the function on the pool and fires with its result."""
    app, _plugin = hello
    def doubled_where(x):
        return x * 2, threading.current_thread() is threading.main_thread()

    assert wait(app.api.run_blocking(doubled_where, 21)) == (42, False)


def test_every_runs_on_the_pool_on_the_clock_and_never_loses_a_due_time(hello):
    """api.every: a run one interval from now, off the reactor thread; one due while it runs runs after it."""
    app, _plugin = hello
    release, runs = threading.Event(), []

    def sweep(label):  # Blocking
        release.wait(10)
        runs.append((label, threading.current_thread() is threading.main_thread()))

    timer = app.api.every(3600, sweep, "hello")
    try:
        app.clock.advance(3599)
        assert not timer.busy
        app.clock.advance(1)            # the first run, held on the pool
        app.clock.advance(3600)         # the next is due meanwhile
        release.set()
        wait(timer.idle())
        assert runs == [("hello", False), ("hello", False)]
    finally:
        wait(timer.stop())


def test_logger_is_namespaced_per_plugin(hello):
    """api.logger names its namespace after the plugin and refuses odd names."""
    app, _plugin = hello
    assert app.api.logger("hello").namespace == "apiserver.plugins.hello"
    with pytest.raises(ValueError):
        app.api.logger("../etc")


def test_fire_reaches_event_hooks_with_the_api(hello):
    """api.fire calls every implementation of the event on the reactor thread, passing api."""
    app, plugin = hello
    app.api.fire("apiserver_site_added", site="example.net", actor=app.admin)
    assert plugin.events == [(app.api, "example.net", True)]


def test_accounts_lookups(hello):
    """get_identity finds accounts (NotFound otherwise) and get_email reads their address."""
    app, _plugin = hello
    owner = app.add_site("example.com", "owner", email="owner@example.com")
    found = app.blocking(app.api.get_identity, "example.com")
    assert (found.username, found.site, found.user_id) == ("owner", "example.com", owner.user_id)
    assert app.blocking(app.api.get_identity, None) == app.admin
    assert app.blocking(app.api.get_email, found) == "owner@example.com"
    with pytest.raises(NotFound, match="no site"):
        app.blocking(app.api.get_identity, "missing.example")


def test_recover_ui_password_needs_the_browsers_tag(hello):
    """A UI session's password comes back with its esprit_tag only (single sign-on for plugins)."""
    app, _plugin = hello
    owner = app.add_site("example.com", "owner", password="site-password")
    sid, tag = wait(app.app.accounts.start_ui_session(owner, "site-password"))
    assert app.blocking(app.api.recover_ui_password, sid, tag) == "site-password"
    _other_sid, other_tag = wait(app.app.accounts.start_ui_session(owner, "site-password"))
    assert app.blocking(app.api.recover_ui_password, sid, other_tag) is None
    assert app.blocking(app.api.recover_ui_password, "0" * 64, tag) is None


def test_invalidate_ip_restrictions_makes_the_next_login_read_them(hello):
    """After a plugin changes an account's restrictions behind the cache, invalidating applies
    them here at once and draws the new generation other nodes look for."""
    app, _plugin = hello
    owner = app.add_site("example.com", "owner")
    restrictions = app.app.gatekeeper.ip_restrictions
    assert wait(restrictions.check(owner, Gate.SOAP, "198.51.100.7")) is None  # no entries: allowed, now cached
    def insert_behind_the_cache():  # as another node would: straight into the table
        with app.app.storage.write() as conn:
            conn.execute(app.app.storage.tables.ip_restrictions.insert().values(
                user_id=owner.user_id, network="192.0.2.0/24", gate=None))

    app.blocking(insert_behind_the_cache)
    assert wait(restrictions.check(owner, Gate.SOAP, "198.51.100.7")) is None  # still the cached answer
    generation = app.app.ip_restrictions.rows.generation
    before = app.blocking(generation, owner.user_id)
    changed = app.api.invalidate_ip_restrictions(owner)
    with pytest.raises(AuthenticationFailed):
        wait(restrictions.check(owner, Gate.SOAP, "198.51.100.7"))
    wait(changed)
    assert app.blocking(generation, owner.user_id) != before  # what tells other nodes to read them again


def test_stored_scope_persists_and_validates(tmp_path):
    """A StoredScope converts cpcmd's text, refuses bad values and keeps its value across restarts."""
    with PluginTestApp(tmp_path, plugins=[Hello()]) as app:
        assert wait(app.api.get_scope("hello.count")) == 3
        app.call(app.admin, "scope_set", "hello.count", "5")
        assert wait(app.api.get_scope("hello.count")) == 5
        with pytest.raises(InvalidArgument, match="must not be negative"):
            app.call(app.admin, "scope_set", "hello.count", -1)
        with pytest.raises(InvalidArgument, match="hello.count"):
            app.call(app.admin, "scope_set", "hello.count", "many")
    with PluginTestApp(tmp_path, plugins=[Hello()]) as again:
        assert wait(again.api.get_scope("hello.count")) == 5


def test_state_is_cached_per_namespace(hello):
    """api.state returns one store per plugin name and refuses names that are not plain words."""
    app, _plugin = hello
    assert app.api.state("hello") is app.api.state("hello")
    assert app.api.state("hello").plugin == "hello"
    for bad in ("", "Hello", "a b", "x" * 101, None):
        with pytest.raises(ValueError):
            app.api.state(bad)


# --- the state store on every backend -----------------------------------------------------


def test_state_round_trips_json_values(storage):
    """Every JSON type comes back as stored; set replaces; a missing key gives the default."""
    state = PluginState(storage, "hello", task.Clock())
    values = {"text": "ünïcode ✓", "int": 2**53, "float": 1.5, "bool": False, "null": None,
              "list": [1, "two", [3]], "dict": {"a": {"b": [True]}}, "big": "x" * 100_000}
    for key, value in values.items():
        state.set(key, value)
    assert {key: state.get(key) for key in values} == values
    state.set("int", 7)
    assert state.get("int") == 7
    state.set("Text", "upper")  # keys compare exactly, case included
    assert (state.get("Text"), state.get("text")) == ("upper", "ünïcode ✓")
    state.delete("Text")
    assert state.get("missing", "default") == "default"
    assert state.keys() == sorted(values)
    assert state.keys("b") == ["big", "bool"]


def test_state_namespaces_are_separate(storage):
    """Two plugins' stores never see each other's keys."""
    clock = task.Clock()
    one, other = PluginState(storage, "one", clock), PluginState(storage, "other", clock)
    one.set("k", 1)
    other.set("k", 2)
    assert (one.get("k"), other.get("k")) == (1, 2)
    assert one.delete("k") is True and one.delete("k") is False
    assert (one.get("k"), other.get("k"), one.keys(), other.keys()) == (None, 2, [], ["k"])


@pytest.mark.parametrize("value", [object(), float("nan"), {1: {2}}])
def test_state_refuses_values_json_cannot_hold(storage, value):
    """A value JSON cannot represent is refused before anything is stored."""
    state = PluginState(storage, "hello", task.Clock())
    with pytest.raises((TypeError, ValueError)):
        state.set("k", value)
    assert state.keys() == []


@pytest.mark.parametrize("key", ["", "k" * 201, 5, None])
def test_state_refuses_bad_keys(storage, key):
    """Keys are non-empty strings of at most 200 characters."""
    with pytest.raises(ValueError):
        PluginState(storage, "hello", task.Clock()).set(key, 1)


def test_concurrent_first_writes_of_one_key_all_succeed(storage):
    """Threads racing to create the same key do not fail: one insert wins, the others update."""
    state = PluginState(storage, "hello", task.Clock())
    errors = run_in_threads(state.set, [("race", n) for n in range(4)])
    assert errors == [] and state.get("race") in range(4)


#: what built-in modules must ask the plugin API for, not the application (the API offers it)
APP_REACHES_THE_API_OFFERS = re.compile(
    r"\b(?:ctx|self)\.app\.(?:run_blocking|fire|clock)\b|\b(?:ctx|self)\.app\.config\.get\(|ip_restrictions\.invalidate\("
    r"|\b(?:ctx|self)\.app\.accounts\.(?:identity_for|get_email)\b|\b(?:ctx|self)\.app\.scopes\.get\(")


def test_builtin_modules_use_the_api_where_it_offers_the_operation():
    """apiserver/modules/*.py run blocking work, fire events, read their module's config and look
    up accounts through ctx.api / self.api, as a plugin would."""
    folder = pathlib.Path(apiserver.modules.__file__).parent
    found = [f"{path.name}:{number}: {line.strip()}"
             for path in sorted(folder.glob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if APP_REACHES_THE_API_OFFERS.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("event, kwargs, error", [
    ("apiserver_site_addd", {"site": "example.net", "actor": None}, "apiserver_site_addd is not an event hook"),
    ("apiserver_add_modules", {}, "apiserver_add_modules is not an event hook"),
    ("apiserver_startup", {}, "apiserver_startup is not an event hook"),
    ("apiserver_site_added", {"site": "example.net"}, "apiserver_site_added takes actor, site; got site"),
    ("apiserver_site_added", {"site": "example.net", "actor": None, "domain": "x"},
     "apiserver_site_added takes actor, site; got actor, domain, site"),
])
def test_fire_refuses_what_is_not_an_event_or_its_arguments(hello, event, kwargs, error):
    """api.fire names a misspelled or non-event hook, or wrong arguments, instead of calling plugins with them."""
    app, plugin = hello
    with pytest.raises(ValueError) as caught:
        app.api.fire(event, **kwargs)
    assert str(caught.value) == error
    assert plugin.events == []
