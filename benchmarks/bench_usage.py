"""Usage: ``admin_get_usage('storage')`` for 1,000 sites, and a full count of a 1,000,000-file tree
against ``du -s`` on the same tree.

1. A real server (``apiserver init`` + ``serve``, default settings) gets ``--sites`` sites
   (default 1,000) through ``admin_add_site`` over XML-RPC; it is restarted, so its start-up
   recount measures every site (timed: the first round, from the server's start until every
   site has figures); then ``admin_get_usage('storage')`` is called ``--calls`` times (default
   100) in a row over XML-RPC with the admin key, and ``admin_get_domains`` (a map of the same
   sites, nothing measured) as the baseline.  Target: p50 < 100 ms.
2. A tree of ``--files`` files (default 1,000,000: 1,000 folders of 1,000, a tenth of them
   5,000 bytes, the rest empty) is made once in ``--tree`` (default
   ``/var/tmp/apiserver-bench-usage-<files>``; reused when it is complete), then, in alternating
   rounds with a warm cache, :func:`apiserver.sites.count.count_tree` (what the recount runs for
   each site, with and without its group) against ``du -s``, and the bare ``lstat`` loop (the
   floor of any Python count) for scale.  Target: within 1.5x of ``du -s``.

Printed: the figures and ratios; nothing is asserted.

    python benchmarks/bench_usage.py [--sites 1000] [--calls 100] [--files 1000000] [--rounds 5]
        [--skip-sites] [--before GIT-REV]
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import stat
import statistics
import subprocess
import sys
import time
import types
import urllib.parse
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

from apiserver.sites.count import count_tree  # noqa: E402

#: SHA512-crypt of "Bench-passw0rd" (auth.cpasswd: no hashing per site added)
CRYPTED = "$6$benchsalt$o0prbEGraGqRjP9lR.OvW6eCI/phwQDufVLnf53i2sikvqh/zsnYy4aFbORPF65IbQbiuDyQB8LX8ykM9T.QY/"


def call(url: str, method: str, *args):
    return xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True).__getattr__(method)(*args)


def timed_calls(url: str, method: str, args: tuple, count: int) -> list:
    """Seconds of each of ``count`` calls in a row."""
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        getattr(proxy, method)(*args)
        times.append(time.perf_counter() - start)
    return times


def timed_raw_calls(url: str, method: str, args: tuple, count: int) -> tuple:
    """Seconds of each of ``count`` calls as raw HTTP (the answer's bytes read, not parsed: the
    server's share), and the answer's size in bytes."""
    parts = urllib.parse.urlsplit(url)
    body = xmlrpc.client.dumps(args, method, allow_none=True).encode("utf-8")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    times, size = [], 0
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("POST", f"{parts.path}?{parts.query}", body, {"Content-Type": "text/xml"})
            size = len(conn.getresponse().read())
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return times, size


def percentile(values: list, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def usage_answers(sites: int, calls: int) -> None:
    with h.scratch_dir("bench-usage-") as workdir:
        # no system accounts: 1,000 sites would leave 1,000 users and groups on the host
        setup = h.init_apiserver(workdir, {"web": {"system_accounts": "false"}})
        url = f"{setup.url}/xmlrpc?authkey={setup.admin_key}"
        log = os.path.join(workdir, "server.log")
        with h.pinned_server(setup.serve_argv(), setup.port, log):
            start = time.perf_counter()

            def add(n: int) -> None:
                call(url, "admin_add_site", f"s{n}.bench.example", f"admin{n}",
                     {"siteinfo.email": f"owner@s{n}.bench.example", "auth.cpasswd": CRYPTED})

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(add, range(sites)))
            print(f"{sites} sites added in {time.perf_counter() - start:.1f} s")
        started = time.perf_counter()
        with h.pinned_server(setup.serve_argv(), setup.port, log):
            while True:
                answer = call(url, "admin_get_usage", "storage")
                if len(answer) == sites and all(v["qused"] is not None for v in answer.values()):
                    break
                time.sleep(0.2)
            print(f"start-up recount of {sites} sites: every site measured {time.perf_counter() - started:.1f} s "
                  "after the server was started")
            usage = timed_calls(url, "admin_get_usage", ("storage",), calls)
            domains = timed_calls(url, "admin_get_domains", (), calls)
            raw_usage, usage_size = timed_raw_calls(url, "admin_get_usage", ("storage",), calls)
            raw_domains, domains_size = timed_raw_calls(url, "admin_get_domains", (), calls)
        for name, times in (("admin_get_usage('storage')", usage), ("admin_get_domains() (baseline)", domains),
                            (f"  raw HTTP, unparsed ({usage_size} B)", raw_usage),
                            (f"  raw HTTP, unparsed ({domains_size} B)", raw_domains)):
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            print(f"  {name:34s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({calls} calls, {sites} sites)")
        ratio = percentile(usage, 0.5) / percentile(domains, 0.5)
        print(f"  admin_get_usage / admin_get_domains p50: {ratio:.2f}x; the client's parsing: "
              f"{(percentile(usage, 0.5) - percentile(raw_usage, 0.5)) * 1000:.1f} ms of the p50")
        print(f"  target: admin_get_usage('storage') p50 < 100 ms -> {percentile(usage, 0.5) * 1000:.1f} ms")


def make_tree(top: str, files: int) -> None:
    """``files`` files in folders of 1,000 (a tenth 5,000 bytes), once: ``.complete`` marks it done."""
    marker = os.path.join(top, ".complete")
    if os.path.exists(marker):
        print(f"reusing the tree in {top}")
        return
    print(f"making {files} files in {top} (once; reused by later runs)")
    start = time.perf_counter()
    content = b"x" * 5000
    for folder in range((files + 999) // 1000):
        path = os.path.join(top, f"g{folder // 100}", f"f{folder}")
        os.makedirs(path, exist_ok=True)
        for n in range(min(1000, files - folder * 1000)):
            fd = os.open(os.path.join(path, f"file{n}"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            if n % 10 == 0:
                os.write(fd, content)
            os.close(fd)
    with open(marker, "w") as fh:
        fh.write(f"{files}\n")
    print(f"  made in {time.perf_counter() - start:.0f} s")


def _cpu_of_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_lstat_count(top: str) -> int:
    """The language's floor for this count: one ``os.lstat`` per name of ``os.listdir`` and a sum,
    no link, filesystem or hard-link care (the tree is two levels of folders): what any Python
    count pays above ``du``."""
    blocks, lstat = 0, os.lstat
    stack = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    while stack:
        fd = stack.pop()
        for name in os.listdir(fd):
            st = lstat(name, dir_fd=fd)
            blocks += st.st_blocks
            if stat.S_ISDIR(st.st_mode):
                stack.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd))
        os.close(fd)
    return blocks


def count_tree_at(rev: str):
    """``count_tree`` as ``apiserver/sites/count.py`` was at git revision ``rev`` (the rest of the
    package as it is now): a before/after in the same run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "-C", root, "show", f"{rev}:apiserver/sites/count.py"], check=True,
                            capture_output=True, text=True).stdout
    module = sys.modules[f"count_at_{rev}"] = types.ModuleType(f"count_at_{rev}")  # dataclasses look it up
    exec(compile(source, f"count.py@{rev}", "exec"), module.__dict__)  # noqa: S102 - our own file at a revision
    return module.count_tree


