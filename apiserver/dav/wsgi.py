"""The WSGI side of ``/dav/``: WsgiDAV serving the authenticated account's DAV root.

Blocking: :class:`DavApplication` runs on the DAV thread pool (Twisted's WSGIResource).  The
Twisted resource (:mod:`apiserver.transport.dav`) has already authenticated the request and
puts a :class:`DavAccount` into the environ; here it becomes a DAV root and the WsgiDAV
provider of that root (one per root), whose dead properties and locks are the site's, kept in
the project's storage (:mod:`apiserver.dav.state`): one site never sees another's.

DAV roots: a site administrator gets the site's home; a user of a site the folder
``/home/<user>`` in that home, made (0700) on first use.

When the server runs as root, each DAV thread sets its file-system user and group
(``setfsuid``/``setfsgid``, per thread on Linux) to the sites' owner before it touches a file:
what DAV creates is owned by that account, and the kernel checks every access as that
account, never with root's rights.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import threading
from typing import Optional

from twisted.logger import Logger
from wsgidav.error_printer import ErrorPrinter
from wsgidav.lock_man.lock_manager import LockManager
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from apiserver.dav.provider import BLOCK_SIZE, HomeProvider
from apiserver.dav.state import DavScope, DavState, SiteLockStorage, SitePropertyManager
from apiserver.errors import NotFound
from apiserver.sites.home import FileOwner, is_inside

#: Where ``/dav/`` is mounted (WSGI SCRIPT_NAME).
MOUNT_PATH = "/dav"


class _TwistedLogHandler(logging.Handler):
    """WsgiDAV's errors (it logs through ``logging``) into the server log."""

    log = Logger(namespace="apiserver.dav")

    def emit(self, record):
        self.log.error("WsgiDAV: {message}", message=self.format(record))


def route_wsgidav_logging() -> None:
    """Send WsgiDAV's log records of level ERROR and above to the server log, nothing else."""
    logger = logging.getLogger("wsgidav")
    if not any(isinstance(h, _TwistedLogHandler) for h in logger.handlers):
        logger.addHandler(_TwistedLogHandler(logging.ERROR))
    logger.setLevel(logging.ERROR)
    logger.propagate = False


@dataclasses.dataclass(frozen=True)
class DavAccount:
    """Who a DAV request acts as: the site and, for a user of it, the user name (None: its administrator)."""

    site: str
    user: Optional[str] = None


#: Number of the setgroups system call: called directly it changes the calling thread only
#: (glibc's setgroups, and so os.setgroups, changes every thread of the process).
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159}


class FileSystemUser:
    """Sets the calling thread's file-system uid/gid (Linux ``setfsuid``/``setfsgid``) and its
    supplementary groups, so the kernel checks that thread's file access as another account."""

    def __init__(self):
        import platform

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._setgroups = _SYS_SETGROUPS.get(platform.machine())
        if self._setgroups is None:
            raise RuntimeError(f"DAV as root needs the setgroups system call number of {platform.machine()}")
        self._own_groups = tuple(os.getgroups())

    def become(self, uid: int, gid: int) -> None:
        """Act as ``uid``/``gid`` (groups: ``gid`` alone; for uid 0 the process's own); RuntimeError if it
        did not take."""
        groups = self._own_groups if uid == 0 else (gid,)
        array = (ctypes.c_uint * max(len(groups), 1))(*groups)
        if self._libc.syscall(self._setgroups, len(groups), array) != 0:
            raise RuntimeError(f"cannot set the groups of uid {uid} for DAV file access: errno {ctypes.get_errno()}")
        self._libc.setfsgid(gid)
        self._libc.setfsuid(uid)
        # Both calls return the previous id; a second call with the same id returns the one in force.
        if self._libc.setfsuid(uid) != uid or self._libc.setfsgid(gid) != gid:
            raise RuntimeError(f"cannot act as uid {uid} for DAV file access")


#: The provider of the request the calling thread serves (a WSGI thread serves one at a time).
_serving = threading.local()


class AccountDavApp(WsgiDAVApp):
    """WsgiDAV routing every path of a request (its URL and a COPY/MOVE Destination) to the
    provider :class:`DavApplication` chose for the request's account, never to another's."""

    def resolve_provider(self, path):
        provider = getattr(_serving, "provider", None)
        return ("/", provider) if provider is not None else (None, None)


SERVER_FAILED = b"the request failed on the server; the error was logged\n"


