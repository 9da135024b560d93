"""The WSGI side of ``/dav/``: WsgiDAV serving the authenticated account's DAV root.

Blocking: :class:`DavApplication` runs on the DAV thread pool (Twisted's WSGIResource).  The
Twisted resource (:mod:`apiserver.transport.dav`) has already authenticated the request and
puts a :class:`DavAccount` into the environ; here it becomes a DAV root and the WsgiDAV
provider of that root (one per root), whose dead properties and locks are the site's, kept in
the project's storage (:mod:`apiserver.dav.state`): one site never sees another's.

DAV roots: a site administrator gets the site's home; a user of a site the folder
``/home/<user>`` in that home, made (0700) on first use.

When the server runs as root, every step of a request (WsgiDAV's call, each chunk of the body,
its close) runs with the file-system identity of the account concerned
(:meth:`apiserver.sites.actas.ThreadIdentity.acting_as`: ``setfsuid``/``setfsgid`` and the
groups of that thread alone): what DAV creates belongs to the account, and the kernel checks
every open, rename and unlink as the account, never with root's rights, so a path check that
loses a race to a swapped link still cannot reach another site's files.  Between steps the
thread is root again.  Which uid/gid an account has is ``SiteFiles.identity_of(home, user)``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
from typing import Optional

from twisted.logger import Logger
from twisted.web.http import datetimeToString
from wsgidav import dav_provider as wsgidav_dav_provider
from wsgidav import error_printer as wsgidav_error_printer
from wsgidav import request_server as wsgidav_request_server
from wsgidav import util as wsgidav_util
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_error import as_DAVError as _wsgidav_as_dav_error
from wsgidav.lock_man.lock_manager import LockManager
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from apiserver.dav.errors import REFUSED_BY_FILE_SYSTEM, PlainErrors, client_gone
from apiserver.dav.provider import BLOCK_SIZE, HomeProvider, fd_path
from apiserver.dav.state import DavScope, DavState, SiteLockStorage, SitePropertyManager
from apiserver.errors import NotFound
from apiserver.logs import one_line_error
from apiserver.sites.actas import ActingIterator, FsIdentity, SiteFiles, ThreadIdentity
from apiserver.sites.home import is_inside

#: Where ``/dav/`` is mounted (WSGI SCRIPT_NAME).
MOUNT_PATH = "/dav"


class _TwistedLogHandler(logging.Handler):
    """WsgiDAV's errors (it logs through ``logging``) into the server log, each on one bounded
    line: its message and the exception's type and message, never a traceback; a client gone
    mid-transfer at info level."""

    log = Logger(namespace="apiserver.dav")

    def emit(self, record):
        message = " ".join(record.getMessage().split())[:300]
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and client_gone(exc):
            self.log.info("WsgiDAV: {message}: the client closed the connection", message=message)
            return
        if exc is not None:
            message += f" ({one_line_error(exc)})"
        self.log.error("WsgiDAV: {message}", message=message)


def route_wsgidav_logging() -> None:
    """Send WsgiDAV's log records of level ERROR and above to the server log, nothing else."""
    logger = logging.getLogger("wsgidav")
    if not any(isinstance(h, _TwistedLogHandler) for h in logger.handlers):
        logger.addHandler(_TwistedLogHandler(logging.ERROR))
    logger.setLevel(logging.ERROR)
    logger.propagate = False


def as_dav_error(error):
    """WsgiDAV's ``as_DAVError``, with the kernel's refusal (PermissionError) a 403 instead of a 500."""
    if isinstance(error, PermissionError):
        return DAVError(HTTP_FORBIDDEN, REFUSED_BY_FILE_SYSTEM)
    return _wsgidav_as_dav_error(error)


def answer_refusals_with_403() -> None:
    """Make WsgiDAV's modules convert exceptions with :func:`as_dav_error` (they imported the name)."""
    for module in (wsgidav_request_server, wsgidav_error_printer, wsgidav_dav_provider, wsgidav_util):
        module.as_DAVError = as_dav_error


