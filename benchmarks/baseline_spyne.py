"""The SOAP baseline: a bare Spyne service with one method, on Twisted's WSGI resource.

This is how a Spyne service is hosted on current Twisted without apiserver: Spyne's
``WsgiApplication`` inside ``twisted.web.wsgi.WSGIResource`` on the reactor's thread pool,
document/literal wrapped SOAP 1.1 with lxml validation, no authentication.  Its one method
answers like ``common_whoami`` (a record of role, username and a nil site) so both servers
get the same request and send the same shape of reply.

    python benchmarks/baseline_spyne.py --port 8000
"""

from __future__ import annotations

import argparse
import logging

from spyne import Application, ComplexModel, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from harness import HOST, SOAP_NS

#: What ``common_whoami`` answers for the appliance administrator, in both servers.
WHOAMI_ANSWER = {"role": "appliance", "username": "admin", "site": None}


class WhoAmI(ComplexModel):
    """The record apiserver's ``common_whoami`` returns."""

    __namespace__ = SOAP_NS
    role = Unicode
    username = Unicode
    site = Unicode(min_occurs=1, nillable=True)  # sent as xsi:nil, as apiserver does


class CommonService(ServiceBase):
    """One operation with the apiserver's name and namespace."""

    @rpc(_returns=WhoAmI)
    def common_whoami(ctx):
        return WhoAmI(**WHOAMI_ANSWER)


def wsgi_application() -> WsgiApplication:
    # lxml validation as in Spyne's examples; it is also Spyne's faster input path here
    # (~900 req/s against ~650 without a validator on one core).
    app = Application([CommonService], tns=SOAP_NS, name="apnscp",
                      in_protocol=Soap11(validator="lxml"), out_protocol=Soap11())
    return WsgiApplication(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from twisted.internet import reactor
    from twisted.web.server import Site
    from twisted.web.wsgi import WSGIResource

    root = WSGIResource(reactor, reactor.getThreadPool(), wsgi_application())
    site = Site(root)
    site.log = lambda request: None  # no access log, as in the apiserver run
    reactor.listenTCP(args.port, site, interface=HOST)
    reactor.run()


if __name__ == "__main__":
    main()
