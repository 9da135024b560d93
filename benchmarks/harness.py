"""Shared machinery of the benchmarks: servers pinned to one core, wrk pinned to the other.

Every benchmark measures the apiserver and its baseline in the same run, with the same
request body, the same wrk settings and the same core layout, and prints figures and ratios.
Nothing here asserts a target: a slow machine gives low figures, not a failure.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from typing import Iterator, Optional, Sequence

HOST = "127.0.0.1"
CONNECTIONS = 16
SERVER_CPU = "0"
CLIENT_CPU = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
#: ``apiserver`` console script of the interpreter running the benchmark (the venv's).
APISERVER = shutil.which("apiserver", path=os.path.dirname(PYTHON)) or "apiserver"

SOAP_NS = "urn:net.apnscp.soap"


def soap_envelope(operation: str) -> str:
    """A document/literal wrapped SOAP 1.1 request for an operation without arguments."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns:tns="{SOAP_NS}"><soapenv:Body><tns:{operation}/></soapenv:Body></soapenv:Envelope>'
    )


def xmlrpc_call(method: str) -> str:
    """An XML-RPC request for a method without arguments."""
    return f'<?xml version="1.0"?><methodCall><methodName>{method}</methodName><params/></methodCall>'


SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
XMLRPC_HEADERS = {"Content-Type": "text/xml"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until ``port`` accepts connections; raise if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")


@contextlib.contextmanager
def pinned_server(argv: Sequence[str], port: int, log_path: str,
                  env: Optional[dict] = None) -> Iterator[subprocess.Popen]:
    """Run ``argv`` on the server core until the block ends; its output goes to ``log_path``."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        try:
            wait_for_port(port, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; server output:\n{tail(log_path)}") from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tail(path: str, lines: int = 30) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])


def post(url: str, body: str, headers: dict, timeout: float = 30.0) -> tuple[int, str]:
    """One POST; returns (status, body text) whatever the status."""
    request = urllib.request.Request(url, data=body.encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def check_answer(url: str, body: str, headers: dict, expect: str) -> str:
    """POST once and make sure the answer is a 200 containing ``expect`` before measuring it."""
    status, text = post(url, body, headers)
    if status != 200 or expect not in text:
        raise RuntimeError(f"{url.split('?')[0]} answered {status} without {expect!r}:\n{text[:800]}")
    return text


# --- wrk ------------------------------------------------------------------------------------

@dataclasses.dataclass
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors
    cpu_ms: float = float("nan")  # server CPU time (all threads) per request

    def row(self, label: str) -> str:
        return (f"{label:<34} {self.rps:>7.0f} req/s   p50 {self.p50_ms:>6.2f} ms   "
                f"p99 {self.p99_ms:>7.2f} ms   CPU {self.cpu_ms:.3f} ms/req   errors {self.errors}")


def lua_script(body: str, headers: dict) -> str:
    """A wrk script that POSTs ``body`` with ``headers`` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body}]==]"]
    lines += [f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in headers.items()]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read requests/s, p50/p99 latency and error counts from ``wrk --latency`` output."""
    def need(pattern: str) -> re.Match:
        match = re.search(pattern, output)
        if not match:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    done = need(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_duration_ms(done.group(2) + done.group(3)) / 1000.0,
        rps=float(need(r"Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_duration_ms(need(r"\s50%\s+(\S+)").group(1)),
        p99_ms=_duration_ms(need(r"\s99%\s+(\S+)").group(1)),
        errors=errors,
    )


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` and all its threads so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_wrk(url: str, body: str, headers: dict, duration: int, workdir: str, pid: Optional[int] = None) -> WrkResult:
    """POST ``body`` to ``url`` from the client core with 16 connections for ``duration`` s.

    With the server's ``pid``, also the server's CPU time per request: it moves much less than
    req/s when other processes compete for the core, so it is the steadier figure to compare.
    """
    return run_wrk_script(url, lua_script(body, headers), duration, workdir, pid)


def run_wrk_script(url: str, script_text: str, duration: int, workdir: str, pid: Optional[int] = None) -> WrkResult:
    """Like :func:`run_wrk` with a wrk Lua script of the caller's (for requests that differ)."""
    script = os.path.join(workdir, "post.lua")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(script_text)
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s",
            "--timeout", "10s", "--latency", "-s", script, url]
    cpu_before = process_cpu_seconds(pid) if pid else None
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if cpu_before is not None and result.requests:
        result.cpu_ms = (process_cpu_seconds(pid) - cpu_before) * 1000.0 / result.requests
    return result


@dataclasses.dataclass(frozen=True)
class Target:
    """One server under load: a label for the output, the URL wrk POSTs to, the server's pid."""

    label: str
    url: str
    pid: Optional[int] = None
    body: Optional[str] = None  # what this target is sent, when not the run's common body


