"""Adding a site with its system accounts, with 1,000 sites present, against groupadd + useradd alone.

Makes ``--present`` sites first (default 1,000: each its group ``admin<N>``, administrator
``<user>.<N>``, ``site<N>/fst`` tree with ACLs, links, ``etc`` files), then times, in
alternating rounds, ``--rounds`` more site additions (``SiteAccounts.create_site``, what
``admin_add_site`` runs on the blocking pool: groupadd, useradd, chpasswd with a yescrypt hash,
the tree, the web server's ACLs, the links, the synthetic etc/passwd, group, shadow) against
``groupadd`` + ``useradd`` of the same shape run alone as commands.  Prints each round, the
p50/p90 and the ratio of the p50s.  Target: p50 < 1 s.

Every group and user carries a unique prefix (``b<hex>-``) and is removed at the end, even when
the run is interrupted.  Needs root and www-data.

    python benchmarks/bench_sites.py [--present 1000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from apiserver.host import tools
from apiserver.host.accounts import SiteAccounts

WEB_USER = "www-data"


def baseline(prefix: str, number: int) -> float:
    """Seconds of ``groupadd`` + ``useradd`` (no home, the group as primary) as commands."""
    group, user = f"{prefix}-g{number}", f"{prefix}-u.{number}"
    start = time.perf_counter()
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    subprocess.run(["useradd", "--no-create-home", "--no-user-group", "--gid", group, "--shell", tools.NOLOGIN,
                    user], check=True, capture_output=True)
    return time.perf_counter() - start


def cleanup(prefix: str) -> None:
    head = prefix + "-"
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(head):
            subprocess.run(["userdel", entry.pw_name], capture_output=True)
    for entry in grp.getgrall():
        if entry.gr_name.startswith(head):
            subprocess.run(["groupdel", entry.gr_name], capture_output=True)


def percentile(values: list, share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--present", type=int, default=1000, help="sites made before measuring (default 1000)")
    parser.add_argument("--rounds", type=int, default=30, help="measured additions of each kind (default 30)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_sites.py needs root (it makes system accounts)", file=sys.stderr)
        return 2
    prefix = "b" + secrets.token_hex(4)
    top = tempfile.mkdtemp(prefix="apiserver-bench-sites-", dir="/tmp")
    os.chmod(top, 0o711)
    root = os.path.join(top, "sites")
    os.mkdir(root, 0o711)
    accounts = SiteAccounts(root, WEB_USER, prefix, True, "nobody")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; prefix {prefix}; sites_root {root}")
    try:
        start = time.perf_counter()
        for number in range(1, args.present + 1):
            accounts.create_site(number, f"s{number}.example", "owner", password="Bench-pass-1")
            if number % 100 == 0:
                print(f"  {number} sites present ({time.perf_counter() - start:.0f} s)", flush=True)
        ours, theirs = [], []
        for index in range(args.rounds):
            number = args.present + 1 + index
            pair = []
            for kind in (("site", "base") if index % 2 == 0 else ("base", "site")):
                if kind == "site":
                    began = time.perf_counter()
                    accounts.create_site(number, f"s{number}.example", "owner", password="Bench-pass-1")
                    ours.append(time.perf_counter() - began)
                    pair.append(f"site {ours[-1] * 1000:.0f} ms")
                else:
                    theirs.append(baseline(prefix, number))
                    pair.append(f"groupadd+useradd {theirs[-1] * 1000:.0f} ms")
            print(f"round {index + 1}: " + ", ".join(pair), flush=True)
        p50, base50 = statistics.median(ours), statistics.median(theirs)
        print(f"\nwith {args.present} sites present, {args.rounds} additions each:")
        print(f"  add a site (SiteAccounts.create_site): p50 {p50 * 1000:.0f} ms, "
              f"p90 {percentile(ours, 0.9) * 1000:.0f} ms")
        print(f"  groupadd + useradd alone:               p50 {base50 * 1000:.0f} ms, "
              f"p90 {percentile(theirs, 0.9) * 1000:.0f} ms")
        print(f"  ratio of the p50s: {p50 / base50:.2f}x; target p50 < 1 s: {'met' if p50 < 1 else 'NOT met'}")
    finally:
        print("removing the benchmark's accounts and folders ...", flush=True)
        cleanup(prefix)
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
