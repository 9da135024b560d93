"""Fortification's windows: write returns to the mode before it, learn ends in max, both closed by
the window timer on the injected clock, on time after a restart, retried when closing fails."""

from __future__ import annotations

import os

import pytest

from apiserver.sites.fortify import Fortifier
from tests.accounts.support import wait
from tests.sites.fortify_support import (  # noqa: F401 - site, sites_root and wordpress_site are fixtures
    DOC, fortification, fortify, site, sites_root, wordpress_site,
)
from tests.sites.support import as_web, requires_root, web_can_write

pytestmark = requires_root()


def test_write_window_ends_in_max(wordpress_site):
    """write on a folder never fortified opens everything for [security] write_window seconds, then max applies."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "write")
    assert web_can_write(os.path.join(root, "wp-config.php"))
    h.advance(599)
    assert fortification(h, admin).mode == "write" and web_can_write(os.path.join(root, "wp-config.php"))
    h.advance(1)
    assert fortification(h, admin).mode == "max"
    assert not web_can_write(os.path.join(root, "wp-config.php"))
    assert web_can_write(os.path.join(root, "wp-content/uploads"))


@pytest.mark.parametrize("before", ["min", "release", "reset", "max"])
def test_write_window_returns_to_the_mode_before_it(wordpress_site, before):
    """A write window (even one opened again inside it) ends in the folder's previous mode, as ApisCP's does."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", before)
    expected = fortification(h, admin)
    fortify(h, admin, "", "write")
    h.advance(300)
    fortify(h, admin, "", "write")  # a second write still returns to `before`
    assert web_can_write(os.path.join(root, "wp-includes/version.php"))
    h.advance(600)
    info = fortification(h, admin)
    assert (info.mode, info.writable, info.until) == (before, expected.writable, None)
    assert web_can_write(os.path.join(root, "wp-config.php")) == (before in ("min", "release"))
    assert web_can_write(os.path.join(root, "wp-includes/version.php")) == (before == "release")
    assert web_can_write(os.path.join(root, "wp-content/uploads")) == (before != "reset")


def test_write_after_a_learn_window_returns_to_max_with_what_was_learned(wordpress_site):
    """write during a learn window abandons it; the write window then ends in max, learned paths kept."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "learn")
    assert as_web('mkdir "$1/wp-content/backup-db"', root).returncode == 0
    h.advance(1800)
    assert fortification(h, admin).learned == [f"{DOC}/wp-content/backup-db"]
    fortify(h, admin, "", "learn")
    fortify(h, admin, "", "write")
    h.advance(600)
    info = fortification(h, admin)
    assert (info.mode, info.learned) == ("max", [f"{DOC}/wp-content/backup-db"])
    assert web_can_write(os.path.join(root, "wp-content/backup-db"))
    assert not web_can_write(os.path.join(root, "wp-config.php"))


def test_a_new_mode_cancels_the_window(wordpress_site):
    """release during a write window is not undone when the old window would have ended."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "write")
    fortify(h, admin, "", "release")
    h.advance(700)
    assert fortification(h, admin).mode == "release"
    assert web_can_write(os.path.join(root, "wp-config.php"))


def _restarted(h, seconds_later):
    """A second Fortifier on the same database, as after a restart, its clock ``seconds_later`` on."""
    from twisted.internet import task

    clock = task.Clock()
    clock.advance(h.clock.seconds() + seconds_later)
    app = h.app
    return Fortifier(app.storage, clock, app.run_blocking, app.site_homes, app.site_homes.web_user, app.config), clock


