"""Fortification and audit over a big site tree, against setfacl -R and find on the same tree.

Builds a WordPress-shaped document root of ``--entries`` files and folders (default 100,000:
30% in wp-includes, 40% in wp-content/plugins, 30% in wp-content/uploads; ten entries per
folder) owned by ``--owner`` (default nobody), and times, in alternating rounds, each from the
same starting state:

- ``fortify max`` from a released tree (every entry carries the web user's ACL: all are taken
  back, then uploads is granted) and ``fortify reset`` from a released tree (all taken back),
  ``fortify release`` from a reset tree (all granted), each against
  ``setfacl -R -m u:www-data:rwX`` on the reset tree;
- ``audit`` (default requirements: what the web user owns or may write, ACLs evaluated) of the
  maxed tree, against ``find ROOT ( -user www-data -o -perm -o+w )``;
- for reference, ``setfacl -R -x u:www-data`` on a released tree (reset's closest command).

The apiserver side runs in this process (the same functions the API calls run on the blocking
pool), the baselines as the commands. Printed: each round, the medians and the ratios
(apiserver / baseline). Needs root, the ``acl`` package, and www-data.

    python benchmarks/bench_fortify.py [--entries 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

from apiserver.sites import audit
from apiserver.sites.fortify import EVERYTHING, apply_writable, detect
from apiserver.sites.home import DOCUMENT_ROOT, SiteHomes

WEB_USER = "www-data"
SECTIONS = (("wp-includes", 0.3), ("wp-content/plugins", 0.4), ("wp-content/uploads", 0.3))
PER_FOLDER = 10  # a folder and nine files
FOLDERS_PER_GROUP = 30


def build_tree(docroot: str, entries: int, uid: int, gid: int) -> int:
    """WordPress markers and ``entries`` more files and folders under docroot, owned by uid:gid.
    Returns the number of entries under docroot (itself included)."""
    made = [docroot]
    for rel, content in (("wp-config.php", "<?php"), ("index.php", "<?php"), ("wp-includes/version.php", "<?php")):
        path = os.path.join(docroot, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(content)
    for section, share in SECTIONS:
        base = os.path.join(docroot, section)
        os.makedirs(base, exist_ok=True)
        folders = max(1, int(entries * share) // PER_FOLDER)
        for i in range(folders):
            group = os.path.join(base, f"g{i // FOLDERS_PER_GROUP}")
            if i % FOLDERS_PER_GROUP == 0:
                os.mkdir(group)
            folder = os.path.join(group, f"f{i}")
            os.mkdir(folder)
            for j in range(PER_FOLDER - 1):
                with open(os.path.join(folder, f"file{j}.php"), "w") as fh:
                    fh.write("<?php\n")
    for dirpath, dirnames, filenames in os.walk(docroot):
        for name in dirnames + filenames:
            made.append(os.path.join(dirpath, name))
    for path in made:
        os.chown(path, uid, gid, follow_symlinks=False)
    return len(made)


def timed(fn) -> tuple:
    """(wall seconds, CPU seconds of this process and its children) of ``fn()``."""
    start, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - start, _cpu() - cpu


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(command: list) -> None:
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {proc.stderr.decode(errors='replace')[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="files and folders in the tree (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--owner", default="nobody", help="the site owner's account (default nobody)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: Fortification changes owners and ACLs of another user's files")
    owner = pwd.getpwnam(args.owner)
    web_uid = pwd.getpwnam(WEB_USER).pw_uid
    print(f"# bench_fortify: {args.entries} entries, {args.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    workdir = tempfile.mkdtemp(prefix="bench-fortify-", dir="/tmp")
    try:
        homes = SiteHomes(os.path.join(workdir, "sites"), args.owner)
        home = homes.create("bench.example")
        docroot = os.path.realpath(home.document_root)
        start = time.perf_counter()
        count = build_tree(docroot, args.entries, owner.pw_uid, owner.pw_gid)
        print(f"# tree: {count} entries under {docroot} (built in {time.perf_counter() - start:.1f} s)")
        profile = detect(docroot)
        max_paths = list(profile.max)

        def fortify(writable: list) -> None:
            apply_writable(docroot, writable, home.owner, web_uid, shown=DOCUMENT_ROOT)

        def audited() -> list:
            return audit.audit(home, DOCUMENT_ROOT, WEB_USER, None, True)

        setfacl_m = ["setfacl", "-R", "-m", f"u:{WEB_USER}:rwX", docroot]
        setfacl_x = ["setfacl", "-R", "-x", f"u:{WEB_USER}", docroot]
        find = ["find", docroot, "(", "-user", WEB_USER, "-o", "-perm", "-o+w", ")", "-print"]
        # (name, state to start from, timed action)
        steps = [
            ("setfacl -R -m", [], lambda: run(setfacl_m)),
            ("fortify max", [EVERYTHING], lambda: fortify(max_paths)),
            ("fortify reset", [EVERYTHING], lambda: fortify([])),
            ("fortify release", [], lambda: fortify([EVERYTHING])),
            ("setfacl -R -x", [EVERYTHING], lambda: run(setfacl_x)),
            ("audit", max_paths, audited),
            ("find", max_paths, lambda: run(find)),
        ]
        results = {name: [] for name, _state, _action in steps}
        cpu = {name: [] for name, _state, _action in steps}
        fortify(max_paths)
        listed = audited()  # warms the caches, and checks that the work is real
        uploads = sum(1 for path in listed if path.startswith(f"{DOCUMENT_ROOT}/wp-content/uploads"))
        print(f"# after max, audit lists {len(listed)} paths ({uploads} in wp-content/uploads)")
        others = {path for path in listed if not path.startswith(f"{DOCUMENT_ROOT}/wp-content/uploads")}
        if not uploads or others != {f"{DOCUMENT_ROOT}/{p.rstrip('/')}" for p in max_paths if "uploads" not in p}:
            raise SystemExit("fortify max or audit did not do what they should: not measuring")
        for round_no in range(args.rounds):
            order = steps if round_no % 2 == 0 else list(reversed(steps))
            line = []
            for name, state, action in order:
                fortify(state)
                seconds, cpu_seconds = timed(action)
                results[name].append(seconds)
                cpu[name].append(cpu_seconds)
                line.append(f"{name} {seconds:.3f}s")
            print(f"round {round_no + 1}: " + ", ".join(line))
        median = {name: statistics.median(values) for name, values in results.items()}
        median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
        print()
        print("medians; wall time, and CPU time (user + system; moves less when other work shares the machine)")
        print(f"{'operation':<16} {'wall':>7} {'CPU':>7}   {'baseline':<14} {'wall':>7} {'CPU':>7}   "
              f"{'ratio wall':>10} {'ratio CPU':>9}")
        for name, base in (("fortify max", "setfacl -R -m"), ("fortify reset", "setfacl -R -m"),
                           ("fortify release", "setfacl -R -m"), ("fortify reset", "setfacl -R -x"),
                           ("audit", "find")):
            print(f"{name:<16} {median[name]:>6.3f}s {median_cpu[name]:>6.3f}s   {base:<14} {median[base]:>6.3f}s "
                  f"{median_cpu[base]:>6.3f}s   {median[name] / median[base]:>9.2f}x "
                  f"{median_cpu[name] / median_cpu[base]:>8.2f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
