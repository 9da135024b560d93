"""``/apps/<app>``: where a billing system's single-sign-on link lands, and the page behind it.

A billing system calls ``admin_hijack(site, user, 'UI')`` and sends the customer's browser to
``/apps/<app>?esprit_id=SID`` (WHMCS, ClientExec and Blesta build that URL).  ``GET`` with
``esprit_id`` in the query is the landing, at gate UI through the same middleware as every
login (``https_only``, Anvil, the target's IP restrictions, a suspended site):

* a session that ``admin_hijack`` made for gate UI is taken, so the link serves once; a fresh
  session is opened for the same identity and set as the cookie ``esprit_id`` (the id in the
  link, which passed through the billing system and the browser's history, never becomes the
  browser's session: no fixation); the answer is 303 to the same page without ``esprit_id``
  (other query parameters, e.g. ``mode=add``, are kept);
* an unknown, used, expired or non-single-sign-on id lands nowhere: a 403 page, and Anvil counts
  a session-fixation attempt.

The cookie is ``SameSite=Lax``: the landing is reached from another site, and a ``Strict``
cookie set there would not come along on the redirect (browsers treat the whole chain as
cross-site).  ``GET /apps/<app>`` with the cookie answers a plain HTML page saying who is logged
in, where and through which app; without a live session a 401 page.
"""

from __future__ import annotations

import html
import re
from typing import Optional

from twisted.logger import Logger
from twisted.web import server

from apiserver.context import Credentials, Gate, Identity
from apiserver.errors import ApiError, AuthenticationFailed, Throttled
from apiserver.module import Role
from apiserver.transport.http import ApiResource, auth_request, finish_with
from apiserver.transport.ui_login import SESSION_COOKIE, session_cookie, set_cookie

log = Logger(namespace="apiserver.apps")

_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LINK_INVALID = ("This sign-in link is not valid: it was used already, has expired or was never issued. "
                "Open the control panel again from your billing system for a new one.")
NOT_LOGGED_IN = "Not logged in: open the control panel from your billing system, or log in at /login."


def page(request, status: int, title: str, body: str, headers: Optional[dict] = None) -> bytes:
    """A small HTML page no cache keeps (``body`` is HTML, already escaped)."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"content-security-policy", b"default-src 'none'")
    request.setHeader(b"referrer-policy", b"no-referrer")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"</head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    return text.encode("utf-8")


def without_session_id(uri: bytes) -> bytes:
    """The query string of ``uri`` without its ``esprit_id`` parameters (the others kept as sent)."""
    _, _, query = uri.partition(b"?")
    kept = [part for part in query.split(b"&") if part and part.split(b"=", 1)[0].lower() != b"esprit_id"]
    return b"&".join(kept)


def describe(identity: Identity, app: str) -> str:
    """The page body saying who is logged in, where, through which app."""
    who = html.escape(identity.username)
    if identity.role is Role.ADMIN:
        where = "the appliance (administrator)"
    else:
        role = "site administrator" if identity.role is Role.SITE else "user"
        where = f"site <strong>{html.escape(identity.site or '')}</strong> ({role})"
    via = ""
    if identity.impersonator is not None:
        via = f"<p>Signed in for you by {html.escape(identity.impersonator.describe())}.</p>"
    return (f"<p>Logged in as <strong>{who}</strong> at {where}.</p>{via}"
            f"<p>App: <code>{html.escape(app)}</code></p>")


class AppsResource(ApiResource):
    """``GET /apps/<app>`` (see the module docstring).  ``gatekeeper``: checks and admission at
    gate UI; ``accounts``: opens the fresh session (:class:`apiserver.accounts.Accounts`)."""

    def __init__(self, gatekeeper, accounts):
        super().__init__()
        self.gatekeeper = gatekeeper
        self.accounts = accounts

    def render_GET(self, request):
        refusal = self.gatekeeper.check_http(request, Gate.UI)
        if refusal is not None:
            return page(request, refusal.status, "Refused", f"<p>{html.escape(refusal.message)}</p>",
                        refusal.headers)
        app = request.postpath[0].decode("utf-8", "replace") if request.postpath else ""
        if not _APP.fullmatch(app) or any(request.postpath[1:]):
            return page(request, 404, "No such page", "<p>Pages are /apps/&lt;app&gt;, e.g. /apps/dashboard.</p>")
        given = request.args.get(b"esprit_id") if request.args else None
        if given:
            if len(given) > 1:
                return page(request, 400, "Bad link", "<p>The link names more than one session.</p>")
            credentials = Credentials(sso_session_id=given[0].decode("utf-8", "replace"))
            d = self.gatekeeper.admit(auth_request(self.gatekeeper, request, credentials, Gate.UI))
            d.addCallback(lambda ctx: self.accounts.start_landed_session(ctx.identity))
            d.addCallbacks(self._landed, self._refused, callbackArgs=(request, app),
                           errbackArgs=(request, LINK_INVALID))
        else:
            sid = session_cookie(request)
            if sid is None:  # nothing offered: not an attempt Anvil should count
                return page(request, 401, "Not logged in", f"<p>{html.escape(NOT_LOGGED_IN)}</p>")
            d = self.gatekeeper.admit(auth_request(self.gatekeeper, request, Credentials(session_id=sid), Gate.UI))
            d.addCallbacks(lambda ctx: finish_with(request, page(request, 200, "apiserver",
                                                                 describe(ctx.identity, app))),
                           self._refused, errbackArgs=(request, NOT_LOGGED_IN))
        d.addErrback(self.last_resort, request)
        return server.NOT_DONE_YET

    def _landed(self, sid: str, request, app: str) -> None:
        set_cookie(request, SESSION_COOKIE, sid, same_site="Lax")
        query = without_session_id(request.uri)
        location = f"/apps/{app}".encode("utf-8") + (b"?" + query if query else b"")
        request.setHeader(b"location", location)
        finish_with(request, page(request, 303, "Signed in", "<p>Signed in; continue to "
                                  f'<a href="{html.escape(location.decode("utf-8", "replace"))}">the panel</a>.</p>'))

    def _refused(self, failure, request, message: str) -> None:
        error = failure.value
        if isinstance(error, Throttled):
            body = page(request, 429, "Too many attempts", f"<p>{html.escape(error.message)}</p>",
                        {"retry-after": str(max(1, int(error.retry_after)))})
        elif isinstance(error, AuthenticationFailed):
            status = 403 if request.args and request.args.get(b"esprit_id") else 401
            body = page(request, status, "Not signed in", f"<p>{html.escape(message)}</p>")
        elif isinstance(error, ApiError) and error.http_status < 500:
            body = page(request, error.http_status, "Refused", f"<p>{html.escape(error.message)}</p>")
        else:
            log.failure("an /apps request failed", failure)
            body = self.server_failure(request)
        finish_with(request, body)

    def server_failure(self, request) -> bytes:
        return page(request, 500, "Server error", "<p>The request failed on the server; the error was logged.</p>")
