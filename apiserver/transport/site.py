"""The web root every HTTP and HTTPS listener serves."""

from __future__ import annotations

from twisted.web import resource

from apiserver.transport.dav import DavResource
from apiserver.transport.http import ApiSite, refuse
from apiserver.transport.soap import SoapResource, WsdlResource
from apiserver.transport.ui_login import LoginResource, LogoutResource
from apiserver.transport.wsdl import WsdlCache


def build_site(app) -> ApiSite:
    """``/soap``, ``/apnscp.wsdl``, ``/xmlrpc``, ``/login``, ``/logout``, ``/dav/``, ``/health`` and ``/metrics``
    on an :class:`ApiSite`; anything else is 404."""
    from apiserver.transport.health import HealthResource
    from apiserver.transport.metrics import Metrics, MetricsResource
    from apiserver.transport.xmlrpc import XmlRpcResource  # imported late to keep the transports apart

    wsdl_cache = WsdlCache(app.registry)
    root = ApiRoot()
    root.putChild(b"soap", SoapResource(app, wsdl_cache))
    root.putChild(b"apnscp.wsdl", WsdlResource(app, wsdl_cache))
    root.putChild(b"xmlrpc", XmlRpcResource(app))
    root.putChild(b"login", LoginResource(app))
    root.putChild(b"logout", LogoutResource(app))
    root.putChild(b"dav", DavResource(app))
    if getattr(app, "metrics", None) is None:
        app.metrics = Metrics(app)
        sender = getattr(app.notices, "sender", None)
        if sender is not None:  # counted on the pool at each look at the outbox, read when scraped
            app.metrics.outbox_depth = lambda: sender.last_pending or 0
    root.putChild(b"health", HealthResource(app))
    root.putChild(b"metrics", MetricsResource(app, app.metrics))
    site = ApiSite(root, app.config, client_address=app.gatekeeper.client_address)
    app.metrics.watch_site(site)
    return site


class ApiRoot(resource.Resource):
    """The root: unknown paths get a plain-text 404 that names the API's URLs."""

    def getChild(self, path, request):
        return _NotFound()


class _NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        return refuse(request, 404, "no such resource; the API is at /soap, /xmlrpc and /apnscp.wsdl, "
                                   "the UI login at /login, WebDAV at /dav/")
