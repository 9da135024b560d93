"""``/login`` and ``/logout``: the UI gate's password login and the session it opens.

``POST /login`` takes a form (``username``, ``domain`` — empty for the appliance
administrator — and ``password``), goes through ``gatekeeper.check_http`` for gate UI
(``https_only`` applies; the ``[soap] enabled`` toggle does not, the UI is not the API) and
``gatekeeper.admit`` at gate UI (Anvil, password, IP restrictions), tells the browser apart by its
long-lived ``apiserver_device`` cookie (:mod:`apiserver.notices.devices`), then opens a session bound to
gate UI: cookie ``esprit_id``, and with ``[auth] retain_ui_password`` the ``esprit_tag``
cookie that opens the password sealed in the session
(:mod:`apiserver.accounts.ui_password`).  ``GET /login`` answers who the ``esprit_id``
session is (checked at gate UI like any use of it); ``POST /logout`` ends the session and
expires both cookies.

Answers are JSON: 200 ``{"role", "username", "site"}``; 401 for bad credentials and refused
addresses alike; 429 with ``Retry-After`` while Anvil blocks the address; 403 under
``https_only``; 400 for a malformed form; 415 for another Content-Type.
"""

from __future__ import annotations

import json
from typing import Optional, Union
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from apiserver.accounts.passwords import MAX_PASSWORD_LENGTH
from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import ApiError, AuthenticationFailed, Throttled
from apiserver.notices.devices import COOKIE_MAX_AGE, DEVICE_COOKIE
from apiserver.transport.http import ApiResource, auth_request, content_type_is, finish_with

log = Logger(namespace="apiserver.ui")

SESSION_COOKIE = "esprit_id"
TAG_COOKIE = "esprit_tag"
#: The one answer to a wrong username, domain or password and to a refused address.
LOGIN_FAILED = "login failed: wrong username, domain or password, or this address may not log in"
NOT_LOGGED_IN = "not logged in: no live session"
SERVER_FAILED = "the request failed on the server; the error was logged"
_FORM_TYPES = (b"application/x-www-form-urlencoded",)
_FIELDS = ("username", "domain", "password")
#: Most fields a login form may carry (parse_qs stops there instead of building a huge dict).
_MAX_FIELDS = 16


