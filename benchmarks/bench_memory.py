"""Memory: a million Anvil-tracked addresses, and the server's RSS over a soak at 16 connections.

Part 1 (in process, pinned to CPU 0): the resident set size of a fresh interpreter before and
after ``MemoryAnvilStore`` tracks ``--addresses`` distinct failing addresses (half IPv4, half
IPv6 /64 networks, as Anvil keys them), and, as the baseline measured in the same run, the
same addresses in the layout the store used before (an OrderedDict of key strings to
AnvilState tuples).  Each layout is measured in its own child process.

Part 2 (``--soak SECONDS``, default 600; 0 skips it): ``apiserver serve`` on CPU 0 under wrk
(16 connections, CPU 1) for that long, cycling through ``common_whoami``,
``common_get_email`` and ``auth_get_ip_restrictions`` as a site administrator plus a bad key
forwarded for ever new addresses (so Anvil fills to ``[anvil] max_tracked``, 5,000 here).
The server's RSS is sampled every ``--sample`` seconds; printed: RSS after the warm-up (the
baseline), at the end, the highest, and the growth over the second half of the soak.

    python benchmarks/bench_memory.py [--addresses 1000000] [--soak 600] [--sample 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

import harness as h

CHILD = r"""
import gc, ipaddress, sys, collections
from typing import NamedTuple
sys.path.insert(0, {repo!r})
n, layout = {n}, {layout!r}

def rss_kb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))

class Clock:
    def seconds(self):
        return 0.0

from apiserver.middleware.anvil_store import MemoryAnvilStore, after_failure

def keys():
    for i in range(n // 2):
        yield str(ipaddress.IPv4Address(0x0A000000 + i))
        yield f"{{ipaddress.IPv6Address((0x20010DB8_00000000 + i) << 64)}}/64"

class OldState(NamedTuple):
    count: int
    window_end: float
    blocked_until: float = 0.0

gc.collect()
before = rss_kb()
if layout == "compact":
    store = MemoryAnvilStore(Clock(), n + 1)
    for key in keys():
        store.record_failure(key, 0.0, 900, 20)
    tracked = len(store)
else:  # the previous layout: OrderedDict of key strings to state tuples
    states = collections.OrderedDict()
    for key in keys():
        states[key] = OldState(1, 900.0, 0.0)
        states.move_to_end(key)
    tracked = len(states)
gc.collect()
print(tracked, before, rss_kb())
"""


def measure_layout(layout: str, addresses: int) -> tuple[int, float]:
    """(tracked addresses, MB of RSS they added) in a fresh child process."""
    code = CHILD.format(repo=os.path.dirname(h.HERE), n=addresses, layout=layout)
    done = subprocess.run(["taskset", "-c", h.SERVER_CPU, h.PYTHON, "-c", code], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{layout} layout failed:\n{done.stderr}")
    tracked, before, after = (int(v) for v in done.stdout.split())
    return tracked, (after - before) / 1024


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def soak_script(key: str) -> str:
    """wrk script: the three reads with ``key`` in turn, and every fourth request a bad key
    forwarded for a new 10.x.y.z address."""
    bodies = [h.soap_envelope(op) for op in ("common_whoami", "common_get_email", "auth_get_ip_restrictions")]
    lua_bodies = ", ".join(f"[==[{b}]==]" for b in bodies)
    return (f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "text/xml; charset=utf-8"\n'
            f'bodies = {{{lua_bodies}}}\ncounter = 0\n'
            'request = function()\n'
            '  counter = counter + 1\n'
            '  if counter % 4 == 0 then\n'
            '    local ip = string.format("10.%d.%d.%d", math.floor(counter / 65536) % 256, '
            'math.floor(counter / 256) % 256, counter % 256)\n'
            '    return wrk.format(nil, "/soap?authkey=' + "0" * 64 + '", {["X-Forwarded-For"] = ip, '
            '["Content-Type"] = "text/xml; charset=utf-8"}, bodies[1])\n'
            '  end\n'
            f'  return wrk.format(nil, "/soap?authkey={key}", nil, bodies[counter % 3 + 1])\n'
            'end\n')


def soak(seconds: int, sample: int) -> None:
    with h.scratch_dir("bench-soak-") as workdir, contextlib.ExitStack() as stack:
        setup = h.init_apiserver(workdir, {"anvil": {"whitelist": "", "max_tracked": "5000", "limit": "100000"},
                                           "core": {"http_trusted_forward": h.HOST}})
        server = stack.enter_context(h.pinned_server(setup.serve_argv(), setup.port, os.path.join(workdir, "log")))
        key = h.site_admin_key(setup)
        script = os.path.join(workdir, "soak.lua")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(soak_script(key))
        argv = ["taskset", "-c", h.CLIENT_CPU, "wrk", "-t1", f"-c{h.CONNECTIONS}", f"-d{seconds + 15}s",
                "--timeout", "10s", "--latency", "-s", script, setup.url + "/"]
        wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(10)  # warm-up: caches, pools, Anvil starting to fill
        baseline = rss_mb(server.pid)
        samples = [(0.0, baseline)]
        print(f"RSS after 10 s of warm-up (baseline): {baseline:.1f} MB", flush=True)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(min(sample, max(0.1, seconds - (time.monotonic() - started))))
            samples.append((time.monotonic() - started, rss_mb(server.pid)))
            print(f"  {samples[-1][0]:>6.0f} s  RSS {samples[-1][1]:.1f} MB", flush=True)
        output = wrk.communicate()[0]
        result = h.parse_wrk(output)
        half = [rss for t, rss in samples if t >= seconds / 2]
        print(f"\nsoak of {seconds} s: {result.rps:.0f} req/s (a quarter of them refused bad keys), "
              f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms")
        print(f"RSS: baseline {baseline:.1f} MB, end {samples[-1][1]:.1f} MB ({samples[-1][1] / baseline:.2f}x), "
              f"highest {max(r for _, r in samples):.1f} MB; second half grew {half[-1] - half[0]:+.1f} MB")
        print("(target: flat — the second half grows by about nothing once Anvil and the caches are full)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--soak", type=int, default=600, help="seconds of soak (0: skip)")
    parser.add_argument("--sample", type=int, default=10, help="seconds between RSS samples")
    args = parser.parse_args()
    print(f"Anvil memory store: {args.addresses:,} distinct addresses, each layout in a fresh process on CPU 0")
    results = {layout: measure_layout(layout, args.addresses) for layout in ("previous", "compact")}
    for layout, (tracked, mb) in results.items():
        print(f"  {layout:<9} layout: {tracked:,} addresses, {mb:.1f} MB RSS, "
              f"{mb * 1024 * 1024 / tracked:.0f} bytes per address")
    print(f"  compact / previous: {h.ratio(results['compact'][1], results['previous'][1]):.2f}x "
          "(target: under 200 MB for 1,000,000)\n", flush=True)
    if args.soak:
        print(f"soak: {args.soak} s at {h.CONNECTIONS} connections, RSS every {args.sample} s", flush=True)
        soak(args.soak, args.sample)


if __name__ == "__main__":
    sys.exit(main())
