"""The cost of the security event trail: the same authenticated XML-RPC call with the trail on and off.

One ``apiserver init`` state served by two processes at the same time on CPU 0, called by wrk
(16 connections, CPU 1) with the appliance administrator's key, one server at a time:

* on:  ``apiserver serve`` with ``[audit] enabled=true``;
* off: the same state and settings with ``[audit] enabled=false``.

Both use ``[auth] key_cache_ttl=0`` by default, so every call is a key login that records a
``login_succeeded`` event: the worst case for the trail (with the default key cache a key
records one event a minute).  Both runs first prove which mode they are in: the trail of the
``on`` server grows with its calls, the ``off`` server's stays empty.  Runs alternate for
``--rounds`` rounds; the cost is one minus the median of the per-round on/off throughput ratios.

    python benchmarks/bench_events.py [--rounds 6] [--duration 4] [--warmup 3] [--key-cache-ttl 0]
"""

from __future__ import annotations

import contextlib
import os
import sys
import xmlrpc.client

import harness as h

METHOD = "common.whoami"
ON = "trail on"
OFF = "trail off"


def trail_length(setup: h.ApiserverSetup) -> int:
    """How many security events the server lists (at most 1000)."""
    proxy = xmlrpc.client.ServerProxy(f"{setup.url}/xmlrpc?authkey={setup.admin_key}", allow_none=True)
    return len(proxy.admin.get_security_events(None, 1000))


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--key-cache-ttl", type=int, default=0,
                        help="[auth] key_cache_ttl of both servers (default 0: every call records an event)")
    args = parser.parse_args()
    h.header(f"XML-RPC {METHOD}: security trail on vs off ([auth] key_cache_ttl={args.key_cache_ttl})", args)
    body = h.xmlrpc_call(METHOD)
    settings = {"auth": {"key_cache_ttl": str(args.key_cache_ttl)}, "mail": {"enabled": "false"}}
    with h.scratch_dir("bench-events-") as workdir, contextlib.ExitStack() as servers:
        log = os.path.join(workdir, "servers.log")
        on = h.init_apiserver(workdir, {**settings, "audit": {"enabled": "true"}})
        off = on.second_server("trail-off")
        _set_audit(off.config_path, "false")  # second_server copies on's settings
        on_server = servers.enter_context(h.pinned_server(on.serve_argv(), on.port, log))
        off_server = servers.enter_context(h.pinned_server(off.serve_argv(), off.port, log))
        targets = [h.Target(OFF, f"{off.url}/xmlrpc?authkey={off.admin_key}", off_server.pid),
                   h.Target(ON, f"{on.url}/xmlrpc?authkey={on.admin_key}", on_server.pid)]
        for target in targets:
            h.check_answer(target.url, body, h.XMLRPC_HEADERS, "<methodResponse>")
        # Both servers share one database: the "on" server's events are the only ones written.
        before = trail_length(on)
        for _ in range(5):
            h.check_answer(targets[0].url, body, h.XMLRPC_HEADERS, "<methodResponse>")
        if trail_length(on) > before + 1:  # the listing call itself may be a key login of "on"
            sys.exit(f"the trail-off server recorded events; log:\n{h.tail(log)}")
        for _ in range(5):
            h.check_answer(targets[1].url, body, h.XMLRPC_HEADERS, "<methodResponse>")
        if args.key_cache_ttl == 0 and trail_length(on) < before + 7:
            sys.exit(f"the trail-on server did not record its calls; log:\n{h.tail(log)}")
        print("checked: the trail-on server records its calls, the trail-off server records none\n")
        results = h.alternate(targets, body, h.XMLRPC_HEADERS, args.rounds, args.duration, args.warmup, workdir)
        throughput, capacity = h.summarize(results, ON, OFF, "target: the trail costs under 5% of throughput")
        print(f"trail cost: {100 * (1 - throughput):.1f}% of throughput, "
              f"{100 * (1 - capacity):.1f}% of requests per CPU-second")


def _set_audit(config_path: str, value: str) -> None:
    """Set ``[audit] enabled`` in an ini file written by the harness."""
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str
    config.read(config_path)
    if not config.has_section("audit"):
        config.add_section("audit")
    config.set("audit", "enabled", value)
    with open(config_path, "w", encoding="utf-8") as fh:
        config.write(fh)


if __name__ == "__main__":
    main()
