"""CPU time of one admission, in process: the real GateKeeper against AuthenticationOnly.

The HTTP comparison in bench_middleware.py includes everything a request costs and the noise
of a shared machine; this isolates what the middleware adds.  It builds the application from
the benchmark's config (same database, same 100 IP restrictions), then awaits
``admit(...)`` for an API-key request from 127.0.0.1 through gate SOAP many times with
each GateKeeper in turn and prints the CPU microseconds per call.

    taskset -c 0 python benchmarks/admit_cost.py --config FILE --key KEY
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

CALLS = 20000
REPEATS = 3


async def cost_per_call(keeper, request, calls: int) -> float:
    """CPU microseconds per ``keeper.admit(request)``, awaited one after another."""
    for _ in range(200):  # warm the key and restriction caches
        await keeper.admit(request)
    started = time.process_time()
    for _ in range(calls):
        await keeper.admit(request)
    return (time.process_time() - started) / calls * 1e6


async def compare(app, request) -> dict[str, list[float]]:
    from apiserver.middleware import GateKeeper
    from serve_without_middleware import AuthenticationOnly, gatekeeper_of

    costs: dict[str, list[float]] = {"GateKeeper": [], "AuthenticationOnly": []}
    for _ in range(REPEATS):
        for keeper in (gatekeeper_of(app, GateKeeper), gatekeeper_of(app, AuthenticationOnly)):
            costs[type(keeper).__name__].append(await cost_per_call(keeper, request, CALLS))
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--key", required=True, help="an API key of the account to admit")
    args = parser.parse_args()

    from twisted.internet import defer, reactor

    from apiserver.app import create_application
    from apiserver.cli.main import _load
    from apiserver.context import AuthRequest, Credentials, Gate

    pm, config = _load(args.config)
    app = create_application(config, reactor=reactor, plugin_manager=pm)
    app.start_pools()
    request = AuthRequest(gate=Gate.SOAP, address="127.0.0.1", credentials=Credentials(api_key=args.key))
    outcome = []

    def report(costs):
        on, off = statistics.median(costs["GateKeeper"]), statistics.median(costs["AuthenticationOnly"])
        print(f"admit() in process, median of {REPEATS} x {CALLS} calls: GateKeeper {on:.1f} us, "
              f"AuthenticationOnly {off:.1f} us; the middleware adds {on - off:.1f} us of CPU per request")

    d = defer.ensureDeferred(compare(app, request)).addCallback(report)
    d.addErrback(lambda failure: outcome.append(failure.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if outcome:
        print(outcome[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