def answer(request, status: int, payload: dict, headers: Optional[dict] = None) -> bytes:
    """A JSON answer that no cache keeps."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    return json.dumps(payload).encode("utf-8")


def _error(request, status: int, message: str, headers: Optional[dict] = None) -> bytes:
    return answer(request, status, {"error": message}, headers)


def set_cookie(request, name: str, value: str, expire: bool = False, max_age: Optional[int] = None,
               same_site: str = "Strict") -> None:
    """Set cookie ``name`` (HttpOnly, path ``/``, Secure over HTTPS).  ``same_site`` Lax only where
    a cross-site link must land logged in (the single-sign-on landing's redirect)."""
    # Written by hand: Twisted's addCookie spells SameSite in lower case.
    cookie = f"{name}={value}; Path=/; HttpOnly; SameSite={same_site}"
    if max_age is not None:
        cookie += f"; Max-Age={max_age}"
    if expire:
        cookie += "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    if request.isSecure():
        cookie += "; Secure"
    request.cookies.append(cookie.encode("ascii"))


def _who(identity: Identity) -> dict:
    return {"role": identity.role.label, "username": identity.username, "site": identity.site}


def form_type_ok(request) -> bool:
    """``application/x-www-form-urlencoded``, charset UTF-8 or none."""
    return content_type_is(request, _FORM_TYPES)


def parse_login_form(body: bytes) -> Union[dict, str]:
    """``{"username", "domain", "password"}`` from a form body, or the reason it is refused."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return f"the form must be UTF-8 and have at most {_MAX_FIELDS} fields"
    values = {}
    for name in _FIELDS:
        given = fields.get(name, [])
        if len(given) > 1:
            return f"the form field {name!r} is given more than once"
        values[name] = given[0] if given else None
    if not values["username"] or values["password"] is None:
        return "username and password are required (domain empty for the appliance administrator)"
    if len(values["password"]) > MAX_PASSWORD_LENGTH:
        return f"password too long: at most {MAX_PASSWORD_LENGTH} characters"
    return values


def session_cookie(request) -> Optional[str]:
    """The ``esprit_id`` cookie as sent, or None."""
    raw = request.received_cookies.get(SESSION_COOKIE.encode("ascii"))
    return raw.decode("utf-8", "replace") if raw else None


class _UiResource(ApiResource):
    """What both UI resources share: the gate check and the answers to a failed admission.

    ``gatekeeper``: HTTP checks and admission at gate UI; ``accounts``: opens and ends sessions
    (:class:`apiserver.accounts.Accounts`); ``devices``: tells browsers apart
    (:class:`apiserver.notices.devices.Devices`).
    """

    def __init__(self, gatekeeper, accounts, devices):
        super().__init__()
        self.gatekeeper = gatekeeper
        self.accounts = accounts
        self.devices = devices

    def method_not_allowed(self, request, allowed: list[str]) -> bytes:
        """405 as JSON, like every UI answer."""
        return _error(request, 405, f"use {', '.join(allowed)}", {"allow": ", ".join(allowed)})

    def _refusal(self, request) -> Optional[bytes]:
        refusal = self.gatekeeper.check_http(request, Gate.UI)
        if refusal is None:
            return None
        return _error(request, refusal.status, refusal.message, refusal.headers)

    def _admit(self, request, credentials: Credentials):
        return self.gatekeeper.admit(auth_request(self.gatekeeper, request, credentials, Gate.UI))

    def _fail(self, failure: Failure, request, message: str) -> None:
        error = failure.value
        if isinstance(error, Throttled):
            body = _error(request, 429, error.message, {"retry-after": str(max(1, int(error.retry_after)))})
        elif isinstance(error, AuthenticationFailed):
            body = _error(request, 401, message)
        elif isinstance(error, ApiError) and error.http_status < 500:
            body = _error(request, error.http_status, error.message)
        else:
            log.failure("a UI request failed", failure)
            body = _error(request, 500, SERVER_FAILED)
        finish_with(request, body)

    def server_failure(self, request) -> bytes:
        return _error(request, 500, SERVER_FAILED)


class LoginResource(_UiResource):
    """``POST /login`` (password login at gate UI), ``GET /login`` (who the session is)."""

    def render_POST(self, request):
        refused = self._refusal(request)
        if refused is not None:
            return refused
        if not form_type_ok(request):
            return _error(request, 415, "log in with Content-Type application/x-www-form-urlencoded (UTF-8)")
        form = parse_login_form(request.content.read())
        if isinstance(form, str):
            return _error(request, 400, form)
        credentials = Credentials(username=form["username"], site=form["domain"] or None, password=form["password"])
        d = self._admit(request, credentials)
        d.addCallback(self._note_device, request)
        d.addCallback(self._open_session, form["password"])
        d.addCallbacks(self._logged_in, self._fail, callbackArgs=(request,), errbackArgs=(request, LOGIN_FAILED))
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET

    def _note_device(self, ctx, request):
        """Tell the device apart by its long-lived cookie (issued now if it has none); a new one is mailed."""
        raw = request.received_cookies.get(DEVICE_COOKIE.encode("ascii"))
        agent = request.getHeader(b"user-agent")
        d = self.devices.ui_login(ctx.identity, raw.decode("ascii", "replace") if raw else None, ctx.client_address,
                             agent.decode("utf-8", "replace")[:512] if agent else None)

        def issue(token):
            set_cookie(request, DEVICE_COOKIE, token, max_age=COOKIE_MAX_AGE)
            return ctx

        return d.addCallback(issue)

    def _open_session(self, ctx, password: str):
        d = self.accounts.start_ui_session(ctx.identity, password)
        return d.addCallback(lambda opened: (ctx.identity, *opened))

    def _logged_in(self, opened, request) -> None:
        identity, sid, tag = opened
        set_cookie(request, SESSION_COOKIE, sid)
        if tag is not None:
            set_cookie(request, TAG_COOKIE, tag)
        finish_with(request, answer(request, 200, _who(identity)))

    def render_GET(self, request):
        refused = self._refusal(request)
        if refused is not None:
            return refused
        sid = session_cookie(request)
        if sid is None:  # nothing offered: not an attempt Anvil should count
            return _error(request, 401, NOT_LOGGED_IN)
        d = self._admit(request, Credentials(session_id=sid))
        d.addCallbacks(lambda ctx: finish_with(request, answer(request, 200, _who(ctx.identity))), self._fail,
                       errbackArgs=(request, NOT_LOGGED_IN))
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET


class LogoutResource(_UiResource):
    """``POST /logout``: ends the ``esprit_id`` session and expires both cookies."""

    def render_POST(self, request):
        refused = self._refusal(request)
        if refused is not None:
            return refused
        sid = session_cookie(request)
        # Knowing a session id already gives more than ending it, so no admission is needed; the
        # answer is the same whether or not the id named a session.
        d = self.accounts.end_session(sid) if sid else defer.succeed(None)
        d.addCallbacks(self._logged_out, self._fail, callbackArgs=(request,), errbackArgs=(request, NOT_LOGGED_IN))
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET

    def _logged_out(self, _, request) -> None:
        set_cookie(request, SESSION_COOKIE, "", expire=True)
        set_cookie(request, TAG_COOKIE, "", expire=True)
        finish_with(request, answer(request, 200, {"logged_out": True}))
