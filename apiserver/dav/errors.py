"""DAV error answers and their log lines: plain text naming neither WsgiDAV nor an exception,
and a client gone mid-transfer as one line, never a traceback.

:class:`PlainErrors` takes the place of WsgiDAV's ``ErrorPrinter`` (whose pages name WsgiDAV
and its version, show the source exception, and whose log carries a traceback per failed
request).  Blocking: it runs on the DAV thread pool, inside the WSGI application.
"""

from __future__ import annotations

import errno

from twisted.logger import Logger
from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN, HTTP_INTERNAL_ERROR, HTTP_NO_CONTENT, HTTP_NOT_MODIFIED, DAVError, as_DAVError,
    get_http_status_string,
)
from wsgidav.mw.base_mw import BaseMiddleware

from apiserver.logs import one_line_error

log = Logger(namespace="apiserver.dav")

SERVER_FAILED = "the request failed on the server; the error was logged"
#: What a request gets when the kernel refused the account (EACCES, EPERM) what the path checks allowed.
REFUSED_BY_FILE_SYSTEM = "the file system refused this account access to that file or folder"

#: Errors that mean the client went away (its connection closed under the transfer).
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def client_gone(exc: BaseException) -> bool:
    """``exc`` says the client's connection closed while its request was served."""
    if isinstance(exc, _GONE):
        return True
    return isinstance(exc, ValueError) and "closed file" in str(exc)


def error_body(error: DAVError) -> tuple[str, bytes]:
    """(content type, body) of a DAV error: RFC 4918's XML for a pre- or postcondition, else
    plain text: the status and the reason this server gave, never a source exception."""
    if error.err_condition:
        return "application/xml; charset=utf-8", util.to_bytes(error.err_condition.as_string())
    if error.value == HTTP_INTERNAL_ERROR:
        text = SERVER_FAILED
    else:
        text = get_http_status_string(error)
        if error.context_info and not error.src_exception:
            text += f": {error.context_info}"
    return "text/plain; charset=utf-8", (" ".join(text.split())[:500] + "\n").encode("utf-8")


class PlainErrors(BaseMiddleware):
    """Turns what the DAV application raises into a plain answer (see :func:`error_body`).

    An error the server did not mean (not a :class:`DAVError`) is logged once, on one line
    with its type and message, and answered 500; a client gone mid-transfer is logged on one
    line at info level.  Errors after the answer began cannot change it: the connection is
    closed by the transport (its length was promised).
    """

    def __call__(self, environ, start_response):
        captured = util.SubAppStartResponse()
        started = False
        try:
            app_iter = self.next_app(environ, captured)
            try:
                for chunk in app_iter:
                    if not started:
                        start_response(captured.status, captured.response_headers, captured.exc_info)
                        started = True
                    yield chunk
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
            if not started:
                start_response(captured.status, captured.response_headers, captured.exc_info)
            return
        except DAVError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - every failure gets an answer and one log line
            error = self._unexpected(environ, exc)
        if started or error is None:
            return
        status = get_http_status_string(error)
        if error.value in (HTTP_NOT_MODIFIED, HTTP_NO_CONTENT):
            start_response(status, [("Content-Length", "0"), ("Date", util.get_rfc1123_time())])
            yield b""
            return
        content_type, body = error_body(error)
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Date", util.get_rfc1123_time())] + list(error.add_headers or []))
        yield body if error.add_body else b""

    @staticmethod
    def _unexpected(environ, exc: Exception):
        method, path = environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", "")[:200]
        if client_gone(exc):
            log.info("DAV {method} {path}: the client closed the connection mid-transfer", method=method, path=path)
            return None
        if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EACCES):
            return DAVError(HTTP_FORBIDDEN, REFUSED_BY_FILE_SYSTEM)
        log.error("DAV {method} {path} failed: {error}", method=method, path=path, error=one_line_error(exc))
        return as_DAVError(exc)
