"""``twistd -n apiserver [--config FILE]``: the same server as ``apiserver serve``."""

from twisted.application.service import IServiceMaker, Service
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [["config", "c", None, "config file (default: $APISERVER_CONFIG or conf/config.ini)"]]


class ApiService(Service):
    """Builds the application and starts the listeners when twistd starts the service."""

    def __init__(self, config_file):
        self.config_file = config_file
        self.ports = []

    def startService(self):
        from twisted.internet import reactor

        from apiserver.app import create_application
        from apiserver.config import config_path
        from apiserver.server import start

        super().startService()
        app = create_application(config_file=config_path(self.config_file), reactor=reactor)
        app.storage.migrate()
        self.ports = start(app, reactor)

    def stopService(self):
        super().stopService()
        return None


@implementer(IServiceMaker, IPlugin)
class ApiServiceMaker:
    tapname = "apiserver"
    description = "ApisCP-compatible SOAP/XML-RPC API server"
    options = Options

    def makeService(self, options):
        return ApiService(options["config"])


serviceMaker = ApiServiceMaker()
