"""apiserver's /dav/ against Apache's mod_dav on the same files, the same core, the same client.

One site's folder is served by both: apiserver (``apiserver init`` + ``serve``, its DAV gate:
HTTP Basic ``user@domain``, a verified password remembered for ``[dav] verified_password_ttl``
so it is not hashed again) and Apache 2.4 started by this script with its own ServerRoot in a
temporary folder (mpm_event, ``dav``/``dav_fs``, Basic authentication against an htpasswd
file with a SHA-1 entry: a password check as cheap as apiserver's remembered one).  Both on
CPU 0 (taskset), one at a time in alternating rounds; wrk on CPU 1:

    PROPFIND Depth 1 over a folder of 1,000 files      16 connections
    GET 64 KB                                          16 connections
    GET 10 MB                                           4 connections
    PUT 64 KB                                          16 connections
    PUT 100 MB                                          4 connections

The ratios are apiserver's requests per second over Apache's (the issue's targets: PROPFIND
>= 0.5x, GET 10 MB and PUT 100 MB >= 0.8x, GET/PUT 64 KB >= 0.3x); figures only, nothing is
asserted.  Run as root (Apache drops to the site owner's account to reach the same files).

    python benchmarks/bench_dav_apache.py [--rounds 3] [--duration 4] [--warmup 2] [--only GET]
"""

from __future__ import annotations

import base64
import os
import pwd
import resource
import secrets
import statistics
import subprocess
import xmlrpc.client

import harness as h

DOMAIN, ADMIN, PASSWORD = "bench.example.com", "benchadmin", "Bench-passw0rd"
LISTED = 1000
MODULES = "/usr/lib/apache2/modules"


def apache_config(root: str, port: int, folder: str, user: str, group: str) -> str:
    """httpd.conf of a private Apache: ``folder`` as /dav/ with mod_dav and Basic authentication."""
    modules = ["mpm_event", "authz_core", "authn_core", "authn_file", "auth_basic", "authz_user", "dav",
               "dav_fs", "mime", "dir", "alias"]
    loads = "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in modules)
    return f"""ServerRoot "{root}"
ServerName 127.0.0.1
Listen {h.HOST}:{port}
{loads}
User {user}
Group {group}
PidFile "{root}/httpd.pid"
ErrorLog "{root}/error.log"
LogLevel warn
DefaultRuntimeDir "{root}"
Mutex file:{root} default
TypesConfig /etc/mime.types
StartServers 1
ServerLimit 1
ThreadsPerChild 32
MaxRequestWorkers 32
KeepAlive On
MaxKeepAliveRequests 0
DavLockDB "{root}/davlock"
LimitRequestBody 0
Alias /dav "{folder}"
<Directory "{folder}">
    Dav On
    AuthType Basic
    AuthName "bench"
    AuthBasicProvider file
    AuthUserFile "{root}/htpasswd"
    Require valid-user
    Options None
    AllowOverride None
</Directory>
"""


def site_owner(folder: str) -> tuple[int, int]:
    """(uid, gid) the site's files belong to: the folder's owner, or the administrator's host
    account (``benchadmin.<N>``) when root owns the folder (system accounts: Apache may not run as root)."""
    info = os.stat(folder)
    if info.st_uid == 0:
        for entry in pwd.getpwall():
            if entry.pw_name.startswith(ADMIN + "."):
                return entry.pw_uid, entry.pw_gid
    return info.st_uid, info.st_gid


def start_apache(workdir: str, folder: str) -> tuple[list, int]:
    """(argv, port) of an Apache serving ``folder`` as the site's owner, with its htpasswd."""
    root = os.path.join(workdir, "apache")
    os.makedirs(root, exist_ok=True)
    uid, gid = site_owner(folder)
    user, group = pwd.getpwuid(uid).pw_name, gid
    os.chown(root, uid, gid)  # the lock database and the runtime files
    subprocess.run(["htpasswd", "-b", "-c", "-s", os.path.join(root, "htpasswd"), ADMIN, PASSWORD],
                   check=True, capture_output=True)
    port = h.free_port()
    config = os.path.join(root, "httpd.conf")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(apache_config(root, port, folder, user, f"#{group}"))
    return ["apache2", "-f", config, "-DFOREGROUND"], port


def fill(folder: str) -> None:
    """The files both serve: 1,000 small ones in ``listing/``, one of 64 KB, one of 10 MB."""
    listing = os.path.join(folder, "listing")
    os.makedirs(listing, exist_ok=True)
    for n in range(LISTED):
        with open(os.path.join(listing, f"page{n:04}.html"), "w") as fh:
            fh.write(f"<p>page {n}</p>\n" * 20)
    with open(os.path.join(folder, "file64k.bin"), "wb") as fh:
        fh.write(os.urandom(64 * 1024))
    with open(os.path.join(folder, "file10m.bin"), "wb") as fh:
        fh.write(os.urandom(1024 * 1024) * 10)
    uid, gid = site_owner(folder)
    os.chown(folder, uid, gid)
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.chown(os.path.join(base, name), uid, gid)


