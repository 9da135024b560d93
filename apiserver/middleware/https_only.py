"""``[frontend] https_only``: remote clients must use HTTPS; loopback HTTP keeps working.

The seed: "scope:set cp.config frontend https_only true will disable remote HTTP ports ...
Unencrypted HTTP traffic over loopback is still permitted such as with cp-proxy."  The
setting is read from the live config on every request, so the ``cp.config`` scope switches
it at once.  The refusal names the HTTPS URL so that a client knows where to go.  Behind a
TLS-ending proxy in ``[core] http_trusted_forward``, the proxy's ``X-Forwarded-Proto: https``
says the client used HTTPS (without it, trusting the proxy for client addresses would make
https_only refuse every proxied request).
"""

from __future__ import annotations

from typing import Optional

from apiserver.addresses import is_host, is_loopback
from apiserver.middleware.address import request_client_address, trusted_forwarded_value


class HttpsOnly:
    """Decides whether a plain-HTTP request must be refused because of ``https_only``.

    ``settings``: the config (``[frontend]``, ``[core] http_trusted_forward``; read per request).
    """

    def __init__(self, settings):
        self._settings = settings

    def refusal(self, request) -> Optional[str]:
        """The reason to refuse ``request`` (a ``twisted.web`` request), or None to let it pass."""
        config = self._settings
        if not config.get("frontend", "https_only") or self.reached_over_https(request):
            return None
        if is_loopback(request_client_address(request, config.get("core", "http_trusted_forward"))):
            return None
        target = self.https_url(request)
        if target is None:
            return "plain HTTP is refused for remote clients ([frontend] https_only); use HTTPS"
        return f"plain HTTP is refused for remote clients ([frontend] https_only); use {target}"

    def reached_over_https(self, request) -> bool:
        """HTTPS to this server, or to a trusted proxy (``[core] http_trusted_forward``) that says so
        with ``X-Forwarded-Proto: https``: TLS ended at the proxy, the client did not use plain HTTP."""
        if request.isSecure():
            return True
        trusted = self._settings.get("core", "http_trusted_forward")
        return trusted_forwarded_value(request, b"x-forwarded-proto", trusted).lower() == "https"

    def https_url(self, request) -> Optional[str]:
        """Where the client should go: ``[frontend] public_url``, else the request's host on the HTTPS port.

        The query string is left out on purpose: it may carry an API key.
        """
        path = request.path.decode("latin-1") if isinstance(request.path, bytes) else str(request.path)
        public = self._settings.get("frontend", "public_url")
        if public:
            return public.rstrip("/") + path
        https_port = self._settings.get("frontend", "https_port")
        if not https_port:
            return None
        host = request.getRequestHostname()
        host = host.decode("latin-1") if isinstance(host, bytes) else str(host)
        if not is_host(host):  # the Host header is the client's word: echo only a plausible name
            host = request.getHost().host
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        port = "" if https_port == 443 else f":{https_port}"
        return f"https://{host}{port}{path}"
