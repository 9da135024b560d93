"""An authenticated call and a login on a full database against an empty one, in one run.

Two ``apiserver serve`` processes run at the same time on CPU 0, each on its own database
(SQLite by default; ``--db postgresql`` uses scratch databases on the loopback server):

* empty: ``apiserver init`` and the benchmark's site ``bench.example``;
* full:  the same, plus ``--sites`` sites (10,000) with their administrators, ``--keys`` API
  keys (100,000) spread over them and ``--history`` login-history rows (1,000,000), inserted
  in bulk with SQLAlchemy Core ``executemany`` before the server starts.

Both use ``[auth] key_cache_ttl=0``, so every call looks its API key up in the database and
queues a login record (written behind, with the per-account pruning), and
``pbkdf2_iterations=1000``, so a login's database work is not hidden behind 84 ms of hashing.
wrk (16 connections, CPU 1) loads one server at a time in alternating rounds with

* ``common_whoami`` as ``bench.example``'s administrator (the authenticated call), and
* ``POST /login`` as that administrator (a password login opening a session).

Printed: each run, medians, and the per-round full/empty ratios (target: within 10%).

    python benchmarks/bench_scale.py [--db sqlite|postgresql] [--sites 10000] [--keys 100000] [--history 1000000]
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import statistics
import time
import urllib.parse

import sqlalchemy as sa

import harness as h

BATCH = 20_000
PASSWORD = "bench-password-1"
SETTINGS = {"auth": {"key_cache_ttl": "0", "pbkdf2_iterations": "1000"}}


def bulk_fill(url: str, sites: int, keys: int, history: int) -> float:
    """Insert the sites, administrators, keys and history rows; returns the seconds it took."""
    from apiserver.storage import schema

    started = time.monotonic()
    engine = sa.create_engine(url)
    now = datetime.datetime(2026, 11, 1)
    with engine.begin() as conn:
        first_site = (conn.execute(sa.select(sa.func.max(schema.sites.c.id))).scalar() or 0) + 1
        for start in range(0, sites, BATCH):
            conn.execute(schema.sites.insert(), [
                {"id": first_site + i, "domain": f"site{i}.example", "created_at": now}
                for i in range(start, min(sites, start + BATCH))])
        first_user = (conn.execute(sa.select(sa.func.max(schema.users.c.id))).scalar() or 0) + 1
        for start in range(0, sites, BATCH):
            conn.execute(schema.users.insert(), [
                {"id": first_user + i, "site_id": first_site + i, "username": "admin", "role": "site",
                 "password_hash": None, "email": f"admin@site{i}.example", "created_at": now}
                for i in range(start, min(sites, start + BATCH))])
        for start in range(0, keys, BATCH):
            conn.execute(schema.api_keys.insert(), [
                {"user_id": first_user + i % sites, "lookup_hash": secrets.token_hex(32), "key_encrypted": "bulk",
                 "comment": None, "created_at": now} for i in range(start, min(keys, start + BATCH))])
        for start in range(0, history, BATCH):
            conn.execute(schema.login_history.insert(), [
                {"user_id": first_user + i % sites, "at": now + datetime.timedelta(seconds=i),
                 "address": "192.0.2.1", "gate": "SOAP", "method": "key", "success": True}
                for i in range(start, min(history, start + BATCH))])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("sites", "users"):  # the ids above were given explicitly
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT max(id) FROM {table}))")
            conn.exec_driver_sql("ANALYZE")
    elif engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.monotonic() - started


def counts(url: str) -> str:
    from apiserver.storage import schema

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                 for t in (schema.sites, schema.api_keys, schema.login_history)}
    engine.dispose()
    return ", ".join(f"{name} {n:,}" for name, n in found.items())


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0], rounds=4, duration=4, warmup=2)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite")
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=1_000_000)
    args = parser.parse_args()
    h.header(f"full database ({args.sites:,} sites, {args.keys:,} keys, {args.history:,} logins) vs empty, "
             f"{args.db}", args)
    with h.scratch_dir("bench-scale-") as workdir, contextlib.ExitStack() as stack:
        setups, urls = {}, {}
        for name in ("empty", "full"):
            os.mkdir(os.path.join(workdir, name))
            extra = {s: dict(k) for s, k in SETTINGS.items()}
            if args.db != "sqlite":
                extra["db"] = {"url": stack.enter_context(h.scratch_database(args.db))}
            setups[name] = h.init_apiserver(os.path.join(workdir, name), extra)
            urls[name] = extra.get("db", {}).get("url") or "sqlite:///" + os.path.join(
                setups[name].state_dir, "apiserver.db")
        seconds = bulk_fill(urls["full"], args.sites, args.keys, args.history)
        print(f"bulk insert into the full database: {seconds:.1f} s")
        for name in setups:
            print(f"  {name}: {counts(urls[name])}")
        log = os.path.join(workdir, "servers.log")
        servers = {name: stack.enter_context(h.pinned_server(s.serve_argv(), s.port, log))
                   for name, s in setups.items()}
        keys = {name: h.site_admin_key(s, restrictions=1) for name, s in setups.items()}
        form = urllib.parse.urlencode({"username": "siteadmin", "domain": "bench.example", "password": PASSWORD})
        form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
        whoami = h.soap_envelope("common_whoami")
        calls = {
            "authenticated call": ([h.Target(n, f"{setups[n].url}/soap?authkey={keys[n]}", servers[n].pid)
                                    for n in setups], whoami, h.SOAP_HEADERS, "common_whoamiResponse"),
            "password login": ([h.Target(n, f"{setups[n].url}/login", servers[n].pid) for n in setups],
                               form, form_headers, '"siteadmin"'),
        }
        summary = []
        for call, (targets, body, headers, expect) in calls.items():
            print(f"\n{call}:")
            for target in targets:
                h.check_answer(target.url, body, headers, expect)
            results = h.alternate(targets, body, headers, args.rounds, args.duration, args.warmup, workdir)
            pairs = list(zip(results["full"], results["empty"]))
            summary.append((call, statistics.median(r.rps for r in results["empty"]),
                            statistics.median(r.rps for r in results["full"]),
                            statistics.median(h.ratio(f.rps, e.rps) for f, e in pairs),
                            statistics.median(h.ratio(e.cpu_ms, f.cpu_ms) for f, e in pairs),
                            statistics.median(h.ratio(f.p99_ms, e.p99_ms) for f, e in pairs)))
        print()
        for call, empty, full, rps, cpu, p99 in summary:
            print(f"{call:<20} empty {empty:>6.0f} req/s, full {full:>6.0f} req/s: full/empty throughput {rps:.2f}x, "
                  f"requests per CPU-second {cpu:.2f}x, p99 {p99:.2f}x")
        print("(target: the full database within 10% of the empty one)")


if __name__ == "__main__":
    main()
