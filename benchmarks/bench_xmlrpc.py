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

import contextlib
import os

import harness as h

METHOD = "common_whoami"
SUCCESS = "<params>"  # only a successful methodResponse has params; a fault has <fault>
APISERVER = "apiserver /xmlrpc?authkey="
BASELINE = "bare twisted.web.xmlrpc"


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"XML-RPC {METHOD}: apiserver (authenticated) vs bare twisted.web.xmlrpc.XMLRPC", args)
    body = h.xmlrpc_call(METHOD)
    with h.scratch_dir("bench-xmlrpc-") as workdir, contextlib.ExitStack() as servers:
        log = os.path.join(workdir, "servers.log")
        baseline_port = h.free_port()
        servers.enter_context(h.pinned_server(
            [h.PYTHON, os.path.join(h.HERE, "baseline_xmlrpc.py"), "--port", str(baseline_port)], baseline_port, log))
        setup = h.init_apiserver(workdir)
        servers.enter_context(h.pinned_server(setup.serve_argv(), setup.port, log))
        targets = [h.Target(BASELINE, f"http://{h.HOST}:{baseline_port}/"),
                   h.Target(APISERVER, f"{setup.url}/xmlrpc?authkey={setup.admin_key}")]
        for target in targets:
            h.check_answer(target.url, body, h.XMLRPC_HEADERS, SUCCESS)
        results = h.alternate(targets, body, h.XMLRPC_HEADERS, args.rounds, args.duration, args.warmup, workdir)
        h.summarize(results, APISERVER, BASELINE, "target: throughput at least 0.8x the bare XMLRPC resource")


if __name__ == "__main__":
    main()
