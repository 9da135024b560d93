"""The XML-RPC baseline: a bare ``twisted.web.xmlrpc.XMLRPC`` resource with one method.

No authentication; its one method answers like ``common_whoami`` (the same struct).

    python benchmarks/baseline_xmlrpc.py --port 8000
"""

from __future__ import annotations

import argparse

from twisted.web import xmlrpc

from harness import HOST
from baseline_spyne import WHOAMI_ANSWER


class CommonXmlRpc(xmlrpc.XMLRPC):
    """Serves ``common_whoami`` the way Twisted's documentation shows."""

    def xmlrpc_common_whoami(self):
        return WHOAMI_ANSWER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    from twisted.internet import reactor
    from twisted.web.server import Site

    site = Site(CommonXmlRpc(allowNone=True))
    site.log = lambda request: None
    reactor.listenTCP(args.port, site, interface=HOST)
    reactor.run()


if __name__ == "__main__":
    main()