def alternate(targets: Sequence[Target], body: str, headers: dict, rounds: int, duration: int, warmup: int,
              workdir: str) -> dict[str, list[WrkResult]]:
    """Load the (already running) targets in turn, ``rounds`` times, printing each run.

    Every target is warmed up first (caches, thread pools).  The order flips every round
    (A B, B A, A B ...), so load from other processes or drift of the machine hits every
    target alike instead of biasing the ratio.
    """
    for target in targets:
        if warmup:
            run_wrk(target.url, target.body or body, headers, warmup, workdir)
    results: dict[str, list[WrkResult]] = {t.label: [] for t in targets}
    for round_no in range(rounds):
        order = targets if round_no % 2 == 0 else list(reversed(targets))
        for target in order:
            result = run_wrk(target.url, target.body or body, headers, duration, workdir, target.pid)
            results[target.label].append(result)
            print(result.row(f"round {round_no + 1}: {target.label}"), flush=True)
    return results


def summarize(results: dict[str, list[WrkResult]], candidate: str, baseline: str, target: str) -> tuple[float, float]:
    """Print medians per target and the median per-round ratios.

    Returns (throughput ratio, requests-per-CPU-second ratio) of candidate to baseline.
    """
    print()
    for label in (baseline, candidate):
        runs = results[label]
        print(f"{label:<34} median {statistics.median(r.rps for r in runs):>7.0f} req/s   "
              f"p50 {statistics.median(r.p50_ms for r in runs):>6.2f} ms   "
              f"p99 {statistics.median(r.p99_ms for r in runs):>7.2f} ms   "
              f"CPU {statistics.median(r.cpu_ms for r in runs):.3f} ms/req   "
              f"errors {sum(r.errors for r in runs)}")
    pairs = list(zip(results[candidate], results[baseline]))
    rps = [ratio(c.rps, b.rps) for c, b in pairs]
    p50 = statistics.median(ratio(c.p50_ms, b.p50_ms) for c, b in pairs)
    p99 = statistics.median(ratio(c.p99_ms, b.p99_ms) for c, b in pairs)
    capacity = statistics.median(ratio(b.cpu_ms, c.cpu_ms) for c, b in pairs)
    print(f"{candidate} / {baseline}:")
    print(f"  throughput {statistics.median(rps):.2f}x (per round {', '.join(f'{r:.2f}' for r in rps)}), "
          f"p50 latency {p50:.2f}x, p99 latency {p99:.2f}x")
    print(f"  requests per CPU-second {capacity:.2f}x (baseline CPU per request / {candidate}'s)")
    print(f"  ({target})")
    return statistics.median(rps), capacity


# --- the apiserver under test -----------------------------------------------------------------

@dataclasses.dataclass
class ApiserverSetup:
    """A config file and state dir made by ``apiserver init``, and the admin key it printed."""

    workdir: str
    config_path: str
    port: int
    admin_key: str
    extra_config: dict

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def state_dir(self) -> str:
        return os.path.join(self.workdir, "state")

    def serve_argv(self) -> list[str]:
        return [APISERVER, "--config", self.config_path, "serve"]

    def second_server(self, name: str) -> "ApiserverSetup":
        """A config for another server on the same state and settings: its own port and cpcmd socket."""
        port = free_port()
        config_path = os.path.join(self.workdir, f"{name}.ini")
        extra = {s: dict(k) for s, k in self.extra_config.items()}
        extra.setdefault("core", {})["cli_socket"] = f"{name}.sock"
        write_config(config_path, port, self.state_dir, extra)
        return dataclasses.replace(self, config_path=config_path, port=port, extra_config=extra)


