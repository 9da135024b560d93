"""cp.config against a running server: config.ini edited in place (comments kept), refusals, and restarts."""

import pytest

from apiserver.config import load_config
from tests.scopes.clients import CpcmdFailed, cpcmd, soap_post, zeep_service

REMOTE = {"X-Forwarded-For": "192.0.2.10"}
NOTE = "; operator's note: keep this comment\n"


def read(path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_cp_config_edits_file_and_survives_restart(server_factory):
    """cp.config changes are in config.ini with comments kept; they and the other scopes hold after a restart."""
    server = server_factory(https=True)
    with open(server.config_path, "r+", encoding="utf-8") as fh:
        text = fh.read()
        fh.seek(0)
        fh.write(NOTE + text)
    zeep_service(server).scope_set("cp.config", "anvil", "limit", 7)
    cpcmd(server, "scope:set", "cp.config", "frontend", "https_only", "true")
    cpcmd(server, "scope:set", "cp.config", "session", "ttl", "1200")  # a key the file did not have
    cpcmd(server, "scope:set", "cp.bootstrapper", "has_low_memory", "true")
    cpcmd(server, "scope:set", "apache.dav", "true")
    cpcmd(server, "scope:set", "auth.geoip-key", "[id:1234,key:key-name-restart]")
    text = read(server.config_path)
    assert text.startswith(NOTE)
    assert "limit = 7\n" in text and "https_only = true\n" in text
    config = load_config(server.config_path)
    assert (config.get("anvil", "limit"), config.get("frontend", "https_only"),
            config.get("session", "ttl")) == (7, True, 1200)

    server.restart()
    assert soap_post(server.soap_url, "scope_list", headers=REMOTE).status_code == 403  # https_only still on
    assert cpcmd(server, "scope:get", "cp.config", "anvil", "limit") == 7
    assert cpcmd(server, "scope:get", "cp.config", "session")["ttl"] == 1200
    assert read(server.config_path).startswith(NOTE)
    assert cpcmd(server, "scope:get", "cp.bootstrapper", "has_low_memory") is True  # state_dir/bootstrapper.json
    assert cpcmd(server, "scope:get", "apache.dav") is True
    assert cpcmd(server, "scope:get", "auth.geoip-key") == {"id": 1234, "key": "********tart"}


def test_refused_change_leaves_file_and_server_untouched(server_factory):
    """A value that would stop start-up is refused with the reason; config.ini stays byte for byte."""
    server = server_factory(https=True)
    before = read(server.config_path)
    https_port = server.https_url.rsplit(":", 1)[1]
    with pytest.raises(CpcmdFailed) as caught:
        cpcmd(server, "scope:set", "cp.config", "frontend", "http_port", https_port)
    assert "Client.InvalidArgument" in caught.value.stderr and "the server would not start" in caught.value.stderr
    with pytest.raises(CpcmdFailed) as caught:
        cpcmd(server, "scope:set", "cp.config", "frontend", "bind", "not a host!")
    assert "neither an IP address nor a host name" in caught.value.stderr
    assert read(server.config_path) == before
    server.restart()
    assert zeep_service(server).scope_get("cp.config", "frontend", "https_port") == int(https_port)


def test_get_whole_config_masks_secrets(running_server):
    """scope:get cp.config shows every section; secret keys are masked, never the generated secret."""
    whole = cpcmd(running_server, "scope:get", "cp.config")
    assert {"soap", "anvil", "auth", "frontend", "core", "session", "db", "mail", "geoip"} <= set(whole)
    assert whole["frontend"]["http_port"] == int(running_server.url.rsplit(":", 1)[1])
    cpcmd(running_server, "scope:set", "cp.config", "mail", "password", "smtp-pass-123456")
    assert cpcmd(running_server, "scope:get", "cp.config", "mail", "password") == "********"
    assert "smtp-pass-123456" not in repr(zeep_service(running_server).scope_get("cp.config"))
    assert "smtp-pass-123456" in read(running_server.config_path)