def test_restart_closes_overdue_windows_at_once(wordpress_site):
    """A window that ended while the server was down is closed when it starts again, in the mode before it."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "min")
    fortify(h, admin, "", "write")
    wait(h.app.fortifier.stop())  # the server goes down
    fortifier, _clock = _restarted(h, 3600)
    wait(fortifier.start())
    assert fortification(h, admin).mode == "min"
    assert not web_can_write(os.path.join(root, "wp-includes/version.php"))
    assert web_can_write(os.path.join(root, "wp-config.php"))


def test_restart_keeps_pending_windows(wordpress_site):
    """A window still open at start gets a timer for the time that is left, not a new full window."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "learn")
    until = fortification(h, admin).until
    wait(h.app.fortifier.stop())
    fortifier, clock = _restarted(h, 1000)
    wait(fortifier.start())
    assert fortification(h, admin).until == until and web_can_write(os.path.join(root, "wp-config.php"))
    assert fortifier.windows.next_run == pytest.approx(until.timestamp())
    clock.advance(799)
    wait(fortifier.windows.idle())
    assert fortification(h, admin).mode == "learn"
    clock.advance(1)
    wait(fortifier.windows.idle())
    assert fortification(h, admin).mode == "max"
    wait(fortifier.stop())


def test_restart_keeps_a_write_window_and_where_it_returns(wordpress_site):
    """A write window still open at a restart ends at its time, in the mode the folder had before it."""
    h, admin, home, root = wordpress_site
    fortify(h, admin, "", "release")
    fortify(h, admin, "", "write")
    wait(h.app.fortifier.stop())
    fortifier, clock = _restarted(h, 500)
    wait(fortifier.start())
    assert fortification(h, admin).mode == "write"
    clock.advance(100)
    wait(fortifier.windows.idle())
    assert fortification(h, admin).mode == "release" and web_can_write(os.path.join(root, "wp-includes/version.php"))
    wait(fortifier.stop())


def test_a_window_of_a_deleted_site_ends_quietly(wordpress_site):
    """When the site is deleted during a window, its timer finds nothing to close and sets no retry."""
    h, admin, _home, _root = wordpress_site
    fortify(h, admin, "", "write")
    h.call(h.admin, "admin_delete_site", "example.com")
    h.advance(600)
    assert h.app.fortifier.windows.next_run is None  # no retry (it would be due within RETRY_SECONDS)


def test_a_window_whose_closing_fails_is_retried(wordpress_site):
    """A close that fails (a disk or database error) is due again RETRY_SECONDS later, then closes."""
    from apiserver.sites.fortify import RETRY_SECONDS

    h, admin, home, root = wordpress_site
    app = h.app
    failures = []

    def run_blocking(fn, *args, **kwargs):
        if fn.__name__ == "_close_blocking" and not failures:
            failures.append(fn.__name__)
            fn = _fails
        return app.run_blocking(fn, *args, **kwargs)

    fortifier = Fortifier(app.storage, h.clock, run_blocking, app.site_homes, app.site_homes.web_user, app.config)
    wait(fortifier.fortify(home, "", "write"))
    h.clock.advance(600)
    wait(fortifier.windows.idle())
    assert failures and fortification(h, admin).mode == "write"
    assert fortifier.windows.next_run == pytest.approx(h.clock.seconds() + RETRY_SECONDS)
    h.clock.advance(RETRY_SECONDS)
    wait(fortifier.windows.idle())
    assert fortification(h, admin).mode == "max" and not web_can_write(os.path.join(root, "wp-config.php"))
    assert fortifier.windows.next_run is None
    wait(fortifier.stop())


def _fails(*_args):
    raise OSError(5, "Input/output error")


def test_closing_a_window_runs_on_the_blocking_pool(wordpress_site):
    """The timer hands the ACL work to the run-blocking callable: it never runs on the reactor thread."""
    import threading

    h, admin, home, root = wordpress_site
    threads = []
    app = h.app

    def run_blocking(fn, *args, **kwargs):
        def recorded(*a, **k):
            threads.append((fn.__name__, threading.current_thread() is threading.main_thread()))
            return fn(*a, **k)
        return app.run_blocking(recorded, *args, **kwargs)

    fortifier = Fortifier(app.storage, h.clock, run_blocking, app.site_homes, app.site_homes.web_user, app.config)
    wait(fortifier.fortify(home, "", "write"))
    h.clock.advance(600)
    wait(fortifier.windows.idle())
    assert ("_close_blocking", False) in threads
    assert all(not on_main for _name, on_main in threads)
    assert not web_can_write(os.path.join(root, "wp-config.php"))
    wait(fortifier.stop())
