"""Errors a module function or the framework raises, and how each dialect reports them.

Every error a caller can see is an :class:`ApiError`.  Its ``code`` is the SOAP faultcode
(``Client.Denied`` ...), its ``xmlrpc_code`` the stable integer used as XML-RPC ``faultCode``
(documented in the README), its ``http_status`` the status a plain-HTTP gate answers with.
Anything else that escapes a module function is logged with a traceback and reported to the
caller as ``Server.Internal`` without detail, so server data never leaks into a fault.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error a caller may see; ``message`` is meant for a person."""

    code = "Server.Internal"
    xmlrpc_code = 500
    http_status = 500

    def __init__(self, message: str = "internal server error"):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ClientError(ApiError):
    """The caller's mistake."""

    code = "Client"
    xmlrpc_code = 400
    http_status = 400


class Malformed(ClientError):
    """The request body is not a well-formed request of its dialect."""

    code = "Client.Malformed"
    xmlrpc_code = -32700  # XML-RPC interop "parse error"


class UnknownMethod(ClientError):
    """The operation names no exported function."""

    code = "Client.UnknownMethod"
    xmlrpc_code = -32601  # XML-RPC interop "method not found"
    http_status = 404


class InvalidArgument(ClientError):
    """An argument is missing, of the wrong type, or has a value the function refuses."""

    code = "Client.InvalidArgument"
    xmlrpc_code = -32602  # XML-RPC interop "invalid method parameters"


class Denied(ClientError):
    """No valid credentials, or the identity may not do this."""

    code = "Client.Denied"
    xmlrpc_code = 403
    http_status = 403


class AuthenticationFailed(Denied):
    """Credentials were wrong or refused.  ``reason`` (``key``, ``password``, ``session``,
    ``ip``) is for Anvil and the logs only: every caller sees the same message, so a refused
    address looks exactly like a bad password."""

    def __init__(self, reason: str, message: str = "authentication failed: invalid or missing credentials"):
        super().__init__(message)
        self.reason = reason


class SiteSuspended(Denied):
    """The credentials were right, but the account's site is suspended: the caller proved who it
    is, so it is told why it is refused (a wrong password never gets this answer)."""


class NotFound(ClientError):
    """The named site, user, key or other object does not exist."""

    code = "Client.NotFound"
    xmlrpc_code = 404
    http_status = 404


class Exists(ClientError):
    """The object to create exists already."""

    code = "Client.Exists"
    xmlrpc_code = 409
    http_status = 409


class Throttled(ClientError):
    """Anvil refuses authentication from this address until ``retry_after`` seconds pass."""

    code = "Client.Throttled"
    xmlrpc_code = 429
    http_status = 429

    def __init__(self, message: str = "too many failed logins from this address", retry_after: int = 0):
        super().__init__(message)
        self.retry_after = retry_after


class ApiDisabled(ClientError):
    """``[soap] enabled`` is false."""

    code = "Client.Disabled"
    xmlrpc_code = 503
    http_status = 403


class ServerError(ApiError):
    """The server failed; the message says what the caller can do about it."""

    code = "Server.Internal"
    xmlrpc_code = 500
    http_status = 500


#: Every code the server emits, for the README table and the tests that check it.
ALL_ERRORS = (
    Malformed, UnknownMethod, InvalidArgument, Denied, AuthenticationFailed, NotFound, Exists, Throttled,
    ApiDisabled, ServerError,
)
