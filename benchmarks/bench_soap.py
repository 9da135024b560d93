"""Authenticated SOAP call through the whole apiserver against a bare Spyne service, in one run.

Both servers run at the same time on CPU 0 and get the same document/literal
``common_whoami`` request from wrk (16 connections, CPU 1), one server at a time, in
alternating rounds.  The apiserver is started as a user would (``apiserver init`` then
``apiserver serve`` on a temporary config and state dir, default settings otherwise) and every
request carries the appliance administrator's key (``/soap?authkey=``), so each one goes
through the HTTP checks, Anvil, key authentication, IP restrictions, dispatch and the SOAP
codec.  The baseline (baseline_spyne.py) has no authentication at all.

    python benchmarks/bench_soap.py [--rounds 6] [--duration 4] [--warmup 3]
"""

from __future__ import annotations

import contextlib
import os

import harness as h

OPERATION = "common_whoami"
APISERVER = "apiserver /soap?authkey="
BASELINE = "bare Spyne (WSGIResource)"


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"SOAP {OPERATION}: apiserver (authenticated) vs bare Spyne on Twisted's WSGIResource", args)
    body = h.soap_envelope(OPERATION)
    expect = f"{OPERATION}Response"
    with h.scratch_dir("bench-soap-") as workdir, contextlib.ExitStack() as servers:
        log = os.path.join(workdir, "servers.log")
        baseline_port = h.free_port()
        servers.enter_context(h.pinned_server(
            [h.PYTHON, os.path.join(h.HERE, "baseline_spyne.py"), "--port", str(baseline_port)], baseline_port, log))
        setup = h.init_apiserver(workdir)
        servers.enter_context(h.pinned_server(setup.serve_argv(), setup.port, log))
        targets = [h.Target(BASELINE, f"http://{h.HOST}:{baseline_port}/"),
                   h.Target(APISERVER, f"{setup.url}/soap?authkey={setup.admin_key}")]
        for target in targets:
            h.check_answer(target.url, body, h.SOAP_HEADERS, expect)
        results = h.alternate(targets, body, h.SOAP_HEADERS, args.rounds, args.duration, args.warmup, workdir)
        h.summarize(results, APISERVER, BASELINE, "target: throughput at least 2x the bare Spyne baseline")


if __name__ == "__main__":
    main()
