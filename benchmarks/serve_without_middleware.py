"""``apiserver serve`` with the security middleware switched off, for bench_middleware.py only.

"Off" means: the same server, config, database, transports, dispatch and authentication, but
:class:`AuthenticationOnly` replaces the GateKeeper's checks around authentication: no
``https_only`` or API-toggle check, no Anvil check or counting, no IP-restriction check.  A
request is still authenticated by its API key exactly as in the real server.  This exists only
here, in benchmarks/, so no production code path can turn the middleware off.

    python benchmarks/serve_without_middleware.py --config FILE
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import defer

from apiserver.context import CallContext
from apiserver.middleware import GateKeeper
from apiserver.middleware.https_only import HttpsOnly


class AuthenticationOnly(GateKeeper):
    """A GateKeeper that only authenticates: the baseline the middleware's cost is measured against.

    It overrides the public interface the transports call (``check_http``, ``admit``), with
    plain Deferred callbacks like the real GateKeeper, so the difference measured is the
    checks alone.
    """

    def check_http(self, request):
        return None

    def admit(self, auth_request) -> defer.Deferred:
        d = self._accounts.authenticate(auth_request.credentials, auth_request.gate, auth_request.address)
        return d.addCallback(self._call_context, auth_request)

    def _call_context(self, identity, request) -> CallContext:
        session_id = request.credentials.session_id if request.credentials.api_key is None else None
        return CallContext(self._api, identity, request.gate, request.address, session_id=session_id)


def gatekeeper_of(app, kind=GateKeeper) -> GateKeeper:
    """A gatekeeper of ``kind`` over the application's own parts (as the Application builds its own)."""
    return kind(app.config, app.accounts, app.anvil, app.ip_restrictions, HttpsOnly(app.config),
                app.notices.devices, app.api)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args()

    from twisted.internet import reactor

    from apiserver.app import create_application
    from apiserver.cli.main import _load
    from apiserver.logs import start_logging
    from apiserver.service import start_application

    pm, config = _load(args.config)
    start_logging(config)
    app = create_application(config, reactor=reactor, plugin_manager=pm)
    app.gatekeeper = gatekeeper_of(app, AuthenticationOnly)  # before the server hands it to the transports
    app.storage.migrate()
    start_application(app, reactor)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
