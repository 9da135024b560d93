"""Plan files: .skeleton inherited by every plan, validation naming file and key, [plans] config."""

from __future__ import annotations

import os

import pytest

from apiserver.config import BUILTIN_SECTIONS, SHIPPED_PLANS, Config, ConfigError, cross_check
from apiserver.errors import NotFound, ServerError
from apiserver.lifecycle.plans import Plans


def _plans(tmp_path, files: dict, default: str = "basic") -> Plans:
    for name, text in files.items():
        (tmp_path / f"{name}.ini").write_text(text, encoding="utf-8")
    return Plans(str(tmp_path), default)


def test_the_shipped_basic_plan_inherits_the_skeleton():
    """basic is shipped, listed, and holds .skeleton's values where it sets none."""
    plans = Plans(SHIPPED_PLANS, "basic")
    assert plans.names() == ["basic"]
    basic = plans.describe("basic")
    assert basic["diskquota"] == {"enabled": 1, "quota": 5000, "units": "MB", "fquota": None}
    assert basic["ssh"] == {"enabled": 0} and basic["rampart"] == {"enabled": 1, "max": 5}
    assert "siteinfo" in basic and "auth" not in basic and "domain" not in basic["siteinfo"]
    assert plans.describe(None) == basic  # the default plan


def test_a_plan_overrides_the_skeleton_which_overrides_the_builtin_defaults(tmp_path):
    """Three layers: built-in default, .skeleton.ini, <plan>.ini; DEFAULT and None are null."""
    plans = _plans(tmp_path, {".skeleton": "[ssh]\nenabled = 1\n[users]\nmax = 7\n",
                              "pro": "[users]\nmax = DEFAULT\n[diskquota]\nquota = 20\nunits = GB ; inline comment\n",
                              "basic": ""})
    pro = plans.describe("pro")
    assert pro["ssh"]["enabled"] == 1 and pro["users"]["max"] is None
    assert (pro["diskquota"]["quota"], pro["diskquota"]["units"], pro["bandwidth"]["threshold"]) == (20, "GB", 50)
    assert plans.names() == ["basic", "pro"]
    with pytest.raises(NotFound, match="no plan 'gold'; plans are basic, pro"):
        plans.describe("gold")
    with pytest.raises(NotFound):
        plans.describe(".skeleton")


def test_an_edited_plan_applies_at_its_next_use(tmp_path):
    """Plans are re-read when their file changes (size or time), not cached for ever."""
    plans = _plans(tmp_path, {"basic": "[users]\nmax = 3\n"})
    assert plans.describe("basic")["users"]["max"] == 3
    path = tmp_path / "basic.ini"
    path.write_text("[users]\nmax = 40\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))
    assert plans.describe("basic")["users"]["max"] == 40


def test_a_bad_plan_file_is_a_server_error_naming_file_and_key(tmp_path):
    """Unknown names, bad values, per-site values and broken INI name the file (the administrator's mistake)."""
    for text, message in (("[nosuch]\nx = 1\n", "plan file bad.ini: nosuch.x: unknown service"),
                          ("[diskquota]\nquota = lots\n", "plan file bad.ini: diskquota.quota: expected a number"),
                          ("[siteinfo]\nemail = a@b.example\n", "siteinfo.email is distinct to each site"),
                          ("[billing]\ninvoice = X\n", "billing.invoice is distinct to each site"),
                          ("no section\n", "plan file bad.ini cannot be read")):
        plans = _plans(tmp_path, {"bad": text})
        with pytest.raises(ServerError, match=message):
            plans.describe("bad")


def test_plans_config_is_checked_at_start(tmp_path):
    """[plans] dir must be a folder holding the [plans] default plan; errors name section and key."""
    def config(**plans):
        return Config(BUILTIN_SECTIONS, {"plans": plans, "frontend": {"http_port": "0", "https_port": "0"}},
                      str(tmp_path / "config.ini"))

    cross_check(config())  # the shipped plans
    with pytest.raises(ConfigError, match=r"\[plans\] dir: .*missing is not a folder"):
        cross_check(config(dir="missing"))
    (tmp_path / "plans").mkdir()
    with pytest.raises(ConfigError, match=r"\[plans\] default: no plan file basic.ini"):
        cross_check(config(dir="plans"))
    (tmp_path / "plans" / "gold.ini").write_text("", encoding="utf-8")
    cross_check(config(dir="plans", default="gold"))
    with pytest.raises(ConfigError, match=r"\[plans\] default: expected a plan name"):
        config(default="../etc/passwd")
