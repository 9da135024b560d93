"""Sites on disk through the running server: admin_add_site makes the home, admin_delete_site removes it."""

from __future__ import annotations

import os
import pwd
import xmlrpc.client

import pytest


def _proxy(server):
    return xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc?authkey={server.admin_key}", allow_none=True)


def _home(server, domain):
    """The site's root: ``<sites_root>/<domain>`` links to ``site<N>``, whose ``fst`` the site sees as /."""
    return os.path.join(server.state_dir, "sites", domain, "fst")


def _place(server, domain):
    return os.path.join(server.state_dir, "sites", domain)


def test_add_site_makes_home_owned_by_the_sites_owner(running_server):
    """The new site's document root exists, belongs to the sites' owner (never root) and the web user can reach it."""
    api = _proxy(running_server)
    api.admin_add_site("homes.example", "homesadmin", {"siteinfo.email": "a@homes.example",
                                              "auth.tpasswd": "Homes-pass-123"})
    docroot = os.path.join(_home(running_server, "homes.example"), "var", "www", "html")
    assert os.path.isdir(docroot)
    owner = pwd.getpwuid(os.stat(docroot).st_uid).pw_name
    if os.geteuid() == 0:
        assert owner == "apiserver"
        # www-data passes through the 0700 state_dir (ACL u:www-data:x) but cannot list it.
        import subprocess

        listing = subprocess.run(["runuser", "-u", "www-data", "--", "ls", running_server.state_dir],
                                 capture_output=True, text=True)
        assert listing.returncode != 0
        _let_web_user_pass_tmp_ancestors(running_server.state_dir)
        reach = subprocess.run(["runuser", "-u", "www-data", "--", "test", "-r", os.path.join(docroot, ".")])
        assert reach.returncode == 0
    else:
        assert owner == pwd.getpwuid(os.geteuid()).pw_name


def _let_web_user_pass_tmp_ancestors(state_dir: str) -> None:
    """pytest's tmp folders above state_dir are 0700: let www-data pass them, as /var/lib would."""
    import subprocess

    parent = os.path.dirname(state_dir)
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            subprocess.run(["setfacl", "-m", "u:www-data:x", parent], check=True)
        parent = os.path.dirname(parent)


def test_delete_site_removes_home_without_following_links(running_server, tmp_path):
    """Deleting a site removes its files, not the target of a link inside them."""
    api = _proxy(running_server)
    api.admin_add_site("gone.example", "goneadmin", {"siteinfo.email": "a@gone.example",
                                              "auth.tpasswd": "Gone-pass-123"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    docroot = os.path.join(_home(running_server, "gone.example"), "var", "www", "html")
    os.symlink(str(outside), os.path.join(docroot, "link"))
    site_dir = os.path.realpath(_place(running_server, "gone.example"))
    assert api.admin_delete_site("gone.example") is True
    assert not os.path.lexists(_place(running_server, "gone.example"))
    assert not os.path.lexists(site_dir)
    assert (outside / "keep.txt").read_text() == "kept"
    assert not [n for n in os.listdir(os.path.join(running_server.state_dir, "sites")) if n.startswith(".deleted-")]


def test_add_site_refuses_a_stale_home_and_keeps_no_rows(running_server):
    """A folder already in the new home's place is an 'exists' fault, and no site is left half made."""
    stale = _place(running_server, "stale.example")
    os.makedirs(os.path.join(stale, "data"))
    api = _proxy(running_server)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        api.admin_add_site("stale.example", "staleadmin", {"siteinfo.email": "a@stale.example",
                                              "auth.tpasswd": "Stale-pass-123"})
    assert "exists" in fault.value.faultString and "stale.example" in fault.value.faultString
    assert "stale.example" not in api.admin_list_sites()
    assert os.path.isdir(os.path.join(stale, "data"))