def wrk_script(method: str, headers: dict, body_file: str | None) -> str:
    lines = [f'wrk.method = "{method}"'] + [f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in headers.items()]
    if body_file:
        lines.append(f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*all"); f:close()')
    return "\n".join(lines) + "\n"


def run(url: str, method: str, headers: dict, body_file, connections: int, duration: int, workdir: str,
        pid=None) -> h.WrkResult:
    """wrk on the client core with ``connections``; the server's CPU per request with ``pid``."""
    script = os.path.join(workdir, f"{method.lower()}.lua")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(wrk_script(method, headers, body_file))
    argv = ["taskset", "-c", h.CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
            "--timeout", "30s", "--latency", "-s", script, url]
    cpu_before = h.process_cpu_seconds(pid) if pid else None
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = h.parse_wrk(done.stdout)
    # The client's share of its core: near 100% means wrk, not the server, sets the pace.
    result.client_busy = ((client_after.ru_utime + client_after.ru_stime)
                          - (client_before.ru_utime + client_before.ru_stime)) / duration
    if cpu_before is not None and result.requests:
        result.cpu_ms = (h.process_cpu_seconds(pid) - cpu_before) * 1000.0 / result.requests
    return result


def compare(name: str, targets, path: str, method: str, headers: dict, body_file, connections: int, args,
            workdir: str) -> float:
    """Alternating rounds of one case; prints each run and returns the median per-round ratio."""
    print(f"\n{name}: {method} {path} ({connections} connections)", flush=True)
    for target, auth, prefix in targets:
        run(target.url + prefix + path, method, {**headers, **auth}, body_file, connections, args.warmup, workdir)
    results = {t.label: [] for t, _, _ in targets}
    for round_no in range(args.rounds):
        order = targets if round_no % 2 == 0 else list(reversed(targets))
        for target, auth, prefix in order:
            result = run(target.url + prefix + path, method, {**headers, **auth}, body_file, connections,
                         args.duration, workdir, target.pid)
            results[target.label].append(result)
            print(result.row(f"round {round_no + 1}: {target.label}") + f"   wrk busy {result.client_busy:.0%}",
                  flush=True)
    ours, theirs = targets[0][0].label, targets[1][0].label
    ratios = [h.ratio(a.rps, b.rps) for a, b in zip(results[ours], results[theirs])]
    print(f"  {ours} / {theirs}: {statistics.median(ratios):.2f}x "
          f"(median {statistics.median(r.rps for r in results[ours]):.1f} vs "
          f"{statistics.median(r.rps for r in results[theirs]):.1f} req/s)", flush=True)
    return statistics.median(ratios)


def main() -> None:
    parser = h.bench_parser(__doc__.splitlines()[0], rounds=3, duration=4, warmup=2)
    parser.add_argument("--only", default="", help="run only the cases whose name contains this (e.g. GET)")
    args = parser.parse_args()
    h.header("DAV: apiserver /dav/ vs Apache mod_dav (same files, same core, wrk)", args)
    with h.scratch_dir("bench-dav-apache-") as workdir:
        os.chmod(workdir, 0o755)  # the sites' owner (not root) must reach the site's home
        # Its own prefix: the host groups it makes never take a name (admin1) a test or another run needs.
        setup = h.init_apiserver(workdir, {"web": {"account_prefix": "bench" + secrets.token_hex(2)}})
        with h.pinned_server(setup.serve_argv(), setup.port, os.path.join(workdir, "apiserver.log")) as api_proc:
            api = xmlrpc.client.ServerProxy(f"{setup.url}/xmlrpc?authkey={setup.admin_key}", allow_none=True)
            api.admin_add_site(DOMAIN, ADMIN, {"siteinfo.email": f"owner@{DOMAIN}", "auth.tpasswd": PASSWORD})
            try:
                folder = os.path.join(setup.state_dir, "sites", DOMAIN, "fst", "var/www/html")
                fill(folder)
                argv, port = start_apache(workdir, folder)
                with h.pinned_server(argv, port, os.path.join(workdir, "apache.log")) as apache_proc:
                    ours = base64.b64encode(f"{ADMIN}@{DOMAIN}:{PASSWORD}".encode()).decode()
                    theirs = base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
                    targets = [(h.Target("apiserver /dav/", setup.url, api_proc.pid),
                                {"Authorization": f"Basic {ours}"}, "/dav/var/www/html"),
                               (h.Target("Apache mod_dav", f"http://{h.HOST}:{port}", apache_proc.pid),
                                {"Authorization": f"Basic {theirs}"}, "/dav")]
                    body64k, body100m = os.path.join(workdir, "body64k"), os.path.join(workdir, "body100m")
                    with open(body64k, "wb") as fh:
                        fh.write(os.urandom(64 * 1024))
                    with open(body100m, "wb") as fh:
                        fh.write(os.urandom(1024 * 1024) * 100)
                    cases = [
                        ("PROPFIND Depth 1, 1,000 files", "/listing/", "PROPFIND", {"Depth": "1"}, None, 16, 0.5),
                        ("GET 64 KB", "/file64k.bin", "GET", {}, None, 16, 0.3),
                        ("GET 10 MB", "/file10m.bin", "GET", {}, None, 4, 0.8),
                        ("PUT 64 KB", "/put64k.bin", "PUT", {}, body64k, 16, 0.3),
                        ("PUT 100 MB", "/put100m.bin", "PUT", {}, body100m, 4, 0.8),
                    ]
                    summary = []
                    for name, path, method, headers, body, connections, target in cases:
                        if args.only not in name:
                            continue
                        got = compare(name, targets, path, method, headers, body, connections, args, workdir)
                        summary.append((name, got, target))
            finally:  # its system accounts (admin<N>, benchadmin.<N>) go with it
                api.admin_delete_site(DOMAIN)
    print("\nSummary (apiserver / Apache, requests per second; figures only, nothing asserted):")
    for name, got, target in summary:
        print(f"  {name:<32} {got:5.2f}x   (target >= {target}x)")


if __name__ == "__main__":
    main()
