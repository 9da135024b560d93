"""Authenticated XML-RPC call through the whole apiserver against a bare Twisted XML-RPC resource.

Both servers run at the same time on CPU 0 and get the same ``common_whoami`` methodCall from
wrk (16 connections, CPU 1), one server at a time, in alternating rounds.  The apiserver
(``apiserver init`` + ``apiserver serve``, default settings) is called at ``/xmlrpc?authkey=``
with the appliance administrator's key, so each request goes through the middleware, key
authentication, dispatch and its hardened XML-RPC codec; the baseline (baseline_xmlrpc.py,
``twisted.web.xmlrpc.XMLRPC``) authenticates nothing.

    python benchmarks/bench_xmlrpc.py [--rounds 6] [--duration 4] [--warmup 3]
"""

from __future__ import annotations

import harness as h

METHOD = "common_whoami"
SUCCESS = "<params>"  # only a successful methodResponse has params; a fault has <fault>


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"XML-RPC {METHOD}: apiserver (authenticated) vs bare twisted.web.xmlrpc.XMLRPC", args)
    h.versus_baseline(args, "baseline_xmlrpc.py", "bare twisted.web.xmlrpc", "/xmlrpc", h.xmlrpc_call(METHOD),
                      h.XMLRPC_HEADERS, SUCCESS, "target: throughput at least 0.8x the bare XMLRPC resource")


if __name__ == "__main__":
    main()
