"""apiserver: the security surface of ApisCP's API as a Twisted-hosted SOAP/XML-RPC server."""

from apiserver.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
