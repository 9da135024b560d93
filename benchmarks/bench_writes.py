"""Write throughput of an account with many rows against one with few: auth_create_api_key and auth_restrict_ip.

One ``apiserver serve`` (SQLite by default, ``--db postgresql``) on CPU 0 with two sites:
``small.example``, whose administrator has one IP restriction and one API key, and
``big.example``, whose administrator gets ``--rows`` IP restrictions and ``--rows`` API keys
more (bulk-inserted with SQLAlchemy Core, as another node or an import would).
``[auth] ip_restriction_limit`` is raised so both can keep adding.  wrk (16 connections,
CPU 1) calls, as each administrator in turn and in alternating rounds:

* ``auth_create_api_key`` (each call adds a key to the account);
* ``auth_restrict_ip`` (each call adds a distinct address to the account).

Printed: each run, then per call the median throughput and CPU time per request of both
accounts and the median per-round ratio big/small (flat: near 1.0).

    python benchmarks/bench_writes.py [--db sqlite|postgresql] [--rows 5000] [--rounds 4] [--duration 3]
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics

import sqlalchemy as sa

import harness as h

LIMIT = 100_000
CALLS = ("auth_create_api_key", "auth_restrict_ip")


def restrict_ip_script(start: int) -> str:
    """wrk script: auth_restrict_ip with a new 10.x.y.z address per request, from ``start`` on
    (every other address, so that no two entries merge: each is a range of its own to match)."""
    prefix, suffix = h.soap_call("auth_restrict_ip", ip="@IP@").split("@IP@")
    headers = "".join(f'wrk.headers["{k}"] = [==[{v}]==]\n' for k, v in h.SOAP_HEADERS.items())
    return (f'wrk.method = "POST"\n{headers}counter = {start}\n'
            f'prefix = [==[{prefix}]==]\nsuffix = [==[{suffix}]==]\n'
            'request = function()\n'
            '  counter = counter + 1\n'
            '  local n = counter * 2\n'
            '  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, '
            'math.floor(n / 256) % 256, n % 256)\n'
            '  return wrk.format(nil, nil, nil, prefix .. ip .. suffix)\n'
            'end\n')


def seed(url: str, domain: str, rows: int) -> None:
    """Give ``domain``'s administrator ``rows`` more IP restrictions (172.16.0.0/12 addresses,
    with a new ``users.ip_restriction_generation`` as the accounts service draws)
    and API keys (random look-up hashes: rows, not working keys), in bulk.  The addresses are
    every other one, so that no two merge into one range."""
    from apiserver.storage import schema

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        user_id = conn.execute(sa.select(schema.users.c.id).join(schema.sites).where(
            schema.sites.c.domain == domain, schema.users.c.role == "site")).scalar_one()
        conn.execute(schema.ip_restrictions.insert(), [
            {"user_id": user_id, "network": f"172.{16 + (i >> 16 & 15)}.{i >> 8 & 255}.{i & 255}", "gate": None}
            for i in range(0, 2 * rows, 2)])
        conn.execute(schema.users.update().where(schema.users.c.id == user_id)
                     .values(ip_restriction_count=schema.users.c.ip_restriction_count + rows,
                             ip_restriction_generation=secrets.randbits(62) + 1))
        now = conn.execute(sa.select(schema.users.c.created_at).where(schema.users.c.id == user_id)).scalar_one()
        conn.execute(schema.api_keys.insert(), [
            {"user_id": user_id, "lookup_hash": secrets.token_hex(32), "key_encrypted": "seeded", "comment": None,
             "created_at": now} for _ in range(rows)])
    engine.dispose()


def stored_counts(url: str) -> dict:
    """Stored IP restrictions and API keys per site domain (read from the database: a node's
    cache shows rows written behind its back only once its entries expire)."""
    from apiserver.storage import schema

    engine = sa.create_engine(url)
    counts = {}
    with engine.connect() as conn:
        for table in (schema.ip_restrictions, schema.api_keys):
            rows = conn.execute(sa.select(schema.sites.c.domain, sa.func.count()).select_from(
                table.join(schema.users).join(schema.sites)).group_by(schema.sites.c.domain))
            for domain, count in rows:
                counts.setdefault(domain.split(".")[0], {})[table.name] = count
    engine.dispose()
    return counts


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0], rounds=4, duration=3, warmup=1)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite")
    parser.add_argument("--rows", type=int, default=5000, help="extra restrictions and keys of the big account")
    args = parser.parse_args()
    h.header(f"writes: an account with {args.rows} more rows vs one with a few ({args.db})", args)
    with h.scratch_dir("bench-writes-") as workdir, contextlib.ExitStack() as stack:
        extra = {"auth": {"ip_restriction_limit": str(LIMIT)}}
        db_url = None
        if args.db != "sqlite":
            db_url = extra.setdefault("db", {})["url"] = stack.enter_context(h.scratch_database(args.db))
        setup = h.init_apiserver(workdir, extra)
        db_url = db_url or "sqlite:///" + os.path.join(setup.state_dir, "apiserver.db")
        server = stack.enter_context(h.pinned_server(setup.serve_argv(), setup.port, os.path.join(workdir, "log")))
        keys = {name: h.site_admin_key(setup, f"{name}.example", restrictions=1) for name in ("small", "big")}
        seed(db_url, "big.example", args.rows)
        counts = stored_counts(db_url)
        print("at the start: " + "; ".join(f"{name} {counts[name]['ip_restrictions']} IP restrictions, "
                                          f"{counts[name]['api_keys']} API keys" for name in keys) + "\n")
        create = h.soap_call("auth_create_api_key", comment="bench")
        next_ip = {"small": 0, "big": 0}

        def run(call: str, name: str, duration: int) -> h.WrkResult:
            url = f"{setup.url}/soap?authkey={keys[name]}"
            if call == "auth_create_api_key":
                return h.run_wrk(url, create, h.SOAP_HEADERS, duration, workdir, server.pid)
            result = h.run_wrk_script(url, restrict_ip_script(next_ip[name]), duration, workdir, server.pid)
            next_ip[name] += result.requests + 1000  # past any address this run may have sent
            return result

        for call in CALLS:
            for name in keys:
                h.check_answer(f"{setup.url}/soap?authkey={keys[name]}",
                               create if call == "auth_create_api_key" else h.soap_call(call, ip="10.255.255.255"),
                               h.SOAP_HEADERS, f"{call}Response")
                if args.warmup:
                    run(call, name, args.warmup)
        results = {(call, name): [] for call in CALLS for name in keys}
        for round_no in range(args.rounds):
            for call in CALLS:
                for name in (("small", "big") if round_no % 2 == 0 else ("big", "small")):
                    result = run(call, name, args.duration)
                    results[(call, name)].append(result)
                    print(result.row(f"round {round_no + 1}: {call} {name}"), flush=True)
        counts = stored_counts(db_url)
        print("\nat the end: " + "; ".join(f"{name} {counts[name]['ip_restrictions']} IP restrictions, "
                                           f"{counts[name]['api_keys']} API keys" for name in keys) + "\n")
        for call in CALLS:
            small, big = results[(call, "small")], results[(call, "big")]
            for name, runs in (("small", small), ("big", big)):
                print(f"{call} {name:<6} median {statistics.median(r.rps for r in runs):>6.0f} req/s   "
                      f"p99 {statistics.median(r.p99_ms for r in runs):>7.2f} ms   "
                      f"CPU {statistics.median(r.cpu_ms for r in runs):.3f} ms/req")
            rps = statistics.median(h.ratio(b.rps, s.rps) for b, s in zip(big, small))
            cpu = statistics.median(h.ratio(s.cpu_ms, b.cpu_ms) for b, s in zip(big, small))
            print(f"{call}: big/small throughput {rps:.2f}x, requests per CPU-second {cpu:.2f}x")
        print("(target: near 1.0 — a write costs the same however many rows the account has)")


if __name__ == "__main__":
    main()
