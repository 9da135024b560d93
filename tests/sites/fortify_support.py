"""Test support for Fortification: a site of a real application under a sites root, a WordPress
tree in its document root, and the calls the tests make (fortify, info)."""

from __future__ import annotations

import contextlib
import os

import pytest

from tests.accounts.support import Harness
from tests.sites.support import WORDPRESS, make_tree, sites_root  # noqa: F401 - sites_root is a fixture

#: The document root as the site sees it.
DOC = "/var/www/html"


@contextlib.contextmanager
def running_site(state_parent, sites_root: str):
    """(harness, site administrator, SiteHome) of example.com under ``sites_root``, the harness's state
    in ``state_parent``; its fortifier stopped and the harness closed afterwards."""
    h = Harness(state_parent / "state", {"web": {"sites_root": sites_root}})
    try:
        admin = h.add_site()
        yield h, admin, h.app.site_homes.get("example.com")
    finally:
        h.app.fortifier.stop()
        h.close()


@pytest.fixture
def site(tmp_path, sites_root):
    """(harness, site administrator, SiteHome) of example.com, its document root reachable by the web user."""
    with running_site(tmp_path, sites_root) as made:
        yield made


@pytest.fixture
def wordpress_site(site):
    """:func:`site` with WordPress's files in its document root: (harness, administrator, SiteHome, document root)."""
    h, admin, home = site
    return h, admin, home, wordpress_tree(home)


def document_root(home) -> str:
    """The real path of ``home``'s document root."""
    return os.path.realpath(home.document_root)


def wordpress_tree(home) -> str:
    """WordPress's files made in ``home``'s document root (owned by the site); its real path."""
    make_tree(document_root(home), WORDPRESS, home.owner)
    return document_root(home)


def fortify(h, actor, path: str, mode: str):
    """``security_fortify`` of example.com's ``path`` (relative to the document root, or as the site sees it)."""
    return h.call(actor, "security_fortify", "example.com", path, mode)


def fortification(h, actor, path: str = ""):
    """``security_fortification_info`` of example.com's ``path``."""
    return h.call(actor, "security_fortification_info", "example.com", path)