@dataclasses.dataclass(frozen=True)
class DavAccount:
    """Who a DAV request acts as: the site and, for a user of it, the user name (None: its administrator)."""

    site: str
    user: Optional[str] = None


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
    """Answers a 500 with a fixed plain text, whoever made it: WsgiDAV's error page would show the
    exception (with host paths); PlainErrors below has logged it on one line."""

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
        "middleware_stack": [HideServerErrors, PlainErrors, RequestResolver],
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
    """WSGI application: ``environ["apiserver.dav.account"]`` -> its root's provider -> WsgiDAV.

    ``state``: where sites' dead properties and locks live; ``site_files``: who a request of the
    site's administrator or of one of its users acts as when the server runs as root (default: the
    home's owner for every account).
    """

    def __init__(self, site_homes, state: DavState, as_owner: Optional[bool] = None,
                 site_files: Optional[SiteFiles] = None):
        self.site_homes = site_homes
        self.state = state
        self.wsgidav = AccountDavApp(wsgidav_config())
        route_wsgidav_logging()
        answer_refusals_with_403()
        self.as_owner = os.geteuid() == 0 if as_owner is None else as_owner
        self.site_files = (site_files or SiteFiles(ThreadIdentity(), site_homes)) if self.as_owner else None
        self._providers: dict = {}
        self._lock = threading.Lock()

    def _locate(self, account: DavAccount):
        """Blocking, as root.  ``(root, identity)``: the real path of ``account``'s DAV root and the
        file-system identity its requests act as (None when the server is not root); NotFound
        when its site has no home here."""
        home = self.site_homes.get(account.site)
        files = self.site_files
        identity = files.identity_of(home, account.user) if files is not None else None
        root = os.path.realpath(home.root)
        if account.user is not None:
            root = user_folder(root, account.user, identity)
        if identity is not None:
            files.reach(identity)
        return root, identity

    def __call__(self, environ, start_response):
        _serving.provider = None
        self.state.begin_request()
        account: DavAccount = environ["apiserver.dav.account"]
        try:
            root, identity = self._locate(account)
        except NotFound:
            return _plain(start_response, "404 Not Found", f"site {account.site} has no files on this server")
        if identity is None:
            return self._serve(environ, start_response, root, account)
        # WsgiDAV's call and the first chunk in one block as the account (its body is a generator:
        # the call alone does little), the end of the body and its close in another.
        return ActingIterator.of_call(lambda: self._serve(environ, start_response, root, account), identity,
                                      self.site_files.threads)

    def _serve(self, environ, start_response, root: str, account: DavAccount):
        try:
            _serving.provider = self.provider_for(root, account)
        except NotFound:
            return _plain(start_response, "404 Not Found", f"site {account.site} has no files on this server")
        environ["wsgidav.auth.user_name"] = f"{account.user}@{account.site}" if account.user else account.site
        environ["wsgidav.auth.realm"] = "apiserver DAV"
        return self.wsgidav(environ, start_response)

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


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def user_folder(home_root: str, user: str, owner: Optional[FsIdentity]) -> str:
    """Blocking.  ``<home>/home/<user>``, made on first use (0700, given to ``owner`` when the server is
    root); its real path.  Made through descriptors, never through a link: ``home`` or the user's
    folder swapped for one is refused (PermissionError)."""
    if not user or "/" in user or user in (".", ".."):
        raise PermissionError(f"no DAV folder for the user name {user!r}")
    opened = []
    try:
        opened.append(os.open(home_root, _DIRECTORY))
        for name, mode in (("home", 0o755), (user, 0o700)):
            made = True
            try:
                os.mkdir(name, mode, dir_fd=opened[-1])
            except FileExistsError:
                made = False
            opened.append(os.open(name, _DIRECTORY, dir_fd=opened[-1]))
            if made and owner is not None and name == user:
                os.fchown(opened[-1], owner.uid, owner.gid)
        real = fd_path(opened[-1])
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PermissionError(f"the DAV folder of {user} is not a folder of the site's home") from None
        raise
    finally:
        for fd in opened:
            os.close(fd)
    if not is_inside(real, home_root):
        raise PermissionError(f"the DAV folder of {user} leads out of the site's home")
    return real


#: Files up to this size are read whole on the DAV thread that opens them (one hop, one write).
READ_WHOLE = BLOCK_SIZE


@dataclasses.dataclass
class FileAnswer:
    """What a plain GET sends: the open file (or, when small, its whole content) and the headers
    WsgiDAV would send (length, type, Last-Modified, ETag from the opened file)."""

    fileobj: Optional[object]
    size: int
    headers: list
    content: Optional[bytes] = None

    @classmethod
    def of(cls, fileobj, content_type: str, read_small: bool = True, info: Optional[os.stat_result] = None
           ) -> "FileAnswer":
        """Blocking.  The answer for ``fileobj`` (read whole and closed when small and ``read_small``);
        ``info``: its ``fstat`` when the caller has it.  No ``Date``: Twisted gives every answer one."""
        if info is None:
            info = os.fstat(fileobj.fileno())
        size = info.st_size
        headers = [("Content-Length", str(size)), ("Last-Modified", http_date(info.st_mtime)),
                   ("Content-Type", content_type), ("ETag", f'"{info.st_ino}-{int(info.st_mtime)}-{size}"'),
                   ("Accept-Ranges", "bytes"), ("MS-Author-Via", "DAV")]
        if read_small and size <= READ_WHOLE:
            with fileobj:
                content = fileobj.read(size + 1)
            if len(content) != size:  # changed while read: let the stream send what it is
                return cls(None, len(content), headers[1:] + [("Content-Length", str(len(content)))], content)
            return cls(None, size, headers, content)
        return cls(fileobj, size, headers)


def http_date(seconds: float) -> str:
    """``seconds`` as an HTTP date (RFC 9110's IMF-fixdate), as WsgiDAV writes Last-Modified."""
    return datetimeToString(seconds).decode("ascii")


def _plain(start_response, status: str, message: str):
    body = (message + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