class HideServerErrors(BaseMiddleware):
    """Answers a 500 with a fixed plain text: WsgiDAV's error page would show the exception (with
    host paths); ErrorPrinter below has logged it (to the server log, see route_wsgidav_logging)."""

    def __call__(self, environ, start_response):
        hidden = []

        def start(status, headers, exc_info=None):
            if status[:3] == "500":
                hidden.append(True)
                headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(SERVER_FAILED)))]
            return start_response(status, headers, exc_info)

        result = self.next_app(environ, start)
        try:
            for chunk in result:
                if hidden:
                    if hidden[0]:
                        hidden[0] = False
                        yield SERVER_FAILED
                    continue
                yield chunk
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def wsgidav_config() -> dict:
    """WsgiDAV's configuration: no authentication of its own (done before), no HTML browser, no
    shares (:class:`AccountDavApp` routes each request to its account's provider)."""
    return {
        "provider_mapping": {},
        "mount_path": MOUNT_PATH,
        "middleware_stack": [HideServerErrors, ErrorPrinter, RequestResolver],
        "lock_storage": False,          # per provider, see DavApplication.provider_for
        "property_manager": None,
        "block_size": BLOCK_SIZE,
        "verbose": 1,
        "logging": {"enable": False},
        "suppress_version_info": True,
        "dir_browser": {"enable": False},
        "add_header_MS_Author_Via": True,
        "hotfixes": {"re_encode_path_info": True, "unquote_path_info": False},
    }


class DavApplication:
    """WSGI application: ``environ["apiserver.dav.account"]`` -> its root's provider -> WsgiDAV."""

    def __init__(self, site_homes, state: DavState, as_owner: Optional[bool] = None):
        """``site_homes``: the homes served; ``state``: where sites' dead properties and locks live."""
        self.site_homes = site_homes
        self.state = state
        self.wsgidav = AccountDavApp(wsgidav_config())
        route_wsgidav_logging()
        self.as_owner = os.geteuid() == 0 if as_owner is None else as_owner
        self.fs_user = FileSystemUser() if self.as_owner else None
        self._providers: dict = {}
        self._lock = threading.Lock()
        self._reachable_by: Optional[int] = None

    def _let_owner_reach_sites(self, owner: FileOwner) -> None:
        """As root, once: give the sites' owner search (``x``, no listing) on the folders from
        ``state_dir`` down to ``sites_root``, as :meth:`SiteHomes.ensure_reachable` does for the
        web server user (``state_dir`` is 0700)."""
        if self._reachable_by == owner.uid:
            return
        with self._lock:
            if self._reachable_by == owner.uid:  # another thread granted it meanwhile
                return
            self.fs_user.become(0, 0)
            self.site_homes.let_reach(owner.name)
            self._reachable_by = owner.uid

    def __call__(self, environ, start_response):
        _serving.provider = None
        self.state.begin_request()
        account: DavAccount = environ["apiserver.dav.account"]
        try:
            home = self.site_homes.get(account.site)
        except NotFound:
            return _plain(start_response, "404 Not Found", f"site {account.site} has no files on this server")
        if self.fs_user is not None:
            self._let_owner_reach_sites(home.owner)
            self.fs_user.become(home.owner.uid, home.owner.gid)
        root = os.path.realpath(home.root)
        if account.user is not None:
            root = self._user_folder(root, account.user)
        try:
            _serving.provider = self.provider_for(root, account)
        except NotFound:
            return _plain(start_response, "404 Not Found", f"site {account.site} has no files on this server")
        environ["wsgidav.auth.user_name"] = f"{account.user}@{account.site}" if account.user else account.site
        environ["wsgidav.auth.realm"] = "apiserver DAV"
        return self.wsgidav(environ, start_response)

    @staticmethod
    def _user_folder(home_root: str, user: str) -> str:
        """``<home>/home/<user>``, made on first use (0700); refused if it leads out of the home."""
        folder = os.path.join(home_root, "home", user)
        os.makedirs(os.path.dirname(folder), mode=0o755, exist_ok=True)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        real = os.path.realpath(folder)
        if not is_inside(real, home_root) or os.path.islink(folder):
            raise PermissionError(f"the DAV folder of {user} leads out of the site's home")
        return real

    def provider_for(self, root: str, account: DavAccount) -> HomeProvider:
        """The provider of DAV root ``root`` of ``account``'s site (NotFound when the database has no
        such site); a new home at the same path (site re-created) gets a new one."""
        info = os.stat(root)
        key = (root, info.st_dev, info.st_ino)
        with self._lock:
            provider = self._providers.get(key)
            if provider is None:
                site_id = self.state.site_id(account.site)
                if site_id is None:
                    raise NotFound(f"site {account.site} is not in the database")
                scope = DavScope.of(site_id, account.site, account.user)
                provider = HomeProvider(root)
                provider.set_share_path("/")
                provider.set_mount_path(MOUNT_PATH)
                provider.set_lock_manager(LockManager(SiteLockStorage(self.state, scope)))
                provider.set_prop_manager(SitePropertyManager(self.state, scope))
                for old in [k for k in self._providers if k[0] == root]:
                    del self._providers[old]
                self._providers[key] = provider
            return provider


def _plain(start_response, status: str, message: str):
    body = (message + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
