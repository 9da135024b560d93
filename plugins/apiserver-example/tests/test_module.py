"""The example plugin through apiserver's real application (apiserver.testing): declarations,
arguments, roles, faults, its event hook, its scope and its state store."""

import pytest

import apiserver_example
from apiserver.errors import Denied, InvalidArgument
from apiserver.module import Role
from apiserver.testing import PluginTestApp
from apiserver_example.module import Example, KeyStats
from apiserver_example.scopes import DEFAULT_MAX_TIMES, LIMIT_CEILING


@pytest.fixture
def app(tmp_path):
    """A real application on SQLite with the example plugin registered, plus a site and a user."""
    with PluginTestApp(tmp_path, plugins=[apiserver_example]) as test_app:
        test_app.site_admin = test_app.add_site("example.com", "owner")
        test_app.user = test_app.add_user(test_app.site_admin, "bob")
        yield test_app


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
    assert isinstance(app.app.registry.modules["example"], Example)


def test_echo_repeats_text(app):
    """echo returns the text as many times as asked, in every spelling of its name."""
    assert app.call(app.user, "example_echo", "hi", 3) == ["hi", "hi", "hi"]
    assert app.call(app.user, "example.echo", text="hi", times=2) == ["hi", "hi"]
    assert app.call(app.user, "example:echo", "hi", 0) == []


def test_echo_optional_times_defaults_to_one(app):
    """Leaving times out or sending null gives one copy."""
    assert app.call(app.site_admin, "example_echo", "x") == ["x"]
    assert app.call(app.site_admin, "example_echo", "x", None) == ["x"]


@pytest.mark.parametrize("times", [-1, DEFAULT_MAX_TIMES + 1, 10**9])
def test_echo_refuses_times_out_of_range(app, times):
    """A bad repetition count is a Client.InvalidArgument fault naming the limit."""
    with pytest.raises(InvalidArgument) as caught:
        app.call(app.user, "example_echo", "x", times)
    assert caught.value.code == "Client.InvalidArgument"
    assert f"between 0 and {DEFAULT_MAX_TIMES}" in caught.value.message


def test_add_coerces_untyped_numbers(app):
    """Strings from untyped dialects (cpcmd, RPC) become ints; ints stay ints."""
    assert app.call(app.admin, "example_add", 2, 3) == 5
    assert app.call(app.admin, "example_add", "40", "2") == 42


@pytest.mark.parametrize("args", [("one", 2), (1,), (1, 2, 3)])
def test_add_refuses_bad_arguments(app, args):
    """A non-number, a missing or an extra argument is Client.InvalidArgument, not a crash."""
    with pytest.raises(InvalidArgument):
        app.call(app.admin, "example_add", *args)


def test_is_even_answers_a_boolean(app):
    """is_even returns real booleans."""
    assert app.call(app.user, "example_is_even", 4) is True
    assert app.call(app.user, "example_is_even", "7") is False


def test_whoami_role_for_site_admins(app):
    """A site administrator learns its role and account."""
    assert app.call(app.site_admin, "example_whoami_role") == "site owner@example.com"


@pytest.mark.parametrize("who", ["admin", "user"])
def test_whoami_role_denied_to_other_roles(app, who):
    """The declared role is enforced: others get Client.Denied."""
    with pytest.raises(Denied) as caught:
        app.call(getattr(app, who), "example_whoami_role")
    assert caught.value.code == "Client.Denied"


def test_key_stats_count_keys_created_through_the_api(app):
    """Creating keys fires apiserver_api_key_created; the hook counts them in the plugin's state."""
    assert app.call(app.admin, "example_key_stats") == KeyStats(created=0, last_owner=None)
    app.call(app.site_admin, "auth_create_api_key", "deploy")
    app.call(app.user, "auth_create_api_key", "")
    app.settle()
    assert app.call(app.admin, "example_key_stats") == KeyStats(created=2, last_owner="user bob@example.com")


def test_key_stats_survive_a_restart(tmp_path):
    """The count lives in the database: a new application on the same state directory sees it."""
    with PluginTestApp(tmp_path, plugins=[apiserver_example]) as first:
        first.call(first.admin, "auth_create_api_key", "one")
        first.settle()
    with PluginTestApp(tmp_path, plugins=[apiserver_example]) as second:
        assert second.call(second.admin, "example_key_stats").created == 1


def test_key_stats_denied_to_site_admins(app):
    """Only the appliance administrator may read the key statistics."""
    with pytest.raises(Denied):
        app.call(app.site_admin, "example_key_stats")


def test_plugin_contributes_the_scope(app):
    """The scope is in the real registry with its type, default and help."""
    assert app.app.scopes.names("example.*") == ["example.max-times"]
    info = app.call(app.admin, "scope_info", "example.max-times")
    assert (info.type, info.default, info.value, info.usage) == ("int", DEFAULT_MAX_TIMES, DEFAULT_MAX_TIMES,
                                                                 "example.max-times VALUE")
    assert info.help


def test_scope_changes_the_echo_limit(app):
    """Setting example.max-times (as cpcmd sends it, a string) moves the limit echo enforces."""
    app.call(app.admin, "scope_set", "example.max-times", "2")
    assert app.call(app.admin, "scope_get", "example.max-times") == 2
    assert app.call(app.user, "example_echo", "x", 2) == ["x", "x"]
    with pytest.raises(InvalidArgument, match="between 0 and 2"):
        app.call(app.user, "example_echo", "x", 3)


@pytest.mark.parametrize("value", ["many", -1, LIMIT_CEILING + 1])
def test_scope_refuses_bad_values_and_keeps_the_old_one(app, value):
    """A value that is not a number in range is Client.InvalidArgument and changes nothing."""
    with pytest.raises(InvalidArgument, match="example.max-times"):
        app.call(app.admin, "scope_set", "example.max-times", value)
    assert app.call(app.admin, "scope_get", "example.max-times") == DEFAULT_MAX_TIMES
