"""Baseline for bench_dav.py: a bare WsgiDAV on twisted.web.wsgi.WSGIResource, no authentication.

The same library, the same thread count and the same folder as apiserver's ``/dav/``, without
the gate (Basic credentials, Anvil, IP restrictions), the per-account provider and the checks of
apiserver's provider.

    python benchmarks/baseline_wsgidav.py PORT ROOT [THREADS]
"""

from __future__ import annotations

import logging
import sys


def main() -> None:
    port, root = int(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool
    from twisted.web import resource, server
    from twisted.web.wsgi import WSGIResource
    from wsgidav.error_printer import ErrorPrinter
    from wsgidav.fs_dav_provider import FilesystemProvider
    from wsgidav.request_resolver import RequestResolver
    from wsgidav.wsgidav_app import WsgiDAVApp

    logging.getLogger("wsgidav").setLevel(logging.ERROR)
    app = WsgiDAVApp({
        "provider_mapping": {"/": FilesystemProvider(root, fs_opts={})},
        "mount_path": "/dav",
        "middleware_stack": [ErrorPrinter, RequestResolver],
        "lock_storage": True,
        "block_size": 256 * 1024,
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": False},
    })
    pool = ThreadPool(minthreads=0, maxthreads=threads, name="baseline-dav")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    root_resource = resource.Resource()
    root_resource.putChild(b"dav", WSGIResource(reactor, pool, app))
    reactor.listenTCP(port, server.Site(root_resource), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
