"""The misc module: the list of commands and their signatures, from the registry."""

from __future__ import annotations


def test_list_commands_with_and_without_filter(harness):
    """Every built-in command is listed sorted; a glob narrows the list, in either spelling."""
    commands = harness.call(harness.admin, "misc_list_commands")
    assert commands == sorted(commands)
    assert {"auth:restrict-ip", "admin:add-site", "common:whoami", "misc:info", "user:get-users"} <= set(commands)
    assert harness.call(harness.admin, "misc_list_commands", "user:*") == ["user:add", "user:delete", "user:get-users"]
    assert harness.call(harness.admin, "misc_list_commands", "auth_get_*") == [
        "auth:get-api-keys", "auth:get-ip-restrictions", "auth:get-last-login", "auth:get-login-history",
        "auth:get-security-events"]
    assert harness.call(harness.admin, "misc_list_commands", "nothing:*") == []


def test_info_gives_signature_help_and_roles(harness):
    """info describes each matching command with its signature, first help line and roles."""
    [info] = harness.call(harness.admin, "misc_info", "auth:restrict-ip")
    assert info.signature == "auth:restrict-ip(string ip, string|null gate = null): boolean"
    assert info.help.startswith("Allow logins from IP")
    assert info.roles == ["appliance", "site", "user"]
    [hijack] = harness.call(harness.admin, "misc_info", "admin:hijack")
    assert hijack.roles == ["appliance"]
