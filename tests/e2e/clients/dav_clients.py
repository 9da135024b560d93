"""DAV clients for the e2e tests: ``requests`` for exact status codes and bodies, ``cadaver``
driven non-interactively (commands on stdin, credentials in ``$HOME/.netrc``)."""

from __future__ import annotations

import os
import pwd
import subprocess
import xml.etree.ElementTree as ET
import xmlrpc.client
from typing import Optional

import requests

DAV = "{DAV:}"


def xmlrpc_post(server, method, *args, key=None, sid=None, address=None) -> requests.Response:
    """One XML-RPC request with an API key or an ``esprit_id`` session (from ``address`` through the
    trusted proxy when given); the HTTP answer."""
    headers = {"Content-Type": "text/xml"}
    if sid:
        headers["Cookie"] = f"esprit_id={sid}"
    if address:
        headers["X-Forwarded-For"] = address
    url = f"{server.url}/xmlrpc" + (f"?authkey={key}" if key else "")
    return requests.post(url, data=xmlrpc.client.dumps(args, method, allow_none=True).encode(), headers=headers,
                         timeout=60)


def xmlrpc_call(server, method, *args, key=None, sid=None, address=None):
    """One XML-RPC call (:func:`xmlrpc_post`); the decoded answer."""
    answer = xmlrpc_post(server, method, *args, key=key, sid=sid, address=address)
    return xmlrpc.client.loads(answer.content, use_builtin_types=True)[0][0]


def add_site(server, domain: str, admin: str, password: str) -> str:
    """Create a site with ``admin``/``password``; returns a session acting as its administrator."""
    options = {"siteinfo.email": f"owner@{domain}", "auth.tpasswd": password}
    xmlrpc_call(server, "admin_add_site", domain, admin, options, key=server.admin_key)
    return xmlrpc_call(server, "admin_hijack", domain, key=server.admin_key)


def let_owner_reach(server) -> None:
    """Test set-up only: the sites' owner (``apiserver`` as root) may pass through the tmp folders
    above ``state_dir`` (pytest's are 0700); the server itself grants it from ``state_dir`` down."""
    if os.geteuid() != 0:
        return
    owner = "apiserver"
    uid = pwd.getpwnam(owner).pw_uid
    path = os.path.dirname(os.path.realpath(server.state_dir))
    while path != "/":
        info = os.stat(path)
        if not info.st_mode & 0o001 and info.st_uid != uid:
            subprocess.run(["setfacl", "-m", f"u:{owner}:x", path], check=True)
        path = os.path.dirname(path)


def site_home(server, domain: str) -> str:
    """The host path of ``domain``'s home: ``<sites_root>/<domain>`` links to ``site<N>``, whose
    ``fst`` the site sees as /."""
    return os.path.join(server.state_dir, "sites", domain, "fst")


class Dav:
    """``requests`` against ``/dav/`` as one account, optionally from a remote address (trusted proxy)."""

    def __init__(self, base_url: str, user: str, password: str, address: Optional[str] = None, verify=None):
        self.base = base_url.rstrip("/") + "/dav/"
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.verify = verify
        if address:
            self.session.headers["X-Forwarded-For"] = address

    def url(self, path: str = "") -> str:
        return self.base + path.lstrip("/")

    def request(self, method: str, path: str = "", **kw) -> requests.Response:
        kw.setdefault("timeout", 120)
        if self.verify is not None:
            kw.setdefault("verify", self.verify)
        return self.session.request(method, self.url(path), **kw)

    def propfind(self, path: str = "", depth: str = "1", body: Optional[bytes] = None) -> requests.Response:
        headers = {"Depth": depth} if depth is not None else {}
        if body is not None:
            headers["Content-Type"] = "application/xml"
        return self.request("PROPFIND", path, headers=headers, data=body)

    def hrefs(self, path: str = "", depth: str = "1") -> list:
        """The hrefs a PROPFIND lists (after a 207)."""
        answer = self.propfind(path, depth)
        assert answer.status_code == 207, (answer.status_code, answer.text[:500])
        return [e.text for e in ET.fromstring(answer.content).iter(DAV + "href")]


def cadaver(url: str, user: str, password: str, commands: list, home: str, insecure: bool = False) -> str:
    """Run cadaver on ``url`` with ``commands`` on stdin and ``user``/``password`` from ``home``/.netrc."""
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    netrc = os.path.join(home, ".netrc")
    with open(netrc, "w", encoding="utf-8") as fh:
        fh.write(f"machine {host}\nlogin {user}\npassword {password}\n")
    os.chmod(netrc, 0o600)
    script = "\n".join(commands + ["quit"]) + "\n"
    env = dict(os.environ, HOME=home)
    argv = ["cadaver", url]
    if insecure:
        # cadaver asks about an untrusted certificate only on a terminal: run it on a pseudo-terminal
        # (util-linux script) and answer "y" for this run.
        argv = ["script", "-q", "-e", "-c", f"cadaver {url}", "/dev/null"]
        script = "y\n" + script
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, env=env, timeout=120, cwd=home)
    return proc.stdout + proc.stderr
