"""The cost of the security middleware: the same authenticated SOAP call with it on and off.

One ``apiserver init`` state, served twice on CPU 0 and called by wrk (16 connections, CPU 1)
with the appliance administrator's key:

* on:  ``apiserver serve`` with 100 IP restrictions on the administrator (99 that do not
  match 127.0.0.1, on every gate, IPv4 and IPv6, plus ``127.0.0.1`` for gate SOAP), Anvil
  counting loopback too (``[anvil] whitelist`` empty), the API toggle and https_only checks;
* off: serve_without_middleware.py on the same config and database: the GateKeeper only
  authenticates the key (no toggle, https_only, Anvil or IP-restriction check).

Both runs first prove which mode they are in: a request forwarded for 203.0.113.7 (the
benchmark process is a trusted proxy) is refused with the middleware on and answered with it
off.  Runs alternate off/on for ``--rounds`` rounds; the cost is computed from the mean
throughputs.

    python benchmarks/bench_middleware.py [--duration 8] [--warmup 2] [--rounds 2]
"""

from __future__ import annotations

import os
import statistics
import sys
import xmlrpc.client

import harness as h

OPERATION = "common_whoami"
RESTRICTIONS = 100
OUTSIDER = "203.0.113.7"  # TEST-NET-3: matched by no restriction


def restriction_entries() -> list[tuple[str, str | None]]:
    """127.0.0.1 for SOAP first (so the benchmark keeps access), then 99 that never match it."""
    gates = ["SOAP", None, "UI", "DAV", "CLI"]
    entries = [("127.0.0.1", "SOAP")]
    for i in range(RESTRICTIONS - 1):
        gate = gates[i % len(gates)]
        if i % 3 == 0:
            entries.append((f"2001:db8:{i:x}::/48", gate))
        elif i % 3 == 1:
            entries.append((f"10.{i}.0.0/16", gate))
        else:
            entries.append((f"198.51.100.{i}", gate))
    return entries


def add_restrictions(setup: h.ApiserverSetup) -> int:
    """Store the entries through the API (auth.restrict_ip); returns how many the server lists."""
    proxy = xmlrpc.client.ServerProxy(f"{setup.url}/xmlrpc?authkey={setup.admin_key}", allow_none=True)
    for ip, gate in restriction_entries():
        proxy.auth.restrict_ip(ip, gate)
    return len(proxy.auth.get_ip_restrictions())


def outsider_admitted(url: str, body: str) -> bool:
    """Whether a call forwarded for OUTSIDER is answered (it is when the middleware is off)."""
    status, text = h.post(url, body, dict(h.SOAP_HEADERS, **{"X-Forwarded-For": OUTSIDER}))
    return status == 200 and f"{OPERATION}Response" in text


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0], duration=8, warmup=2)
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs of runs (default 2)")
    args = parser.parse_args()
    h.header(f"SOAP {OPERATION}: middleware on ({RESTRICTIONS} IP restrictions, Anvil on) vs off", args.duration)
    body = h.soap_envelope(OPERATION)
    with h.scratch_dir("bench-middleware-") as workdir:
        log = os.path.join(workdir, "servers.log")
        setup = h.init_apiserver(workdir, {
            "auth": {"ip_restriction_limit": str(RESTRICTIONS)},
            "anvil": {"whitelist": ""},
            "core": {"http_trusted_forward": h.HOST},
        })
        url = f"{setup.url}/soap?authkey={setup.admin_key}"
        modes = {
            "off": [h.PYTHON, os.path.join(h.HERE, "serve_without_middleware.py"), "--config", setup.config_path],
            "on": setup.serve_argv(),
        }
        with h.pinned_server(modes["on"], setup.port, log):
            print(f"stored IP restrictions: {add_restrictions(setup)}")
        results: dict[str, list[h.WrkResult]] = {"off": [], "on": []}
        for round_no in range(1, args.rounds + 1):
            for mode, argv in modes.items():
                with h.pinned_server(argv, setup.port, log):
                    h.check_answer(url, body, h.SOAP_HEADERS, f"{OPERATION}Response")
                    if outsider_admitted(url, body) != (mode == "off"):
                        sys.exit(f"middleware {mode}: a call for {OUTSIDER} was not treated as expected; log:\n{h.tail(log)}")
                    result = h.measure(url, body, h.SOAP_HEADERS, args.duration, args.warmup, workdir)
                results[mode].append(result)
                print(result.row(f"round {round_no}: middleware {mode}"))
        off_rps = statistics.mean(r.rps for r in results["off"])
        on_rps = statistics.mean(r.rps for r in results["on"])
        print()
        print(f"mean throughput: off {off_rps:.0f} req/s, on {on_rps:.0f} req/s")
        print(f"middleware cost: {100 * (1 - h.ratio(on_rps, off_rps)):.1f}% of throughput   (target: under 10%)")
        h.compare("on / off (last round)", results["on"][-1], results["off"][-1], "p50/p99 ratios of the last round")


if __name__ == "__main__":
    main()
