"""apiserver's /dav/ (authenticated, confined to a site's home) against a bare WsgiDAV on WSGIResource.

Both servers run at the same time on CPU 0 and serve the same folder (a site's home with 50
small files and one of 64 KB); wrk (16 connections, CPU 1) sends, one server at a time in
alternating rounds, ``PROPFIND`` with ``Depth: 1`` on the folder and then ``GET`` of the 64 KB
file.  apiserver (``apiserver init`` + ``serve``, default settings, so PBKDF2 with 210,000
iterations and ``[dav] verified_password_ttl=300``) gets HTTP Basic ``user@domain`` on every
request, as DAV clients send it; the baseline (baseline_wsgidav.py) authenticates nothing.

    python benchmarks/bench_dav.py [--rounds 4] [--duration 3] [--warmup 2]
"""

from __future__ import annotations

import base64
import os
import subprocess
import xmlrpc.client

import harness as h

DOMAIN, ADMIN, PASSWORD = "bench.example.com", "benchadmin", "Bench-passw0rd"
FILES = 50


def wrk_script(method: str, headers: dict) -> str:
    lines = [f'wrk.method = "{method}"'] + [f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def run(url: str, method: str, headers: dict, duration: int, workdir: str, pid=None) -> h.WrkResult:
    """wrk with ``method`` and ``headers`` (no body) against ``url``; as harness.run_wrk otherwise."""
    script = os.path.join(workdir, f"{method.lower()}.lua")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(wrk_script(method, headers))
    argv = ["taskset", "-c", h.CLIENT_CPU, "wrk", "-t1", f"-c{h.CONNECTIONS}", f"-d{duration}s",
            "--timeout", "10s", "--latency", "-s", script, url]
    cpu_before = h.process_cpu_seconds(pid) if pid else None
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = h.parse_wrk(done.stdout)
    if cpu_before is not None and result.requests:
        result.cpu_ms = (h.process_cpu_seconds(pid) - cpu_before) * 1000.0 / result.requests
    return result


def compare(targets, path: str, method: str, headers: dict, args, workdir: str) -> None:
    for target, extra in targets:
        run(target.url + path, method, {**headers, **extra}, args.warmup, workdir)
    results = {t.label: [] for t, _ in targets}
    for round_no in range(args.rounds):
        order = targets if round_no % 2 == 0 else list(reversed(targets))
        for target, extra in order:
            result = run(target.url + path, method, {**headers, **extra}, args.duration, workdir, target.pid)
            results[target.label].append(result)
            print(result.row(f"round {round_no + 1}: {target.label}"), flush=True)
    h.summarize(results, targets[0][0].label, targets[1][0].label, "figures only: no target is asserted")


def add_site(setup: h.ApiserverSetup) -> str:
    """Create the site through XML-RPC; returns the host path of its document root, filled with files."""
    api = xmlrpc.client.ServerProxy(f"{setup.url}/xmlrpc?authkey={setup.admin_key}", allow_none=True)
    api.admin_add_site(DOMAIN, ADMIN, {"siteinfo.email": f"owner@{DOMAIN}", "auth.tpasswd": PASSWORD})
    html = os.path.join(setup.state_dir, "sites", DOMAIN, "var/www/html")
    for n in range(FILES):
        with open(os.path.join(html, f"page{n:02}.html"), "w") as fh:
            fh.write(f"<p>page {n}</p>\n" * 20)
    with open(os.path.join(html, "file64k.bin"), "wb") as fh:
        fh.write(os.urandom(64 * 1024))
    return html


def main() -> None:
    args = h.bench_parser(__doc__.splitlines()[0], rounds=4, duration=3, warmup=2).parse_args()
    h.header("DAV PROPFIND Depth 1 and GET 64 KB: apiserver /dav/ vs bare WsgiDAV on WSGIResource", args)
    with h.scratch_dir("bench-dav-") as workdir:
        os.chmod(workdir, 0o755)  # the sites' owner (not root) must reach the site's home
        setup = h.init_apiserver(workdir)
        base_port = h.free_port()
        with h.pinned_server(setup.serve_argv(), setup.port, os.path.join(workdir, "apiserver.log")) as api_proc:
            html = add_site(setup)
            home = os.path.dirname(os.path.dirname(os.path.dirname(html)))
            argv = [h.PYTHON, os.path.join(h.HERE, "baseline_wsgidav.py"), str(base_port), home]
            with h.pinned_server(argv, base_port, os.path.join(workdir, "baseline.log")) as base_proc:
                token = base64.b64encode(f"{ADMIN}@{DOMAIN}:{PASSWORD}".encode()).decode()
                apiserver = h.Target("apiserver /dav/ (Basic, gate DAV)", setup.url, api_proc.pid)
                baseline = h.Target("bare WsgiDAV on WSGIResource", f"http://{h.HOST}:{base_port}", base_proc.pid)
                targets = [(apiserver, {"Authorization": f"Basic {token}"}), (baseline, {})]
                print("PROPFIND /dav/var/www/html/ (Depth: 1, 51 members)")
                compare(targets, "/dav/var/www/html/", "PROPFIND", {"Depth": "1"}, args, workdir)
                print("\nGET /dav/var/www/html/file64k.bin")
                compare(targets, "/dav/var/www/html/file64k.bin", "GET", {}, args, workdir)


if __name__ == "__main__":
    main()
