"""Latency of API calls while 8 password logins hash at once, against the same calls without them.

One ``apiserver serve`` on CPU 0 (``[auth] hash_threads=8``, ``pbkdf2_iterations`` at its
default 210,000).  In alternating rounds, wrk (16 connections, CPU 1) sends
``common_get_email`` as a site administrator (API key), either alone ("quiet") or while a
second wrk (8 connections, CPU 1) keeps 8 password logins (``POST /login`` as that
administrator) in flight, each one a full PBKDF2-SHA512 hash.  Printed: each round, then the
medians and the per-round ratios of p50, p99 and throughput with logins to without, and the
logins per second.

    python benchmarks/bench_hashing.py [--rounds 4] [--duration 4] [--hash-priority idle|batch|normal]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
import urllib.parse

import harness as h

LOGINS = 8
OPERATION = "common_get_email"
PASSWORD = "bench-password-1"


def wait_until_idle(pid: int, timeout: float = 60.0) -> None:
    """Until process ``pid`` uses under 5% of a core over half a second (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = h.process_cpu_seconds(pid)
        time.sleep(0.5)
        if h.process_cpu_seconds(pid) - before < 0.025:
            return


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0], rounds=4, duration=4, warmup=2)
    parser.add_argument("--hash-priority", choices=("idle", "batch", "normal"), default="idle",
                        help="[auth] hash_priority of the server (default: idle, the shipped default)")
    args = parser.parse_args()
    h.header(f"{OPERATION} (16 connections) with and without {LOGINS} password logins hashing at once, "
             f"hash_priority={args.hash_priority}", args)
    with h.scratch_dir("bench-hashing-") as workdir, contextlib.ExitStack() as stack:
        setup = h.init_apiserver(workdir, {"auth": {"hash_threads": str(LOGINS), "hash_priority": args.hash_priority}})
        server = stack.enter_context(h.pinned_server(setup.serve_argv(), setup.port, os.path.join(workdir, "log")))
        key = h.site_admin_key(setup)
        url = f"{setup.url}/soap?authkey={key}"
        body = h.soap_envelope(OPERATION)
        h.check_answer(url, body, h.SOAP_HEADERS, f"{OPERATION}Response")
        form = urllib.parse.urlencode({"username": "siteadmin", "domain": "bench.example", "password": PASSWORD})
        form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
        h.check_answer(f"{setup.url}/login", form, form_headers, '"siteadmin"')
        login_dir = os.path.join(workdir, "logins")
        os.mkdir(login_dir)
        with open(os.path.join(login_dir, "post.lua"), "w", encoding="utf-8") as fh:
            fh.write(h.lua_script(form, form_headers))

        def with_logins(duration: int):
            """wrk keeping LOGINS logins in flight for a little longer than ``duration``."""
            return subprocess.Popen(
                ["taskset", "-c", h.CLIENT_CPU, "wrk", "-t1", f"-c{LOGINS}", f"-d{duration + 2}s", "--timeout", "30s",
                 "--latency", "-s", os.path.join(login_dir, "post.lua"), f"{setup.url}/login"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        h.run_wrk(url, body, h.SOAP_HEADERS, args.warmup, workdir)
        results = {"quiet": [], "hashing": []}
        login_rates = []
        for round_no in range(args.rounds):
            for mode in (("quiet", "hashing") if round_no % 2 == 0 else ("hashing", "quiet")):
                logins = None
                if mode == "hashing":
                    logins = with_logins(args.duration)
                    time.sleep(1)  # let every login start hashing
                result = h.run_wrk(url, body, h.SOAP_HEADERS, args.duration, workdir, server.pid)
                note = ""
                if logins is not None:
                    login = h.parse_wrk(logins.communicate()[0])
                    wait_until_idle(server.pid)  # logins still hashing must not spill into a quiet round
                    login_rates.append(login.rps)
                    note = f"   logins {login.rps:.1f}/s (p50 {login.p50_ms:.0f} ms, errors {login.errors})"
                results[mode].append(result)
                print(result.row(f"round {round_no + 1}: {mode}") + note, flush=True)
        print()
        for mode, runs in results.items():
            print(f"{mode:<8} median {statistics.median(r.rps for r in runs):>7.0f} req/s   "
                  f"p50 {statistics.median(r.p50_ms for r in runs):>6.2f} ms   "
                  f"p99 {statistics.median(r.p99_ms for r in runs):>7.2f} ms")
        pairs = list(zip(results["hashing"], results["quiet"]))
        p99 = statistics.median(h.ratio(a.p99_ms, b.p99_ms) for a, b in pairs)
        p50 = statistics.median(h.ratio(a.p50_ms, b.p50_ms) for a, b in pairs)
        rps = statistics.median(h.ratio(a.rps, b.rps) for a, b in pairs)
        print(f"with logins / without: p99 {p99:.2f}x, p50 {p50:.2f}x, throughput {rps:.2f}x; "
              f"logins {statistics.median(login_rates):.1f}/s")
        print(f"(target: p99 of {OPERATION} with {LOGINS} logins hashing within 1.5x of its value without)")


if __name__ == "__main__":
    main()
