"""``dav.enabled`` at ``/dav/`` of a running server: a site whose value is 0 is refused with 403
naming it, at once after an edit, while other sites are served."""

from __future__ import annotations

from tests.conftest import start_server
from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, xmlrpc_call

PASSWORD = "Dav-service-1"


def test_dav_enabled_opens_and_closes_dav_for_one_site(tmp_path):
    """Off at creation: 403 after the right password (a wrong one is still 401); on: served; off
    again: refused on the next request; the other site is served throughout."""
    server = start_server(str(tmp_path))
    try:
        xmlrpc_call(server, "admin_add_site", "off.example", "offadmin",
                    {"siteinfo.email": "o@off.example", "auth.tpasswd": PASSWORD, "dav.enabled": 0},
                    key=server.admin_key)
        add_site(server, "on.example", "onadmin", PASSWORD)
        let_owner_reach(server)
        off, on = Dav(server.url, "offadmin@off.example", PASSWORD), Dav(server.url, "onadmin@on.example", PASSWORD)
        refused = off.propfind("", "0")
        assert refused.status_code == 403 and "dav.enabled is 0" in refused.text and "off.example" in refused.text
        assert Dav(server.url, "offadmin@off.example", "wrong-1").propfind("", "0").status_code == 401
        assert on.propfind("", "0").status_code == 207
        xmlrpc_call(server, "admin_edit_site", "off.example", {"dav.enabled": 1}, key=server.admin_key)
        assert off.propfind("", "0").status_code == 207
        xmlrpc_call(server, "admin_edit_site", "off.example", {"dav.enabled": 0}, key=server.admin_key)
        assert off.request("PUT", "var/www/html/x.txt", data=b"x").status_code == 403
        assert on.propfind("", "0").status_code == 207
    finally:
        server.stop()
