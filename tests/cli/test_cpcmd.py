"""cpcmd's pure parts: names, URLs, output rendering, filters, fault explanations, config look-up.
The command as a whole runs against a real server in tests/e2e/test_cpcmd_commands.py."""

import datetime
import json

import pytest
import yaml

from apiserver.cli.cpcmd import (
    CallFailed, _explain, command_name, list_filter, main, operation_name, render, socket_path, xmlrpc_endpoint,
)
from apiserver.config import ConfigError


@pytest.mark.parametrize("command, operation", [
    ("auth:restrict-ip", "auth_restrict_ip"), ("auth:restrict_ip", "auth_restrict_ip"),
    ("auth_restrict_ip", "auth_restrict_ip"), ("auth.restrict_ip", "auth.restrict_ip"),
    ("common:whoami", "common_whoami"),
])
def test_operation_name(command, operation):
    """cpcmd spellings become the XML-RPC method name; API spellings pass through."""
    assert operation_name(command) == operation


def test_command_name_inverts_operation_name():
    """Module names never contain '_', so the first '_' separates module and function."""
    assert command_name("auth_remove_ip_restriction") == "auth:remove-ip-restriction"
    assert command_name("whoami") == "whoami"


@pytest.mark.parametrize("url, endpoint", [
    ("https://host:2083", "https://host:2083/xmlrpc"),
    ("https://host:2083/", "https://host:2083/xmlrpc"),
    ("http://host:2082/soap", "http://host:2082/xmlrpc"),
    ("http://host:2082/xmlrpc?authkey=x", "http://host:2082/xmlrpc"),
    ("http://host/prefix/", "http://host/prefix/xmlrpc"),
    ("127.0.0.1:2082", "http://127.0.0.1:2082/xmlrpc"),
])
def test_xmlrpc_endpoint(url, endpoint):
    """Whatever base or API URL is given, cpcmd calls its /xmlrpc (the key is added separately)."""
    assert xmlrpc_endpoint(url) == endpoint


@pytest.mark.parametrize("value, text", [
    ("plain", "plain"), (5, "5"), (1.5, "1.5"), (True, "true"), (False, "false"), (None, ""),
    ([], "[]"), ({"ip": "10.1.2.3", "gate": "UI"}, "ip: 10.1.2.3\ngate: UI"),
])
def test_cli_output(value, text):
    """-o cli: plain values as they are, structures as YAML in their own order."""
    assert render(value, "cli") == text


def test_json_and_yaml_output_round_trip():
    """-o json and -o yaml print the value so it parses back, dates as ISO text in JSON."""
    value = [{"key": "k", "last_used": datetime.datetime(2026, 1, 2, 3, 4, 5), "comment": "é"}]
    assert json.loads(render(value, "json")) == [{"key": "k", "last_used": "2026-01-02T03:04:05", "comment": "é"}]
    assert yaml.safe_load(render(value, "yaml")) == value
    assert render("x", "yaml") == "x\n..."


@pytest.mark.parametrize("text, pattern", [("", None), ("auth", "auth"), ("auth:*", "auth:*"), ("a?c", "a?c")])
def test_list_filter(text, pattern):
    """-l passes its filter as given: the server matches it as misc:list-commands does."""
    assert list_filter(text) == pattern


def test_unknown_method_fault_is_rewritten_to_cpcmd_names():
    """Suggestions come back in module:function-name spelling with a pointer to -l."""
    error = CallFailed("Client.UnknownMethod",
                       "unknown function 'auth:restrict-ipp'; did you mean auth_restrict_ip, auth_get_ip_restrictions?")
    assert _explain(error) == ("Client.UnknownMethod: unknown function 'auth:restrict-ipp'; did you mean "
                               "auth:restrict-ip, auth:get-ip-restrictions? ('cpcmd -l' lists the commands)")
    assert _explain(CallFailed("Client.NotFound", "no site")) == "Client.NotFound: no site"


def test_socket_path_from_config(tmp_path):
    """The socket is [core] cli_socket under state_dir, relative to the config file; plugin sections are ignored."""
    config = tmp_path / "config.ini"
    config.write_text("[core]\nstate_dir = state\ncli_socket = cp.sock\n\n[someplugin]\nkey = 1\n")
    assert socket_path(str(config)) == str(tmp_path / "state" / "cp.sock")


