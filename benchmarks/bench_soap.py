"""Authenticated SOAP call through the whole apiserver against a bare Spyne service, in one run.

Both servers run on CPU 0 and get the same document/literal ``common_whoami`` request from wrk
(16 connections, CPU 1).  The apiserver is started as a user would (``apiserver init`` then
``apiserver serve`` on a temporary config and state dir, default settings otherwise) and every
request carries the appliance administrator's key (``/soap?authkey=``), so each one goes
through the HTTP checks, Anvil, key authentication, IP restrictions, dispatch and the
SOAP codec.  The baseline (baseline_spyne.py) has no authentication at all.

    python benchmarks/bench_soap.py [--duration 10] [--warmup 3]
"""

from __future__ import annotations

import os

import harness as h

OPERATION = "common_whoami"


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"SOAP {OPERATION}: apiserver (authenticated) vs bare Spyne on Twisted's WSGIResource", args.duration)
    body = h.soap_envelope(OPERATION)
    expect = f"{OPERATION}Response"
    with h.scratch_dir("bench-soap-") as workdir:
        log = os.path.join(workdir, "servers.log")

        port = h.free_port()
        with h.pinned_server([h.PYTHON, os.path.join(h.HERE, "baseline_spyne.py"), "--port", str(port)], port, log):
            url = f"http://{h.HOST}:{port}/"
            h.check_answer(url, body, h.SOAP_HEADERS, expect)
            baseline = h.measure(url, body, h.SOAP_HEADERS, args.duration, args.warmup, workdir)
        print(baseline.row("bare Spyne (WSGIResource)"))

        setup = h.init_apiserver(workdir)
        with h.pinned_server(setup.serve_argv(), setup.port, log):
            url = f"{setup.url}/soap?authkey={setup.admin_key}"
            h.check_answer(url, body, h.SOAP_HEADERS, expect)
            apiserver = h.measure(url, body, h.SOAP_HEADERS, args.duration, args.warmup, workdir)
        print(apiserver.row("apiserver /soap?authkey="))
        print()
        h.compare("apiserver / bare Spyne", apiserver, baseline, "target: throughput >= 2x")


if __name__ == "__main__":
    main()
