"""The web root every HTTP and HTTPS listener serves."""

from __future__ import annotations

from twisted.web import resource

from apiserver.transport.http import ApiSite
from apiserver.transport.soap import SoapResource, WsdlResource
from apiserver.transport.wsdl import WsdlCache


def build_site(app) -> ApiSite:
    """``/soap``, ``/apnscp.wsdl`` and ``/xmlrpc`` on an :class:`ApiSite`; anything else is 404."""
    from apiserver.transport.xmlrpc import XmlRpcResource  # H4's module; imported late to keep layers apart

    wsdl_cache = WsdlCache(app.registry)
    root = resource.Resource()
    root.putChild(b"soap", SoapResource(app, wsdl_cache))
    root.putChild(b"apnscp.wsdl", WsdlResource(app, wsdl_cache))
    root.putChild(b"xmlrpc", XmlRpcResource(app))
    return ApiSite(root, app.config)