def test_socket_path_from_environment(tmp_path, monkeypatch):
    """$APISERVER_CONFIG is used when --config is not given."""
    config = tmp_path / "c.ini"
    config.write_text("[core]\nstate_dir = /srv/api\n")
    monkeypatch.setenv("APISERVER_CONFIG", str(config))
    assert socket_path(None) == "/srv/api/apiserver.sock"


def test_bad_core_value_names_the_key(tmp_path):
    """A broken [core] value is a ConfigError naming it."""
    config = tmp_path / "c.ini"
    config.write_text("[core]\ndb_threads = many\n")
    with pytest.raises(ConfigError, match=r"\[core\] db_threads"):
        socket_path(str(config))


def test_argument_syntax_error_exits_2_before_connecting(capsys, tmp_path):
    """A malformed argument is reported with its position; no server is needed for that."""
    assert main(["--config", str(tmp_path / "none.ini"), "scope:set", "x", "[a:b"]) == 2
    err = capsys.readouterr().err
    assert "argument 2" in err and "unclosed '['" in err


def test_json_input_errors_name_the_argument(capsys, tmp_path):
    """-i json with invalid JSON names the argument and position."""
    assert main(["-i", "json", "--config", str(tmp_path / "none.ini"), "common:set-email", "{bad"]) == 2
    assert "argument 1 is not JSON" in capsys.readouterr().err


def test_list_and_command_together_is_a_usage_error(capsys):
    """-l FILTER and a command at once is refused with what to type."""
    with pytest.raises(SystemExit) as info:
        main(["-l", "auth", "common:whoami"])
    assert info.value.code == 2
    assert "either -l [FILTER] or a command" in capsys.readouterr().err


def test_url_without_key_is_a_usage_error(capsys, monkeypatch):
    """--url needs --key."""
    monkeypatch.delenv("APISERVER_KEY", raising=False)
    with pytest.raises(SystemExit):
        main(["--url", "http://127.0.0.1:1", "common:whoami"])
    assert "--url needs --key" in capsys.readouterr().err


class ScriptedSocket:
    """A UNIX socket in a thread that records one request line and answers with ``reply``."""

    def __init__(self, path: str, reply: dict):
        import socket
        import threading

        self.request = None
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, args=(reply,), daemon=True)
        self.thread.start()

    def _serve(self, reply: dict) -> None:
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                data += conn.recv(4096)
            self.request = json.loads(data)
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def scripted(tmp_path):
    """``scripted(reply)``: a config whose socket answers ``reply``; returns (config path, server)."""
    servers = []

    def make(reply: dict):
        config = tmp_path / "config.ini"
        config.write_text(f"[core]\nstate_dir = {tmp_path}\n")
        server = ScriptedSocket(str(tmp_path / "apiserver.sock"), reply)
        servers.append(server)
        return str(config), server

    yield make
    for server in servers:
        server.close()


def test_local_request_carries_command_arguments_and_identity(scripted, capsys):
    """The socket request has the command, parsed arguments, site and user; the result is printed."""
    config, server = scripted({"result": [{"ip": "10.1.2.3", "gate": "UI"}]})
    assert main(["--config", config, "-d", "domain.com", "-u", "bob", "auth:restrict-ip", "10.1.2.3", "[a:1]"]) == 0
    server.close()
    assert server.request == {"function": "auth:restrict-ip", "args": ["10.1.2.3", {"a": 1}], "kwargs": {},
                              "site": "domain.com", "user": "bob"}
    assert capsys.readouterr().out == "- ip: 10.1.2.3\n  gate: UI\n"


def test_remote_user_without_domain_is_a_usage_error(capsys):
    """-u over --url needs -d: the user of which site."""
    with pytest.raises(SystemExit):
        main(["--url", "http://127.0.0.1:1", "--key", "k", "-u", "bob", "common:whoami"])
    assert "-u USER needs -d DOMAIN" in capsys.readouterr().err
