"""Dispatch: names in every spelling, argument binding, role checks, the around-call hook."""

import pluggy
import pytest
from twisted.internet import defer

from apiserver import dispatch, hookspecs
from apiserver.context import CallContext, Gate, Identity
from apiserver.dispatch import Registry, bind_arguments
from apiserver.errors import Denied, InvalidArgument, ServerError, UnknownMethod
from apiserver.hookspecs import hookimpl
from apiserver.module import Module, Role, export
from tests.middleware.support import ApiStub


class Greeter(Module):
    """A module for dispatch tests."""

    name = "greeter"

    @export(Role.ALL, blocking=False)
    def say_hello(self, ctx, who: str, times: int = 1) -> list[str]:
        """Greet."""
        return [f"hello {who}"] * times

    @export(Role.ADMIN, blocking=False)
    def secret(self, ctx) -> str:
        """Admin only."""
        return "s"

    @export(Role.ALL, blocking=False)
    def broken(self, ctx) -> str:
        """Raises a non-API error."""
        raise KeyError("internal detail /etc/shadow")

    @export(Role.ALL)
    def on_pool(self, ctx, n: int) -> int:
        """Runs where blocking functions run."""
        return n * 2


class FakeApp:
    """Just what a call needs: the ``apiserver_call`` hook with the built-in dispatcher, and the
    internal path it reads (the registry and a place to run blocking functions)."""

    def __init__(self, *plugins):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(dispatch)
        for plugin in plugins:
            self.pm.register(plugin)
        self.api = ApiStub(self)  # the built-in dispatcher reads self.registry and self.run_blocking
        self.registry = Registry([Greeter(self.api)], call_hook=self.pm.hook.apiserver_call)
        self.blocking_calls = 0
        self.accounts_seen = []

    def run_blocking(self, fn, *args, **kwargs):
        self.blocking_calls += 1
        return defer.maybeDeferred(fn, *args, **kwargs)

    def run_blocking_for(self, account, fn, *args, **kwargs):
        self.accounts_seen.append(account)
        return self.run_blocking(fn, *args, **kwargs)


def ctx_for(app, role):
    identity = Identity(role=role, user_id=1, username="u", site_id=1, site="example.com")
    return CallContext(api=app.api, identity=identity,
                       gate=Gate.SOAP, client_address="127.0.0.1")


def result_of(d):
    out = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_every_spelling_finds_the_function():
    """SOAP, XML-RPC and cpcmd names resolve to the same function."""
    registry = FakeApp().registry
    names = ["greeter_say_hello", "greeter.say_hello", "greeter:say-hello", "greeter:say_hello"]
    assert {registry.lookup(n).spec.operation for n in names} == {"greeter_say_hello"}


def test_unknown_name_suggests_closest():
    """An unknown function gives UnknownMethod with the closest names."""
    with pytest.raises(UnknownMethod, match="greeter_say_hello"):
        FakeApp().registry.lookup("greeter_say_helo")


@pytest.mark.parametrize("typo, suggestion", [("greeter.say_helo", "did you mean greeter.say_hello,"),
                                              ("greeter:say-helo", "did you mean greeter:say-hello,"),
                                              ("greeter_say_helo", "did you mean greeter_say_hello,")])
def test_suggestions_are_spelt_as_the_caller_spells(typo, suggestion):
    """A dotted XML-RPC typo is answered with the dotted name, a cpcmd one with the command name."""
    with pytest.raises(UnknownMethod) as caught:
        FakeApp().registry.lookup(typo)
    assert suggestion in str(caught.value), str(caught.value)


def test_bind_positional_named_and_defaults():
    """Positional and named values bind to parameters; omitted or null optionals take defaults."""
    spec = FakeApp().registry.lookup("greeter_say_hello").spec
    assert bind_arguments(spec, ["bob"]) == {"who": "bob", "times": 1}
    assert bind_arguments(spec, ["bob", "3"]) == {"who": "bob", "times": 3}
    assert bind_arguments(spec, [], {"who": "al", "times": None}) == {"who": "al", "times": 1}


@pytest.mark.parametrize("positional, named, message", [
    ([], {}, "missing argument 'who'"),
    (["a", 1, 2], {}, "at most 2"),
    (["a"], {"nope": 1}, "unknown argument 'nope'"),
    (["a"], {"who": "b"}, "given twice"),
    (["a", "many"], {}, "argument 'times'"),
])
def test_bind_errors_name_the_argument(positional, named, message):
    """Binding mistakes raise InvalidArgument that names the argument."""
    spec = FakeApp().registry.lookup("greeter_say_hello").spec
    with pytest.raises(InvalidArgument, match=message):
        bind_arguments(spec, positional, named)


def test_role_check_denies():
    """A role the declaration does not allow gets Client.Denied, and the function never runs."""
    app = FakeApp()
    entry = app.registry.lookup("greeter_secret")
    with pytest.raises(Denied, match="appliance"):
        result_of(app.registry.invoke(ctx_for(app, Role.SITE), entry, {}))
    assert result_of(app.registry.invoke(ctx_for(app, Role.ADMIN), entry, {})) == "s"


def test_internal_errors_are_hidden():
    """A non-API exception becomes Server.Internal without the exception's text."""
    app = FakeApp()
    with pytest.raises(ServerError) as info:
        result_of(app.registry.invoke(ctx_for(app, Role.USER), app.registry.lookup("greeter_broken"), {}))
    assert "shadow" not in str(info.value)


def test_blocking_functions_go_to_the_pool():
    """Functions declared blocking run on the pool within their site's share; non-blocking ones do not."""
    app = FakeApp()
    on_pool = app.registry.lookup("greeter_on_pool")
    assert result_of(app.registry.invoke(ctx_for(app, Role.USER), on_pool, {"n": 4})) == 8
    result_of(app.registry.invoke(ctx_for(app, Role.USER), app.registry.lookup("greeter_say_hello"),
                                {"who": "x", "times": 1}))
    assert app.blocking_calls == 1 and app.accounts_seen == [("site", "example.com")]


def test_wrapper_hook_sees_and_changes_calls():
    """An around-call wrapper can rewrite arguments and see the result Deferred."""
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def apiserver_call(self, ctx, function, args):
            args["times"] = 2
            result = yield
            result.addCallback(lambda value: seen.append(value) or value)
            return result

    app = FakeApp(Wrapper())
    entry = app.registry.lookup("greeter_say_hello")
    assert result_of(app.registry.invoke(ctx_for(app, Role.USER), entry, {"who": "a", "times": 1})) == ["hello a"] * 2
    assert seen == [["hello a", "hello a"]]


def test_duplicate_module_names_refused():
    """Two modules with one name stop start-up."""
    app = FakeApp()
    with pytest.raises(ValueError, match="greeter"):
        Registry([Greeter(app.api), Greeter(app.api)])


def test_faults_never_repeat_secret_values():
    """A wrongly typed password argument is refused without echoing the value."""

    class Secretive(Module):
        name = "secretive"

        @export(Role.ALL, blocking=False)
        def login(self, ctx, password: str, api_key: str = "") -> bool:
            """Takes secrets."""
            return True

    spec = Secretive.functions()[0]
    for named in ({"password": ["hunter2-secret"]}, {"password": "x", "api_key": {"k": "hunter2-secret"}}):
        with pytest.raises(InvalidArgument) as info:
            bind_arguments(spec, [], named)
        assert "hunter2" not in str(info.value) and "got a " in str(info.value)
