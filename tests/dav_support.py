"""Test support for DAV: a provider confined to a home and the environ its resources read, one
request through the WSGI application in this thread, and the MOVE/DELETE race replays' swapper and
their end (the real folder back in place)."""

from __future__ import annotations

import io
import os
import textwrap
import wsgiref.util

from apiserver.dav.provider import HomeProvider


def home_provider(home) -> HomeProvider:
    """A HomeProvider confined to the folder ``home``, shared at the root."""
    provider = HomeProvider(str(home))
    provider.set_share_path("/")
    return provider


def environ_for(provider, method="GET") -> dict:
    """What a resource of ``provider`` reads of the WSGI environ of a ``method`` request."""
    return {"wsgidav.provider": provider, "wsgidav.config": {}, "REQUEST_METHOD": method}


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


#: The MOVE/DELETE race replays' attacker, run as ``python -c RACE_SWAPPER up alt stop every``: swaps
#: the folder ``up`` and the link ``alt`` (renameat2 RENAME_EXCHANGE) until the file ``stop`` exists,
#: and after every ``every`` swaps puts a decoy wp-config.php in the real folder if it has none.
RACE_SWAPPER = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    RENAME_EXCHANGE = 2
    up, alt, stop, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    n = 0
    while not os.path.exists(stop):
        libc.renameat2(-100, up.encode(), -100, alt.encode(), RENAME_EXCHANGE)
        n += 1
        if n % every == 0:
            real = alt if os.path.islink(up) else up
            try:
                with open(os.path.join(real, "wp-config.php"), "x") as fh:
                    fh.write("decoy")
            except OSError:
                pass
""")


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
