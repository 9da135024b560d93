"""Calls that read the database, against our own ``common_whoami`` and a bare Spyne service, in one run.

One ``apiserver serve`` (SQLite by default; ``--db postgresql`` or ``--db mariadb`` uses a
scratch database on the loopback test server) and the bare Spyne baseline run at the same time
on CPU 0.  wrk (16 connections, CPU 1) sends, one target at a time in alternating rounds:

* bare Spyne ``common_whoami`` (no authentication, no database);
* apiserver ``common_whoami`` (authentication and middleware, no database read);
* apiserver ``common_get_email`` (one account row);
* apiserver ``auth_get_ip_restrictions`` (the account's restriction rows);

every apiserver call as a site administrator (an API key of ``bench.example``'s administrator,
which has an email address and ``--restrictions`` IP restrictions).  Printed: each read's
throughput against bare Spyne and against ``common_whoami`` (per-round ratios, medians), and
its p99/p50 latency ratio.

    python benchmarks/bench_reads.py [--db sqlite|postgresql|mariadb] [--account-cache-ttl N] [--rounds 4]
"""

from __future__ import annotations

import contextlib
import os
import statistics

import harness as h

SPYNE = "bare Spyne whoami"
WHOAMI = "apiserver common_whoami"
READS = ("common_get_email", "auth_get_ip_restrictions")


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0], rounds=4)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite")
    parser.add_argument("--restrictions", type=int, default=3, help="IP restrictions of the site administrator")
    parser.add_argument("--account-cache-ttl", type=int, default=None,
                        help="[auth] account_cache_ttl of the server (0: every common_get_email reads the database)")
    args = parser.parse_args()
    h.header(f"reads as a site administrator ({args.db}) vs common_whoami vs bare Spyne", args)
    with h.scratch_dir("bench-reads-") as workdir, contextlib.ExitStack() as stack:
        extra = {}
        if args.account_cache_ttl is not None:
            extra["auth"] = {"account_cache_ttl": str(args.account_cache_ttl)}
        if args.db != "sqlite":
            extra["db"] = {"url": stack.enter_context(h.scratch_database(args.db))}
        log = os.path.join(workdir, "servers.log")
        baseline_port = h.free_port()
        baseline = stack.enter_context(h.pinned_server(
            [h.PYTHON, os.path.join(h.HERE, "baseline_spyne.py"), "--port", str(baseline_port)], baseline_port, log))
        setup = h.init_apiserver(workdir, extra)
        server = stack.enter_context(h.pinned_server(setup.serve_argv(), setup.port, log))
        key = h.site_admin_key(setup, restrictions=args.restrictions)
        url = f"{setup.url}/soap?authkey={key}"
        targets = [h.Target(SPYNE, f"http://{h.HOST}:{baseline_port}/", baseline.pid, h.soap_envelope("common_whoami")),
                   h.Target(WHOAMI, url, server.pid, h.soap_envelope("common_whoami"))]
        targets += [h.Target(f"apiserver {op}", url, server.pid, h.soap_envelope(op)) for op in READS]
        for target in targets:
            h.check_answer(target.url, target.body, h.SOAP_HEADERS, "Response")
        print(f"site administrator's restrictions: {args.restrictions}; database: {args.db}; "
              f"[auth] account_cache_ttl: "
              f"{args.account_cache_ttl if args.account_cache_ttl is not None else 'default'}\n")
        results = h.alternate(targets, "", h.SOAP_HEADERS, args.rounds, args.duration, args.warmup, workdir)
        report(results)


def report(results: dict) -> None:
    """Medians per target, then each read against bare Spyne and common_whoami (per-round ratios)."""
    print()
    for label, runs in results.items():
        print(f"{label:<34} median {statistics.median(r.rps for r in runs):>7.0f} req/s   "
              f"p50 {statistics.median(r.p50_ms for r in runs):>6.2f} ms   "
              f"p99 {statistics.median(r.p99_ms for r in runs):>7.2f} ms   "
              f"CPU {statistics.median(r.cpu_ms for r in runs):.3f} ms/req   errors {sum(r.errors for r in runs)}")
    print()
    for label in [WHOAMI] + [f"apiserver {op}" for op in READS]:
        runs = results[label]
        vs_spyne = statistics.median(h.ratio(c.rps, b.rps) for c, b in zip(runs, results[SPYNE]))
        vs_whoami = statistics.median(h.ratio(c.rps, b.rps) for c, b in zip(runs, results[WHOAMI]))
        tail = statistics.median(h.ratio(r.p99_ms, r.p50_ms) for r in runs)
        print(f"{label:<34} {vs_spyne:.2f}x bare Spyne   {vs_whoami:.2f}x common_whoami   p99/p50 {tail:.2f}")
    print("(targets for the reads: >= 2.5x bare Spyne, >= 0.7x common_whoami, p99/p50 <= 3)")


if __name__ == "__main__":
    main()
