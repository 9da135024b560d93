"""The built-in scopes on a real config file, state directory and SQLite database."""

import json
import os
import socket

from twisted.internet import reactor
from twisted.trial import unittest

from apiserver.config import load_config
from apiserver.errors import InvalidArgument, NotFound
from apiserver.scopes import MASK
from tests.scopes.support import ADMIN, CONFIG_TEXT, audit_rows, make_app, temp_dir


class BuiltinScopeTests(unittest.TestCase):
    """Each built-in scope: get, set, info, refusals, audit and hook."""

    def setUp(self):
        self.directory = temp_dir(self)
        self.app, self.events = make_app(self.directory, reactor)
        self.app.start_pools()
        self.addCleanup(self.app.stop_pools)
        self.config_path = os.path.join(self.directory, "config.ini")

    def read_config(self) -> str:
        with open(self.config_path, encoding="utf-8") as fh:
            return fh.read()

    async def refused(self, name, *args) -> str:
        """Set a scope expecting InvalidArgument; return its message."""
        with self.assertRaises(InvalidArgument) as caught:
            await self.app.scopes.set(self.app.api, name, ADMIN, *args)
        return str(caught.exception)

    # --- cp.config ----------------------------------------------------------------------------
    async def test_cp_config_set_edits_file_and_applies_runtime_key(self):
        """A run-time key is written to config.ini (comments kept) and applies at once."""
        await self.app.scopes.set(self.app.api, "cp.config", ADMIN, "frontend", "https_only", True)
        text = self.read_config()
        self.assertIn("https_only = true", text)
        self.assertIn("; apiserver test config -- comments must survive edits", text)
        self.assertIn("enabled = true   ; the API toggle", text)
        self.assertIs(self.app.config.get("frontend", "https_only"), True)
        self.assertIs(load_config(self.config_path).get("frontend", "https_only"), True)
        self.assertEqual(await self.app.scopes.get(self.app.api, "cp.config", "frontend", "https_only"), True)
        self.assertEqual(audit_rows(self.app), [("cp.config frontend https_only", "appliance admin", "false", "true")])
        self.assertEqual(self.events.changes, [("cp.config frontend https_only", False, True, ADMIN)])

    async def test_cp_config_startup_key_waits_for_restart(self):
        """A start-up key is written to the file but the running server keeps its value."""
        await self.app.scopes.set(self.app.api, "cp.config", ADMIN, "frontend", "http_port", "8082")
        self.assertEqual(load_config(self.config_path).get("frontend", "http_port"), 8082)
        self.assertEqual(self.app.config.get("frontend", "http_port"), 2082)
        self.assertEqual(await self.app.scopes.get(self.app.api, "cp.config", "frontend", "http_port"), 8082)

    async def test_cp_config_get_whole_and_section_masks_secrets(self):
        """get shows every section, or one, with secret keys masked."""
        await self.app.scopes.set(self.app.api, "cp.config", ADMIN, "mail", "password", "hunter2-smtp")
        everything = await self.app.scopes.get(self.app.api, "cp.config")
        self.assertEqual(everything["soap"]["enabled"], True)
        self.assertEqual(everything["anvil"]["whitelist"], "127.0.0.1")
        self.assertEqual(everything["mail"]["password"], MASK)
        self.assertEqual(everything["auth"]["secret"], "")
        self.assertEqual((await self.app.scopes.get(self.app.api, "cp.config", "mail"))["password"], MASK)
        self.assertEqual(await self.app.scopes.get(self.app.api, "cp.config", "mail", "password"), MASK)
        self.assertNotIn("hunter2", repr(audit_rows(self.app)) + repr(self.events.changes))
        self.assertIn("password = hunter2-smtp", self.read_config())

    async def test_cp_config_masks_urls_that_may_hold_passwords(self):
        """Redis URLs (redis://:password@host) are masked in get and audit like [db] url."""
        for section in ("anvil", "session"):
            await self.app.scopes.set(self.app.api, "cp.config", ADMIN, section, "redis_url", "redis://:hunter2-redis@127.0.0.1:6379/1")
            self.assertEqual(await self.app.scopes.get(self.app.api, "cp.config", section, "redis_url"), MASK)
            self.assertEqual((await self.app.scopes.get(self.app.api, "cp.config"))[section]["redis_url"], MASK)
        self.assertNotIn("hunter2", repr(audit_rows(self.app)) + repr(self.events.changes))

    async def test_cp_config_refuses_bad_values_with_reason(self):
        """Bad types, unknown keys, protected keys and start-up breakers leave config.ini untouched."""
        before = self.read_config()
        self.assertIn("[anvil] limit: expected a whole number, got 'lots'",
                      await self.refused("cp.config", "anvil", "limit", "lots"))
        self.assertIn("cannot be changed by a scope", await self.refused("cp.config", "auth", "secret", "x"))
        self.assertIn("single line", await self.refused("cp.config", "mail", "sender", "a\n[soap]\nenabled=false"))
        self.assertIn("would not start", await self.refused("cp.config", "frontend", "https_port", "2082"))
        self.assertIn("tls_certificate and tls_key must be set together",
                      await self.refused("cp.config", "frontend", "tls_certificate", "missing.pem"))
        self.assertIn("expected 3 value(s)", await self.refused("cp.config", "frontend", "https_only"))
        self.assertIn("expected a single value, got a hash",
                      await self.refused("cp.config", "mail", "sender", {"a": 1}))
        self.assertIn("at most 4096 characters", await self.refused("cp.config", "mail", "sender", "x" * 5000))
        self.assertIn("SECTION must be a name", await self.refused("cp.config", ["soap"], "enabled", True))
        self.assertEqual(self.read_config(), before)
        self.assertEqual([n for n in os.listdir(self.directory) if n.endswith(".tmp")], [])
        self.assertEqual(audit_rows(self.app), [])

    async def test_cp_config_refuses_listeners_that_cannot_listen(self):
        """A bind address not of this host, or a port another program listens on, would stop the next start: refused."""
        before = self.read_config()
        self.assertIn("[frontend] bind: cannot listen on 192.0.2.1",
                      await self.refused("cp.config", "frontend", "bind", "192.0.2.1"))
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        self.assertIn(f"[frontend] https_port: cannot listen on 127.0.0.1 port {port}",
                      await self.refused("cp.config", "frontend", "https_port", str(port)))
        self.assertEqual(self.read_config(), before)
        # the ports held stay allowed
        await self.app.scopes.set(self.app.api, "cp.config", ADMIN, "frontend", "bind", "0.0.0.0")
        self.assertIn("bind = 0.0.0.0", self.read_config())

    async def test_cp_config_refuses_a_cli_socket_that_cannot_listen(self):
        """A cli_socket naming a file that is not a socket (the database!) or too long a path is refused."""
        before = self.read_config()
        self.assertIn("exists and is not a socket",
                      await self.refused("cp.config", "core", "cli_socket", "apiserver.db"))
        self.assertIn("longer than a UNIX socket path",
                      await self.refused("cp.config", "core", "cli_socket", "s" * 120))
        self.assertEqual(self.read_config(), before)
        await self.app.scopes.set(self.app.api, "cp.config", ADMIN, "core", "cli_socket", "other.sock")
        self.assertIn("cli_socket = other.sock", self.read_config())

    async def test_cp_config_unknown_section_or_key(self):
        """Reading or setting what does not exist is NotFound naming it."""
        with self.assertRaises(NotFound):
            await self.app.scopes.get(self.app.api, "cp.config", "nosuch")
        with self.assertRaises(NotFound) as caught:
            await self.app.scopes.set(self.app.api, "cp.config", ADMIN, "frontend", "nope", "1")
        self.assertIn("[frontend] nope: no such key", str(caught.exception))
        self.assertEqual(self.read_config(), CONFIG_TEXT)

    # --- cp.api / cp.debug -------------------------------------------------------------------
    async def test_cp_api_toggles_soap_enabled_and_persists(self):
        """cp.api false turns the API off at once and in config.ini."""
        self.assertIs(await self.app.scopes.get(self.app.api, "cp.api"), True)
        await self.app.scopes.set(self.app.api, "cp.api", ADMIN, "false")
        self.assertIs(self.app.config.get("soap", "enabled"), False)
        self.assertIn("enabled = false   ; the API toggle", self.read_config())
        self.assertIs(await self.app.scopes.get(self.app.api, "cp.api"), False)
        self.assertEqual(self.events.changes, [("cp.api", True, False, ADMIN)])
        self.assertIn("cp.api: expected boolean", await self.refused("cp.api", "maybe"))

    async def test_cp_debug_switches_debug_and_persists(self):
        """cp.debug true sets [core] debug live (observers see it) and in the file."""
        seen = []
        self.app.config.observe(lambda section, key, old, new: seen.append((section, key, new)))
        await self.app.scopes.set(self.app.api, "cp.debug", ADMIN, True)
        self.assertEqual(seen, [("core", "debug", True)])
        self.assertIs(load_config(self.config_path).get("core", "debug"), True)
        info = await self.app.scopes.info(self.app.api, "cp.debug")
        self.assertEqual((info["type"], info["default"], info["value"], info["allowed"]),
                         ("bool", False, True, ["true", "false"]))

    # --- Bootstrapper ---------------------------------------------------------------------------
    async def test_cp_bootstrapper_typed_vars_survive_in_state_dir(self):
        """A variable is stored (0600 JSON in state_dir), read back typed, and unknown ones are refused."""
        self.assertIs(await self.app.scopes.get(self.app.api, "cp.bootstrapper", "has_low_memory"), False)
        await self.app.scopes.set(self.app.api, "cp.bootstrapper", ADMIN, "has_low_memory", "true")
        path = os.path.join(self.directory, "state", "bootstrapper.json")
        with open(path, encoding="utf-8") as fh:
            self.assertIs(json.load(fh)["has_low_memory"], True)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertIs((await self.app.scopes.get(self.app.api, "cp.bootstrapper"))["has_low_memory"], True)
        with self.assertRaises(NotFound) as caught:
            await self.app.scopes.set(self.app.api, "cp.bootstrapper", ADMIN, "postfix_ssl", True)
        self.assertIn("unknown variable 'postfix_ssl'", str(caught.exception))
        self.assertIn("cp.bootstrapper has_low_memory: expected boolean",
                      await self.refused("cp.bootstrapper", "has_low_memory", "sometimes"))
        self.assertEqual(audit_rows(self.app), [("cp.bootstrapper has_low_memory", "appliance admin", "false", "true")])

    async def test_mail_insecure_ssl_sets_three_mail_vars(self):
        """mail.insecure-ssl sets postfix, dovecot and haproxy insecure_ssl together."""
        await self.app.scopes.set(self.app.api, "mail.insecure-ssl", ADMIN, True)
        values = await self.app.scopes.get(self.app.api, "cp.bootstrapper")
        self.assertEqual([values[v] for v in ("postfix_insecure_ssl", "dovecot_insecure_ssl", "haproxy_insecure_ssl")],
                         [True, True, True])
        self.assertIs(values["apache_insecure_ssl"], False)
        await self.app.scopes.set(self.app.api, "cp.bootstrapper", ADMIN, "dovecot_insecure_ssl", False)
        self.assertIs(await self.app.scopes.get(self.app.api, "mail.insecure-ssl"), False)
        self.assertEqual(self.events.changes[0], ("mail.insecure-ssl", False, True, ADMIN))

    async def test_apache_scopes(self):
        """apache.dav and apache.insecure-ssl are booleans over their own Bootstrapper variables."""
        await self.app.scopes.set(self.app.api, "apache.dav", ADMIN, "true")
        await self.app.scopes.set(self.app.api, "apache.insecure-ssl", ADMIN, 1)
        values = await self.app.scopes.get(self.app.api, "cp.bootstrapper")
        self.assertEqual((values["apache_dav_enabled"], values["apache_insecure_ssl"]), (True, True))
        self.assertIn("apache.dav: expected boolean", await self.refused("apache.dav", "[a,b]"))

    async def test_apache_dav_switches_dav_enabled_at_once(self):
        """apache.dav is [dav] enabled: live at once, in config.ini for the next start."""
        self.assertIs(await self.app.scopes.get(self.app.api, "apache.dav"), True)  # /dav/ is served by default
        await self.app.scopes.set(self.app.api, "apache.dav", ADMIN, False)
        self.assertIs(self.app.config.get("dav", "enabled"), False)
        self.assertIs(load_config(self.app.config.path).get("dav", "enabled"), False)
        self.assertIs((await self.app.scopes.get(self.app.api, "cp.bootstrapper"))["apache_dav_enabled"], False)
        await self.app.scopes.set(self.app.api, "apache.dav", ADMIN, "true")
        self.assertIs(self.app.config.get("dav", "enabled"), True)

    # --- auth.geoip-key -------------------------------------------------------------------------
    async def test_geoip_key_hash_stored_and_never_shown_in_full(self):
        """The hash (or its ApisCP spelling) is stored in [geoip]; get and audit mask the key."""
        await self.app.scopes.set(self.app.api, "auth.geoip-key", ADMIN, "[id:1234,key:Secret_Licence_Key]")
        self.assertEqual(await self.app.scopes.get(self.app.api, "auth.geoip-key"), {"id": 1234, "key": MASK + "_Key"})
        self.assertEqual((self.app.config.get("geoip", "account_id"), self.app.config.get("geoip", "license_key")),
                         (1234, "Secret_Licence_Key"))
        self.assertIn("license_key = Secret_Licence_Key", self.read_config())
        self.assertNotIn("Secret_Licence", repr(audit_rows(self.app)) + repr(self.events.changes))
        await self.app.scopes.set(self.app.api, "auth.geoip-key", ADMIN, {"id": 99, "key": "other-key-name"})
        self.assertEqual(self.app.config.get("geoip", "account_id"), 99)
        self.assertEqual(len(audit_rows(self.app)), 2)

    async def test_geoip_key_refusals_never_quote_the_key(self):
        """A refused value is described, not echoed: the licence key never appears in the error."""
        for value in ("Licence_Secret_1", "[id:5,key:Licence_Secret_1", "[id:5,key:Licence_Secret_1,extra:1]",
                      {"id": 5, "key": "Licence_Secret_1", "note": "x"}):
            message = await self.refused("auth.geoip-key", value)
            self.assertNotIn("Licence_Secret", message)
        self.assertIn("got a hash with id, key, note", message)

    async def test_geoip_key_refuses_bad_hashes(self):
        """Wrong shapes, ids and keys are refused with the reason."""
        self.assertIn("expected a hash", await self.refused("auth.geoip-key", "key-name"))
        self.assertIn("expected a hash", await self.refused("auth.geoip-key", {"id": 1}))
        self.assertIn("positive number", await self.refused("auth.geoip-key", "[id:-5,key:abc]"))
        self.assertIn("licence key", await self.refused("auth.geoip-key", {"id": 5, "key": "a b"}))
        self.assertIn("cannot read the hash", await self.refused("auth.geoip-key", "[id:5,key:abc"))
        self.assertEqual(self.read_config(), CONFIG_TEXT)
