"""The example plugin through apiserver's real dispatch and scope registry: declarations, arguments,
roles, faults, its event hook and its scope."""

import pluggy
import pytest
from twisted.internet.task import Clock

import apiserver_example
from apiserver import dispatch, hookspecs
from apiserver.app import Application
from apiserver.config import load_config
from apiserver.context import CallContext, Gate, Identity
from apiserver.dispatch import Registry
from apiserver.errors import Denied, InvalidArgument
from apiserver.module import Role
from apiserver.scopes import ScopeRegistry
from apiserver_example.module import Example, KeyStats
from apiserver_example.scopes import LIMIT_CEILING, MaxTimes
from apiserver_example.state import DEFAULT_MAX_TIMES

ADMIN = Identity(role=Role.ADMIN, user_id=1, username="admin")
SITE_ADMIN = Identity(role=Role.SITE, user_id=2, username="owner", site_id=1, site="example.com")
USER = Identity(role=Role.USER, user_id=3, username="bob", site_id=1, site="example.com")


def make_app() -> Application:
    """An application with only dispatch and the example plugin registered, on a fake clock."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(dispatch, name="apiserver.dispatch")
    pm.register(apiserver_example, name="example")
    pm.check_pending()
    app = Application(load_config(None), Clock(), pm)
    modules = [cls(app) for group in pm.hook.apiserver_add_modules(app=app) for cls in group]
    app.registry = Registry(modules)
    return app


def call(app, identity, name, *positional, **named):
    """Call ``name`` as ``identity`` and return its result (or raise its error) at once."""
    ctx = CallContext(app=app, identity=identity, gate=Gate.SOAP, client_address="127.0.0.1")
    outcome = []
    app.call(ctx, name, positional, named).addBoth(outcome.append)
    assert outcome, f"{name} did not answer synchronously"
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


@pytest.fixture
def app():
    return make_app()


def test_declarations_become_these_signatures():
    """Type hints and roles turn into the signatures cpcmd misc:info and the WSDL use."""
    specs = {f.operation: f for f in Example.functions()}
    assert {op: f.signature() for op, f in specs.items()} == {
        "example_echo": "example:echo(string text, int|null times = 1): list[string]",
        "example_add": "example:add(int a, int b): int",
        "example_is_even": "example:is-even(int number): boolean",
        "example_whoami_role": "example:whoami-role(): string",
        "example_key_stats": "example:key-stats(): KeyStats",
    }
    assert specs["example_whoami_role"].roles is Role.SITE
    assert specs["example_key_stats"].roles is Role.ADMIN
    assert [(name, spec.describe()) for name, spec in specs["example_key_stats"].returns.fields] == [
        ("created", "int"), ("last_owner", "string|null")]


def test_plugin_contributes_the_module(app):
    """apiserver_add_modules returns the Example class, registered under the name example."""
    assert isinstance(app.registry.modules["example"], Example)


def test_echo_repeats_text(app):
    """echo returns the text as many times as asked, in every spelling of its name."""
    assert call(app, USER, "example_echo", "hi", 3) == ["hi", "hi", "hi"]
    assert call(app, USER, "example.echo", text="hi", times=2) == ["hi", "hi"]
    assert call(app, USER, "example:echo", "hi", 0) == []


def test_echo_optional_times_defaults_to_one(app):
    """Leaving times out or sending null gives one copy."""
    assert call(app, SITE_ADMIN, "example_echo", "x") == ["x"]
    assert call(app, SITE_ADMIN, "example_echo", "x", None) == ["x"]


@pytest.mark.parametrize("times", [-1, DEFAULT_MAX_TIMES + 1, 10**9])
def test_echo_refuses_times_out_of_range(app, times):
    """A bad repetition count is a Client.InvalidArgument fault naming the limit."""
    with pytest.raises(InvalidArgument) as caught:
        call(app, USER, "example_echo", "x", times)
    assert caught.value.code == "Client.InvalidArgument"
    assert f"between 0 and {DEFAULT_MAX_TIMES}" in caught.value.message


def test_add_coerces_untyped_numbers(app):
    """Strings from untyped dialects (cpcmd, RPC) become ints; ints stay ints."""
    assert call(app, ADMIN, "example_add", 2, 3) == 5
    assert call(app, ADMIN, "example_add", "40", "2") == 42


@pytest.mark.parametrize("args", [("one", 2), (1,), (1, 2, 3)])
def test_add_refuses_bad_arguments(app, args):
    """A non-number, a missing or an extra argument is Client.InvalidArgument, not a crash."""
    with pytest.raises(InvalidArgument):
        call(app, ADMIN, "example_add", *args)


def test_is_even_answers_a_boolean(app):
    """is_even returns real booleans."""
    assert call(app, USER, "example_is_even", 4) is True
    assert call(app, USER, "example_is_even", "7") is False


def test_whoami_role_for_site_admins(app):
    """A site administrator learns its role and account."""
    assert call(app, SITE_ADMIN, "example_whoami_role") == "site owner@example.com"


@pytest.mark.parametrize("identity", [ADMIN, USER])
def test_whoami_role_denied_to_other_roles(app, identity):
    """The declared role is enforced: others get Client.Denied."""
    with pytest.raises(Denied) as caught:
        call(app, identity, "example_whoami_role")
    assert caught.value.code == "Client.Denied"


def test_key_stats_counts_created_keys(app):
    """The api_key_created hook implementation counts keys; key_stats reports the count."""
    assert call(app, ADMIN, "example_key_stats") == KeyStats(created=0, last_owner=None)
    app.hook.apiserver_api_key_created(app=app, owner=SITE_ADMIN, actor=ADMIN, comment="deploy")
    app.hook.apiserver_api_key_created(app=app, owner=USER, actor=SITE_ADMIN, comment="")
    assert call(app, ADMIN, "example_key_stats") == KeyStats(created=2, last_owner="user bob@example.com")


def test_key_stats_are_per_application(app):
    """Counts of one application do not leak into another one in the same process."""
    app.hook.apiserver_api_key_created(app=app, owner=USER, actor=USER, comment="")
    other = make_app()
    assert call(other, ADMIN, "example_key_stats").created == 0


def test_key_stats_denied_to_site_admins(app):
    """Only the appliance administrator may read the key statistics."""
    with pytest.raises(Denied):
        call(app, SITE_ADMIN, "example_key_stats")


def test_plugin_contributes_the_scope(app):
    """apiserver_add_scopes gives a Scope the real ScopeRegistry accepts, with type, default and help."""
    scopes = [scope for group in app.hook.apiserver_add_scopes(app=app) for scope in group]
    assert ScopeRegistry(app, scopes).names("example.*") == ["example.max-times"]
    info = MaxTimes().describe()
    assert (info["type"], info["default"], info["usage"]) == ("int", DEFAULT_MAX_TIMES, "example.max-times VALUE")
    assert info["help"]


def test_scope_changes_the_echo_limit(app):
    """Setting example.max-times (as cpcmd sends it, a string) moves the limit echo enforces."""
    scope = MaxTimes()
    assert scope.get(app) == DEFAULT_MAX_TIMES
    scope.set(app, ADMIN, "2")
    assert scope.get(app) == 2
    assert call(app, USER, "example_echo", "x", 2) == ["x", "x"]
    with pytest.raises(InvalidArgument, match="between 0 and 2"):
        call(app, USER, "example_echo", "x", 3)


@pytest.mark.parametrize("value", ["many", -1, LIMIT_CEILING + 1, None])
def test_scope_refuses_bad_values_and_keeps_the_old_one(app, value):
    """A value that is not a number in range is Client.InvalidArgument and changes nothing."""
    scope = MaxTimes()
    with pytest.raises(InvalidArgument, match="example.max-times"):
        scope.set(app, ADMIN, value)
    assert scope.get(app) == DEFAULT_MAX_TIMES
