"""Test support for DAV: one request through the WSGI application in this thread, and the end of
the MOVE/DELETE race replays (the real folder back in place)."""

from __future__ import annotations

import io
import os
import wsgiref.util


def wsgi_call(app, method, path, account, body=b"", **headers):
    """One request as Twisted's WSGIResource makes it: the call and every step in this thread."""
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "/dav", "PATH_INFO": path,
               "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "apiserver.dav.account": account}
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    wsgiref.util.setup_testing_defaults(environ)
    status = []
    result = app(environ, lambda s, h, e=None: status.append(s))
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(status[0][:3]), data


def real_folder_back_with_a_decoy(up: str, alt: str, uid: int, gid: int) -> None:
    """After the swapping stopped: ``up`` the real folder again (``alt`` the link) holding a
    ``wp-config.php`` of the account ``uid``/``gid``, for the MOVE that must then work."""
    if os.path.islink(up):
        os.rename(up, up + ".swap")
        os.rename(alt, up)
        os.rename(up + ".swap", alt)
    decoy = os.path.join(up, "wp-config.php")
    with open(decoy, "wb") as fh:
        fh.write(b"decoy")
    os.chown(decoy, uid, gid)
