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

import harness as h

OPERATION = "common_whoami"


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"SOAP {OPERATION}: apiserver (authenticated) vs bare Spyne on Twisted's WSGIResource", args)
    h.versus_baseline(args, "baseline_spyne.py", "bare Spyne (WSGIResource)", "/soap", h.soap_envelope(OPERATION),
                      h.SOAP_HEADERS, f"{OPERATION}Response", "target: throughput at least 2x the bare Spyne baseline")


if __name__ == "__main__":
    main()
