"""The cost of the security middleware: the same authenticated SOAP call with it on and off.

One ``apiserver init`` state served by two processes at the same time on CPU 0, called by wrk
(16 connections, CPU 1) with the appliance administrator's key, one server at a time:

* on:  ``apiserver serve`` with 100 IP restrictions on the administrator (99 that do not
  match 127.0.0.1, on every gate, IPv4 and IPv6, plus ``127.0.0.1`` for gate SOAP), Anvil
  counting loopback too (``[anvil] whitelist`` empty), the API toggle and https_only checks;
* off: serve_without_middleware.py on the same settings and database: the GateKeeper only
  authenticates the key (no toggle, https_only, Anvil or IP-restriction check).

Both runs first prove which mode they are in: a request forwarded for 203.0.113.7 (the
benchmark process is a trusted proxy) is refused with the middleware on and answered with it
off.  Runs alternate for ``--rounds`` rounds; the cost is one minus the median of the
per-round on/off throughput ratios.  Finally admit_cost.py measures, in process, the CPU time
one admission takes with each GateKeeper.

    python benchmarks/bench_middleware.py [--rounds 6] [--duration 4] [--warmup 3]
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import xmlrpc.client

import harness as h

OPERATION = "common_whoami"
RESTRICTIONS = 100
OUTSIDER = "203.0.113.7"  # TEST-NET-3: matched by no restriction
ON = "middleware on"
OFF = "middleware off"


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
    args = h.bench_parser(__doc__.splitlines()[0]).parse_args()
    h.header(f"SOAP {OPERATION}: middleware on ({RESTRICTIONS} IP restrictions, Anvil on) vs off", args)
    body = h.soap_envelope(OPERATION)
    with h.scratch_dir("bench-middleware-") as workdir, contextlib.ExitStack() as servers:
        log = os.path.join(workdir, "servers.log")
        on = h.init_apiserver(workdir, {
            "auth": {"ip_restriction_limit": str(RESTRICTIONS)},
            "anvil": {"whitelist": ""},
            "core": {"http_trusted_forward": h.HOST},
        })
        off = on.second_server("middleware-off")
        on_server = servers.enter_context(h.pinned_server(on.serve_argv(), on.port, log))
        print(f"IP restrictions stored for the administrator: {add_restrictions(on)}")
        off_server = servers.enter_context(h.pinned_server(
            [h.PYTHON, os.path.join(h.HERE, "serve_without_middleware.py"), "--config", off.config_path],
            off.port, log))
        targets = [h.Target(OFF, f"{off.url}/soap?authkey={off.admin_key}", off_server.pid),
                   h.Target(ON, f"{on.url}/soap?authkey={on.admin_key}", on_server.pid)]
        for target in targets:
            h.check_answer(target.url, body, h.SOAP_HEADERS, f"{OPERATION}Response")
            if outsider_admitted(target.url, body) != (target.label == OFF):
                sys.exit(f"{target.label}: a call for {OUTSIDER} was not treated as that mode must; "
                         f"log:\n{h.tail(log)}")
        print(f"checked: a call forwarded for {OUTSIDER} is refused with the middleware on, answered with it off\n")
        results = h.alternate(targets, body, h.SOAP_HEADERS, args.rounds, args.duration, args.warmup, workdir)
        throughput, capacity = h.summarize(results, ON, OFF, "target: the middleware costs under 10% of throughput")
        print(f"middleware cost: {100 * (1 - throughput):.1f}% of throughput, "
              f"{100 * (1 - capacity):.1f}% of requests per CPU-second")
        admit = subprocess.run(["taskset", "-c", h.SERVER_CPU, h.PYTHON, os.path.join(h.HERE, "admit_cost.py"),
                                "--config", on.config_path, "--key", on.admin_key],
                               capture_output=True, text=True, timeout=300)
        print(admit.stdout.strip() or f"admit_cost.py failed:\n{admit.stderr}")


if __name__ == "__main__":
    main()