def write_config(path: str, port: int, state_dir: str, extra: dict) -> None:
    """An ini file for a loopback-only HTTP server; ``extra`` maps section -> {key: value}."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str
    config.read_dict({
        "frontend": {"bind": HOST, "http_port": str(port), "https_port": "0"},
        "core": {"state_dir": state_dir, "access_log": "false"},
    })
    config.read_dict(extra)
    with open(path, "w", encoding="utf-8") as fh:
        config.write(fh)


def init_apiserver(workdir: str, extra_config: Optional[dict] = None) -> ApiserverSetup:
    """Write a config into ``workdir`` and run ``apiserver init``; the key is its last line."""
    port = free_port()
    config_path = os.path.join(workdir, "config.ini")
    extra_config = extra_config or {}
    write_config(config_path, port, os.path.join(workdir, "state"), extra_config)
    done = subprocess.run([APISERVER, "--config", config_path, "init"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"apiserver init failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    lines = done.stdout.strip().splitlines()
    if not lines or not re.fullmatch(r"[0-9a-f]{64}", lines[-1].strip()):
        raise RuntimeError(f"apiserver init did not print an API key last:\n{done.stdout}")
    return ApiserverSetup(workdir, config_path, port, lines[-1].strip(), extra_config)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(kind: str) -> Iterator[str]:
    """The URL of a uniquely named database on the loopback ``postgresql`` or ``mariadb`` test
    server (created empty, dropped afterwards)."""
    import uuid

    import sqlalchemy as sa

    servers = {"postgresql": "postgresql+psycopg://postgres@127.0.0.1/test",
               "mariadb": "mysql+pymysql://root@127.0.0.1/test"}
    admin = sa.create_engine(servers[kind], isolation_level="AUTOCOMMIT")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(servers[kind]).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}" + (" WITH (FORCE)" if kind == "postgresql" else ""))
        admin.dispose()


def soap_call(operation: str, **args: str) -> str:
    """A document/literal wrapped SOAP 1.1 request with string arguments."""
    inner = "".join(f"<tns:{name}>{value}</tns:{name}>" for name, value in args.items())
    return soap_envelope(operation).replace(f"<tns:{operation}/>", f"<tns:{operation}>{inner}</tns:{operation}>")


def xmlrpc_proxy(setup: "ApiserverSetup", key: Optional[str] = None):
    """An XML-RPC client of the server calling with ``key`` (default: the administrator's)."""
    import xmlrpc.client

    return xmlrpc.client.ServerProxy(f"{setup.url}/xmlrpc?authkey={key or setup.admin_key}", allow_none=True)


def site_admin_key(setup: "ApiserverSetup", domain: str = "bench.example", restrictions: int = 3) -> str:
    """Make site ``domain`` (with an email address and ``restrictions`` IP restrictions, 127.0.0.1
    at every gate among them) through the API and return an API key of its administrator."""
    import xmlrpc.client

    admin = xmlrpc_proxy(setup)
    admin.admin_add_site(domain, "siteadmin",
                         {"siteinfo.email": f"siteadmin@{domain}", "auth.tpasswd": "bench-password-1"})
    sid = admin.admin_hijack(domain)
    body = xmlrpc.client.dumps(("benchmark",), "auth_create_api_key")
    status, text = post(f"{setup.url}/xmlrpc", body, {"Content-Type": "text/xml", "Cookie": f"esprit_id={sid}"})
    if status != 200:
        raise RuntimeError(f"auth_create_api_key as {domain} answered {status}: {text[:400]}")
    key = xmlrpc.client.loads(text)[0][0]
    site = xmlrpc_proxy(setup, key)
    site.auth_restrict_ip("127.0.0.1", None)
    for i in range(restrictions - 1):
        site.auth_restrict_ip(f"198.51.100.{i}" if i % 2 else f"2001:db8:{i:x}::/48", None)
    return key


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def header(title: str, args: argparse.Namespace) -> None:
    print(title)
    print(textwrap.dedent(f"""\
        wrk: {CONNECTIONS} connections, 1 thread, on CPU {CLIENT_CPU}; servers on CPU {SERVER_CPU} (taskset); {HOST}
        {args.rounds} rounds of {args.duration}s per server, alternating, after {args.warmup}s of warm-up each
        load average at start: {" ".join(f"{n:.2f}" for n in os.getloadavg())} (other processes skew the figures)
    """), flush=True)


def bench_parser(description: str, rounds: int = 6, duration: int = 4, warmup: int = 3) -> argparse.ArgumentParser:
    """The options every benchmark takes: rounds, and seconds per measured run and per warm-up."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"measured runs per server (default {rounds})")
    parser.add_argument("--duration", type=int, default=duration, help=f"seconds per measured run (default {duration})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"seconds of load before measuring (default {warmup})")
    return parser


def versus_baseline(args: argparse.Namespace, baseline_script: str, baseline_label: str, path: str, body: str,
                    headers: dict, expect: str, target: str) -> None:
    """Run ``baseline_script`` and a fresh ``apiserver serve`` side by side and compare them.

    The apiserver is called at ``path?authkey=`` with the appliance administrator's key;
    both answers are checked to contain ``expect`` before anything is measured.
    """
    label = f"apiserver {path}?authkey="
    with scratch_dir("bench-") as workdir, contextlib.ExitStack() as servers:
        log = os.path.join(workdir, "servers.log")
        baseline_port = free_port()
        baseline = servers.enter_context(pinned_server(
            [PYTHON, os.path.join(HERE, baseline_script), "--port", str(baseline_port)], baseline_port, log))
        setup = init_apiserver(workdir)
        apiserver = servers.enter_context(pinned_server(setup.serve_argv(), setup.port, log))
        targets = [Target(baseline_label, f"http://{HOST}:{baseline_port}/", baseline.pid),
                   Target(label, f"{setup.url}{path}?authkey={setup.admin_key}", apiserver.pid)]
        for each in targets:
            check_answer(each.url, body, headers, expect)
        results = alternate(targets, body, headers, args.rounds, args.duration, args.warmup, workdir)
        summarize(results, label, baseline_label, target)