def recount_against_du(top: str, rounds: int, before: str = "") -> None:
    """Rounds (warm cache; the order rotated each round, as the first count of a round is often the
    slowest in wall time) of ``count_tree(top)``,
    ``count_tree(top, gid)`` (what the recount runs for a site: only its group), the bare
    ``lstat`` floor and ``du -s``: wall time and CPU time (user + system: what the count costs the
    machine, less swayed by other load on a shared host) of each; ratios are medians of each
    round's ratio to that round's ``du -s``.  ``before``: a git revision whose count_tree is
    measured too."""
    subprocess.run(["du", "-s", top], check=True, capture_output=True)  # warm the cache for both
    gid = os.stat(top).st_gid
    runs = {"count_tree": lambda: count_tree(top), "count_tree(gid)": lambda: count_tree(top, gid),
            "bare lstat": lambda: bare_lstat_count(top)}
    if before:
        earlier = count_tree_at(before)
        runs[f"count_tree@{before}"] = lambda: earlier(top)
    wall: dict = {name: [] for name in (*runs, "du -s")}
    cpu: dict = {name: [] for name in wall}
    results: dict = {}
    for n in range(rounds):
        names = list(wall)
        order = names[n % len(names):] + names[:n % len(names)]  # each takes every place in turn
        line = []
        for which in order:
            start = time.perf_counter()
            if which == "du -s":
                before = _cpu_of_children()
                du_kb = int(subprocess.run(["du", "-s", top], check=True, capture_output=True, text=True)
                            .stdout.split()[0])
                used = _cpu_of_children() - before
            else:
                before = _cpu_of_self()
                results[which] = runs[which]()
                used = _cpu_of_self() - before
            wall[which].append(time.perf_counter() - start)
            cpu[which].append(used)
            line.append(f"{which} {wall[which][-1]:.2f} s ({used:.2f} s CPU)")
        print(f"  round {n + 1}: " + ", ".join(line))
    whole = results["count_tree"]
    print(f"  count_tree: {whole.kilobytes} KB, {whole.files} inodes; du -s: {du_kb} KB; count_tree(gid): "
          f"{results['count_tree(gid)'].kilobytes} KB")
    for name in runs:
        ratio = statistics.median(a / b for a, b in zip(wall[name], wall["du -s"]))
        cpu_ratio = statistics.median(a / b for a, b in zip(cpu[name], cpu["du -s"]))
        median, median_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:16s} median {median:.2f} s ({median_cpu:.2f} s CPU) vs du -s "
              f"{statistics.median(wall['du -s']):.2f} s ({statistics.median(cpu['du -s']):.2f} s CPU): "
              f"wall {ratio:.2f}x, CPU {cpu_ratio:.2f}x")
    floor = statistics.median(a / b for a, b in zip(cpu["count_tree"], cpu["bare lstat"]))
    print(f"  target: count_tree within 1.5x of du -s; count_tree / bare lstat CPU {floor:.2f}x (the part a Python "
          "count can still gain)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--tree", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="", help="also count with count_tree as at this git revision")
    parser.add_argument("--skip-sites", action="store_true", help="only the tree count")
    parser.add_argument("--skip-tree", action="store_true", help="only the sites' usage answers")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    if not args.skip_sites:
        print(f"== admin_get_usage('storage') for {args.sites} sites")
        usage_answers(args.sites, args.calls)
    if args.skip_tree:
        return
    top = args.tree or f"/var/tmp/apiserver-bench-usage-{args.files}"
    print(f"== a full count of {args.files} files against du -s")
    make_tree(top, args.files)
    recount_against_du(top, args.rounds, args.before)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
