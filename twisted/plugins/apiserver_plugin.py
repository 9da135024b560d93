"""``twistd -n apiserver [--config FILE]``: the same server as ``apiserver serve``.

Both build it with :func:`apiserver.service.make_service`; a bad config, missing state, a plugin
that fails to load or a port that cannot be bound ends twistd with one line on stderr and a
non-zero status.
"""

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [["config", "c", None,
                      "config file (default: $APISERVER_CONFIG, /etc/apiserver/config.ini or the checkout's state/config.ini)"]]


def _exit(message: str, status: int):
    sys.stderr.write(f"apiserver: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


@implementer(IServiceMaker, IPlugin)
class ApiServiceMaker:
    tapname = "apiserver"
    description = "ApisCP-compatible SOAP/XML-RPC API server"
    options = Options

    def makeService(self, options):
        from apiserver.config import ConfigError
        from apiserver.plugins import PluginError
        from apiserver.service import StartError, make_service, restore_sigint

        restore_sigint()  # before twistd's reactor installs its handlers
        try:
            server = make_service(options["config"])
        except ConfigError as exc:
            _exit(f"config error: {exc}", 2)
        except (StartError, PluginError) as exc:
            _exit(str(exc), 1)
        server.exit_on_start_failure = True
        return server


serviceMaker = ApiServiceMaker()
