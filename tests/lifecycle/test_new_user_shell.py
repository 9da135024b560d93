"""The login shell a site's new user gets (system_accounts.new_user_shell): plan, options, suspension."""

from __future__ import annotations

import pytest

from apiserver.host import tools
from apiserver.lifecycle.system_accounts import new_user_shell
from tests.accounts.support import Harness, wait
from tests.lifecycle.support import plans_config


@pytest.fixture
def planned(tmp_path):
    """An application whose default plan ``shell`` sets ssh.enabled = 1, beside ``plain`` without it."""
    h = Harness(tmp_path / "state", plans_config(tmp_path, {"shell.ini": "[ssh]\nenabled = 1\n", "plain.ini": ""},
                                                 default="shell"))
    yield h
    h.close()


def _shell(h, domain: str) -> str:
    def read():
        site_id = h.app.directory.identity_for(domain, None).site_id
        with h.app.storage.read() as conn:
            return new_user_shell(conn, site_id)
    return wait(h.app.run_blocking(read))


def test_the_plan_the_options_and_suspension_decide_the_shell(planned):
    """The default plan's ssh.enabled gives a shell, an option of 0 overrides it, a plan without it
    gives nologin, and so does suspension; an unknown site gets nologin."""
    h = planned
    h.call(h.admin, "admin_add_site", "planned.example", "owner1", {})
    h.call(h.admin, "admin_add_site", "opted-out.example", "owner2", {"ssh.enabled": 0})
    h.call(h.admin, "admin_add_site", "plain.example", "owner3", {"siteinfo.plan": "plain"})
    assert _shell(h, "planned.example") == tools.LOGIN_SHELL
    assert _shell(h, "opted-out.example") == tools.NOLOGIN
    assert _shell(h, "plain.example") == tools.NOLOGIN
    h.call(h.admin, "admin_deactivate_site", "planned.example")
    assert _shell(h, "planned.example") == tools.NOLOGIN
    with h.app.storage.read() as conn:
        assert new_user_shell(conn, 999_999) == tools.NOLOGIN
