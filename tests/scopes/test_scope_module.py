"""The scope module through app.call: the argument spellings of SOAP, XML-RPC and cpcmd, and roles."""

from twisted.internet import reactor
from twisted.trial import unittest

from apiserver.context import CallContext, Gate, Identity
from apiserver.errors import Denied, InvalidArgument, NotFound
from apiserver.module import Role
from apiserver.modules.scope import ScopeInfo
from tests.scopes.support import ADMIN, make_app, temp_dir


class ScopeModuleTests(unittest.TestCase):
    """scope_list/get/set/info called like the transports call them."""

    def setUp(self):
        self.app, self.events = make_app(temp_dir(self), reactor)
        self.app.start_pools()
        self.addCleanup(self.app.stop_pools)
        self.ctx = CallContext(self.app.api, ADMIN, Gate.SOAP, "127.0.0.1")

    def call(self, operation, *positional, **named):
        return self.app.call(self.ctx, operation, positional, named)

    async def test_list_with_glob(self):
        """scope:list returns every built-in scope; a glob narrows it."""
        self.assertEqual(await self.call("scope_list"), [
            "apache.dav", "apache.insecure-ssl", "auth.geoip-key", "cp.api", "cp.bootstrapper", "cp.config",
            "cp.debug", "mail.insecure-ssl"])
        self.assertEqual(await self.call("scope:list", "cp.*"),
                         ["cp.api", "cp.bootstrapper", "cp.config", "cp.debug"])

    async def test_positional_variadic_set_and_get(self):
        """scope_set('cp.config', 'frontend', 'https_only', true) binds like PHP and cpcmd send it."""
        self.assertIs(await self.call("scope_set", "cp.config", "frontend", "https_only", True), True)
        self.assertIs(await self.call("scope:get", "cp.config", "frontend", "https_only"), True)
        self.assertIs(await self.call("scope.set", "apache.dav", "true"), True)
        self.assertIs(await self.call("scope_get", "apache.dav", None, None, None), True)

    async def test_list_argument_form(self):
        """All arguments as one list work too: scope_set('cp.config', ['soap', 'enabled', false])."""
        await self.call("scope_set", "cp.config", ["soap", "enabled", False])
        self.assertIs(self.app.config.get("soap", "enabled"), False)
        self.assertIs(await self.call("scope_get", "cp.config", ["soap", "enabled"]), False)

    async def test_named_arguments(self):
        """Named arguments (document/literal SOAP) bind to name and arg1..arg3."""
        await self.call("scope_set", name="cp.bootstrapper", arg1="has_low_memory", arg2=True)
        self.assertIs(await self.call("scope_get", name="cp.bootstrapper", arg1="has_low_memory"), True)

    async def test_info_returns_record(self):
        """scope:info gives a ScopeInfo with value, default, type, help and allowed values."""
        info = await self.call("scope_info", "mail.insecure-ssl")
        self.assertIsInstance(info, ScopeInfo)
        self.assertEqual((info.name, info.type, info.value, info.default, info.allowed, info.usage),
                         ("mail.insecure-ssl", "bool", False, False, ["true", "false"], "mail.insecure-ssl VALUE"))
        self.assertIn("postfix_insecure_ssl", info.help)

    async def test_errors_name_the_problem(self):
        """An unknown scope is NotFound, a missing value InvalidArgument with the usage."""
        with self.assertRaises(NotFound):
            await self.call("scope_get", "cp.nope")
        with self.assertRaises(InvalidArgument) as caught:
            await self.call("scope_set", "cp.config", "frontend", "https_only")
        self.assertIn("cp.config SECTION KEY VALUE", str(caught.exception))

    async def test_site_administrator_is_denied(self):
        """Only the appliance administrator may use scopes."""
        site = Identity(role=Role.SITE, user_id=2, username="admin", site_id=1, site="example.com")
        ctx = CallContext(self.app.api, site, Gate.SOAP, "127.0.0.1")
        with self.assertRaises(Denied):
            await self.app.call(ctx, "scope_set", ["apache.dav", True])
        with self.assertRaises(Denied):
            await self.app.call(ctx, "scope_list")
