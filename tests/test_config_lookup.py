"""Config lookup (--config, $APISERVER_CONFIG, /etc/apiserver, the checkout; never the working
directory), init writing a commented config, secrets kept owner-only, restart-needed keys said so."""

import os
import stat
import subprocess
import sys
import xmlrpc.client

from apiserver import config as config_module
from apiserver.config import BUILTIN_SECTIONS, config_path, load_config
from tests.conftest import APISERVER, ROOT
from tests.ops_support import env


def test_lookup_order_never_uses_the_working_directory(tmp_path, monkeypatch):
    """--config, then $APISERVER_CONFIG, then /etc/apiserver/config.ini, then the checkout's local
    state/config.ini (never the tracked conf/config.ini), then /etc/apiserver/config.ini to be written."""
    system = tmp_path / "etc" / "config.ini"
    monkeypatch.setattr(config_module, "SYSTEM_PATH", str(system))
    monkeypatch.delenv("APISERVER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.ini").write_text("")  # a decoy in the working directory
    assert config_path() == os.path.join(ROOT, "state", "config.ini") == config_module.LOCAL_PATH
    monkeypatch.setattr(config_module, "CHECKOUT_PATH", str(tmp_path / "not-a-checkout" / "config.ini"))
    assert config_path() == str(system)  # installed from a wheel: the system file, which init writes
    monkeypatch.undo()
    monkeypatch.setattr(config_module, "SYSTEM_PATH", str(system))
    monkeypatch.delenv("APISERVER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    system.parent.mkdir()
    system.write_text("")
    assert config_path() == str(system)
    monkeypatch.setenv("APISERVER_CONFIG", "env.ini")
    assert config_path() == str(tmp_path / "env.ini")
    assert config_path("given.ini") == str(tmp_path / "given.ini")


def test_local_cpcmd_finds_the_server_outside_the_checkout(server_factory, tmp_path):
    """cpcmd run from another directory finds the server through $APISERVER_CONFIG."""
    server = server_factory()
    out = subprocess.run([sys.executable, "-m", "apiserver.cli.cpcmd", "common:whoami"], capture_output=True,
                         text=True, cwd=str(tmp_path), env=dict(env(), APISERVER_CONFIG=server.config_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "admin" in out.stdout.lower() or "appliance" in out.stdout.lower(), out.stdout


def test_init_writes_a_commented_owner_only_config_where_none_exists(tmp_path):
    """init with a config path that does not exist writes every key with its help, 0600, then initialises."""
    path = tmp_path / "etc" / "config.ini"
    out = subprocess.run(APISERVER + ["--config", str(path), "init"], capture_output=True, text=True,
                         cwd=str(tmp_path), env=env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()[-1]) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    for section in BUILTIN_SECTIONS:
        assert f"[{section.name}]" in text
        for key in section.keys:
            assert f"; {key.help}" in text and f"\n{key.name} = " in text
    config = load_config(str(path))
    assert config.state_dir == str(tmp_path / "etc" / "state") and os.path.isdir(config.state_dir)


def test_secrets_make_config_owner_only_and_restart_keys_say_so(server_factory):
    """scope:set of a licence key leaves config.ini 0600; a restart-needed key answers so and
    scope:info shows the running and the saved value; service_host applies at once."""
    server = server_factory()
    os.chmod(server.config_path, 0o644)
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    assert api.scope.set("auth.geoip-key", "[id:1234,key:abcdefghijkl]") is True
    assert stat.S_IMODE(os.stat(server.config_path).st_mode) == 0o600
    assert "abcdefghijkl" not in str(api.scope.info("auth.geoip-key"))

    assert api.scope.set("cp.config", "geoip", "service_host", "geolite.info") is True
    port = int(server.url.rsplit(":", 1)[1])
    answer = api.scope.set("cp.config", "core", "db_threads", "3")
    assert isinstance(answer, str) and "[core] db_threads takes effect after a restart" in answer
    info = api.scope.info("cp.config")
    assert info["value"]["core"]["db_threads"] == 3 and info["running"]["core"]["db_threads"] == 8
    assert info["running"]["geoip"]["service_host"] == "geolite.info"
    assert info["restart_needed"] == ["[core] db_threads"]
    assert info["running"]["frontend"]["http_port"] == port


def test_smtp_password_and_redis_url_with_password_make_config_owner_only(server_factory):
    """scope:set cp.config of [mail] password or a Redis URL holding a password leaves config.ini
    0600; neither secret is shown back in full."""
    server = server_factory()
    api = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)
    for section, key, value in (("mail", "password", "smtp-hunter2"),
                                ("anvil", "redis_url", "redis://:redis-hunter2@127.0.0.1:6379/3")):
        os.chmod(server.config_path, 0o644)
        api.scope.set("cp.config", section, key, value)
        assert stat.S_IMODE(os.stat(server.config_path).st_mode) == 0o600, (section, key)
        assert "hunter2" not in str(api.scope.get("cp.config", section, key))
    assert "hunter2" not in str(api.scope.info("cp.config"))


def test_a_checkouts_local_settings_hold_only_what_differs(tmp_path, monkeypatch):
    """init (or the first `apiserver set`) in a checkout writes state/config.ini with state_dir only;
    every other key keeps its default, so the tracked conf/config.ini is never needed or written."""
    from apiserver.cli.main import write_default_config

    local = tmp_path / "state" / "config.ini"
    monkeypatch.setattr(config_module, "LOCAL_PATH", str(local))
    write_default_config(str(local), BUILTIN_SECTIONS)
    assert stat.S_IMODE(os.stat(local).st_mode) == 0o600 and stat.S_IMODE(os.stat(local.parent).st_mode) == 0o700
    config = load_config(str(local))
    assert config.state_dir == str(tmp_path / "state")
    assert config.get("frontend", "http_port") == 2082 and "[frontend]" not in local.read_text()


def test_the_tracked_config_is_never_written():
    """A server run on the checkout's conf/config.ini refuses scope:set (and apiserver set); the file stays."""
    import pytest

    from apiserver.config_file import ConfigFile
    from apiserver.errors import InvalidArgument

    path = config_module.CHECKOUT_PATH
    with open(path, encoding="utf-8") as fh:
        before = fh.read()
    with pytest.raises(InvalidArgument, match="tracked reference"):
        ConfigFile(load_config(path)).write([("core", "db_threads", "3")])
    with open(path, encoding="utf-8") as fh:
        assert fh.read() == before
