"""Config: defaults, validation errors naming section and key, the shipped file, docs."""

import os
import subprocess
import sys

import pytest

from apiserver.config import BUILTIN_SECTIONS, ConfigError, load_config, render_ini

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text):
    path = tmp_path / "config.ini"
    path.write_text(text)
    return str(path)


def test_defaults_without_keys(tmp_path):
    """An empty file gives the documented defaults of api.md."""
    config = load_config(write(tmp_path, ""))
    assert config.get("soap", "enabled") is True
    anvil = (config.get("anvil", "limit"), config.get("anvil", "ttl"), config.get("anvil", "min_attempts"))
    assert anvil == (20, 900, 3)
    assert [str(n) for n in config.get("anvil", "whitelist")] == ["127.0.0.1/32"]
    assert config.get("auth", "min_pw_length") == 7
    assert config.get("auth", "ip_restriction_limit") == 50
    assert config.get("frontend", "https_only") is False
    assert (config.get("frontend", "http_port"), config.get("frontend", "https_port")) == (2082, 2083)
    assert config.get("session", "ttl") == 900
    assert config.get("frontend", "bind") == "127.0.0.1"


@pytest.mark.parametrize("text, section, key", [
    ("[anvil]\nlimit = many\n", "anvil", "limit"),
    ("[anvil]\nlimit = 0\n", "anvil", "limit"),
    ("[soap]\nenabled = perhaps\n", "soap", "enabled"),
    ("[frontend]\nhttp_port = 70000\n", "frontend", "http_port"),
    ("[core]\nhttp_trusted_forward = 10.0.0.0/33\n", "core", "http_trusted_forward"),
    ("[anvil]\nbackend = memcached\n", "anvil", "backend"),
    ("[auth]\nno_such_key = 1\n", "auth", "no_such_key"),
    ("[databases]\nlock_timeout = 0\n", "databases", "lock_timeout"),
    ("[databases]\nlock_timeout = -2\n", "databases", "lock_timeout"),
    ("[databases]\nlock_timeout = soon\n", "databases", "lock_timeout"),
    ("[databases]\nlock_timeout = inf\n", "databases", "lock_timeout"),
    ("[databases]\nlock_timeout = nan\n", "databases", "lock_timeout"),
])
def test_bad_value_names_section_and_key(tmp_path, text, section, key):
    """A bad or unknown value raises ConfigError naming [section] key."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert (info.value.section, info.value.key) == (section, key)
    assert f"[{section}] {key}" in str(info.value)


@pytest.mark.parametrize("raw, seconds", [("", 10.0), ("2.5", 2.5), (" 30 ", 30.0), ("0.05", 0.05)])
def test_databases_lock_timeout_takes_positive_seconds(tmp_path, raw, seconds):
    """[databases] lock_timeout: 10 s by default, any positive number of seconds (fractions too) when given."""
    text = f"[databases]\nlock_timeout = {raw}\n" if raw else ""
    assert load_config(write(tmp_path, text)).get("databases", "lock_timeout") == seconds


def test_unknown_section_refused(tmp_path):
    """A misspelled section stops start-up instead of being ignored."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[anvill]\nlimit = 3\n"))
    assert info.value.section == "anvill"


def test_bad_config_stops_serve_with_clear_error(tmp_path):
    """`apiserver serve` with a bad value exits non-zero and names the key, without a traceback."""
    path = write(tmp_path, "[anvil]\nttl = soon\n")
    out = subprocess.run([sys.executable, "-m", "apiserver.cli.main", "--config", path, "serve"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert "[anvil] ttl" in out.stderr
    assert "Traceback" not in out.stderr


def test_set_validates_and_notifies(tmp_path):
    """Config.set applies a valid value, tells observers, and refuses a bad one unchanged."""
    config = load_config(write(tmp_path, ""))
    seen = []
    config.observe(lambda *change: seen.append(change))
    config.set("soap", "enabled", "false")
    assert config.get("soap", "enabled") is False
    assert seen == [("soap", "enabled", True, False)]
    with pytest.raises(ConfigError):
        config.set("anvil", "limit", "-1")
    assert config.get("anvil", "limit") == 20


def test_state_dir_relative_to_config_file(tmp_path):
    """[core] state_dir is resolved against the config file's folder, not the working directory."""
    config = load_config(write(tmp_path, "[core]\nstate_dir = st\n"))
    assert config.state_dir == str(tmp_path / "st")


def test_shipped_config_matches_schema():
    """conf/config.ini documents every key with its default; regenerate with render_ini() on drift."""
    with open(os.path.join(ROOT, "conf", "config.ini"), encoding="utf-8") as fh:
        shipped = fh.read()
    assert shipped == render_ini(), (
        "conf/config.ini drifted from apiserver/config.py; regenerate with: python scripts/render_docs.py")
    load_config(os.path.join(ROOT, "conf", "config.ini"))


def test_every_key_documented_in_readme():
    """Every config key appears in the config reference, docs/configuration.md."""
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as fh:
        readme = fh.read()
    missing = [f"[{s.name}] {k.name}" for s in BUILTIN_SECTIONS for k in s.keys
               if f"`{k.name}`" not in readme or f"[{s.name}]" not in readme]
    assert not missing, f"undocumented in docs/configuration.md: {missing}"
    for section in BUILTIN_SECTIONS:
        for key in section.keys:
            assert key.help.strip(), f"[{section.name}] {key.name} has no help text"
