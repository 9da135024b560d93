"""The web root every HTTP and HTTPS listener serves."""

from __future__ import annotations

from twisted.web import resource

from apiserver.dav.state import dav_state_from_config
from apiserver.transport.apps import AppsResource
from apiserver.dav.wsgi import DavApplication
from apiserver.transport.dav import DavResource
from apiserver.transport.health import HealthResource
from apiserver.transport.http import ApiSite, refuse
from apiserver.transport.metrics import MetricsResource
from apiserver.transport.soap import SoapResource, WsdlResource
from apiserver.transport.ui_login import LoginResource, LogoutResource
from apiserver.transport.wsdl import WsdlCache
from apiserver.transport.xmlrpc import XmlRpcResource


def build_site(*, settings, reactor, gatekeeper, registry, accounts, devices, site_homes, storage, run_blocking,
               metrics, site_files=None, traffic=None, dav_access=None) -> ApiSite:
    """``/soap``, ``/apnscp.wsdl``, ``/xmlrpc``, ``/login``, ``/logout``, ``/apps/``, ``/dav/``,
    ``/health`` and ``/metrics`` on an :class:`ApiSite`; anything else is 404.  Each resource gets
    the parts it uses; ``traffic`` (:class:`apiserver.lifecycle.traffic.TrafficMeter`) counts
    the bodies of every answered request that acted for a site; ``dav_access``
    (:class:`apiserver.lifecycle.dav_access.DavAccess`) refuses sites whose ``dav.enabled`` is 0."""
    wsdl_cache = WsdlCache(registry)
    client_address = gatekeeper.client_address
    root = ApiRoot()
    root.putChild(b"soap", SoapResource(gatekeeper, registry, settings, wsdl_cache))
    root.putChild(b"apnscp.wsdl", WsdlResource(gatekeeper, settings, wsdl_cache))
    root.putChild(b"xmlrpc", XmlRpcResource(gatekeeper, registry))
    root.putChild(b"login", LoginResource(gatekeeper, accounts, devices))
    root.putChild(b"logout", LogoutResource(gatekeeper, accounts, devices))
    root.putChild(b"apps", AppsResource(gatekeeper, accounts))
    dav_state = dav_state_from_config(settings, storage, reactor)
    dav_app = DavApplication(site_homes, dav_state, site_files=site_files) if site_files is not None else None
    dav = DavResource(gatekeeper, reactor, settings, site_homes, dav_app=dav_app, dav_access=dav_access,
                      dav_state=dav_state)
    root.putChild(b"dav", dav)
    root.putChild(b"health", HealthResource(client_address, settings, storage, run_blocking, reactor))
    root.putChild(b"metrics", MetricsResource(client_address, settings, metrics))
    site = ApiSite(root, settings, client_address=client_address)
    site.admit_body = dav.admit_body  # DAV bodies are read only once their request is admitted
    metrics.watch_site(site)
    if traffic is not None:
        site.request_observers.append(traffic.observe_request)
    return site


class ApiRoot(resource.Resource):
    """The root: unknown paths get a plain-text 404 that names the API's URLs."""

    def getChild(self, path, request):
        return _NotFound()


class _NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        return refuse(request, 404, "no such resource; the API is at /soap, /xmlrpc and /apnscp.wsdl, "
                                   "the UI login at /login, single sign-on at /apps/<app>, WebDAV at /dav/")
