"""Authenticated XML-RPC call through the whole apiserver against a bare Twisted XML-RPC resource.

Both servers run on CPU 0 and get the same ``common_whoami`` methodCall from wrk (16
connections, CPU 1).  The apiserver (``apiserver init`` + ``apiserver serve``, default
settings) is called at ``/xmlrpc?authkey=`` with the appliance administrator's key, so each
request goes through the middleware, key authentication, dispatch and its hardened XML-RPC
codec; the baseline (baseline_xmlrpc.py, ``twisted.web.xmlrpc.XMLRPC``) authenticates nothing.

    python benchmarks/bench_xmlrpc.py [--duration 10] [--warmup 3]
"""

from __future__ import annotations

import os

import harness as h

METHOD = "common_whoami"
SUCCESS = "<params>"  # only a successful methodResponse has params; a fault has <fault>


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"XML-RPC {METHOD}: apiserver (authenticated) vs bare twisted.web.xmlrpc.XMLRPC", args.duration)
    body = h.xmlrpc_call(METHOD)
    with h.scratch_dir("bench-xmlrpc-") as workdir:
        log = os.path.join(workdir, "servers.log")

        port = h.free_port()
        with h.pinned_server([h.PYTHON, os.path.join(h.HERE, "baseline_xmlrpc.py"), "--port", str(port)], port, log):
            url = f"http://{h.HOST}:{port}/"
            h.check_answer(url, body, h.XMLRPC_HEADERS, SUCCESS)
            baseline = h.measure(url, body, h.XMLRPC_HEADERS, args.duration, args.warmup, workdir)
        print(baseline.row("bare twisted.web.xmlrpc"))

        setup = h.init_apiserver(workdir)
        with h.pinned_server(setup.serve_argv(), setup.port, log):
            url = f"{setup.url}/xmlrpc?authkey={setup.admin_key}"
            h.check_answer(url, body, h.XMLRPC_HEADERS, SUCCESS)
            apiserver = h.measure(url, body, h.XMLRPC_HEADERS, args.duration, args.warmup, workdir)
        print(apiserver.row("apiserver /xmlrpc?authkey="))
        print()
        h.compare("apiserver / bare XMLRPC", apiserver, baseline, "target: throughput >= 0.8x")


if __name__ == "__main__":
    main()
