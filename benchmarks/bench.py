"""GhostCrate vs nginx (proxy_cache) in front of the same origin, measured with wrk.

    .venv/bin/python benchmarks/bench.py [--quick]

Generates a data set (datagen.py), starts the origin (origin.py), GhostCrate and nginx on
free 127.0.0.1 ports, warms both, then runs every scenario with wrk (an untimed run first,
so that every worker of each server has seen the files), alternating between the two
servers round by round, and prints one table. Both keep index files `--index-ttl`
seconds (600: no revalidation with the origin falls in a timed run). Every child
process is started here and stopped by its PID; every wrk run has a fixed duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = REPO / ".venv" / "bin" / "python"
LUA = HERE / "wrk_paths.lua"
GC, NGX = "ghostcrate", "nginx"


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Run:
    requests: int
    bytes: int
    duration_us: int
    errors: int
    p50_us: int
    p99_us: int
    max_us: int
    rss: int


@dataclass
class Row:
    runs: list[Run] = field(default_factory=list)
    upstream: list[int] = field(default_factory=list)

    def rate(self) -> float:
        return sum(r.requests for r in self.runs) / (sum(r.duration_us for r in self.runs) / 1e6)

    def mbps(self) -> float:
        return sum(r.bytes for r in self.runs) / (sum(r.duration_us for r in self.runs) / 1e6) / 1e6

    def p50(self) -> float:
        return statistics.median(r.p50_us for r in self.runs) / 1000

    def p99(self) -> float:
        return statistics.median(r.p99_us for r in self.runs) / 1000

    def max_ms(self) -> float:
        return max(r.max_us for r in self.runs) / 1000

    def rss_mb(self) -> float:
        return max(r.rss for r in self.runs) / 2**20

    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """`64MiB`, `100MB`, `1048576` -> bytes (the units GhostCrate's configuration takes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(root: int) -> int:
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class RssSampler:
    """The peak of the summed RSS of a process tree, sampled every 0.25 s."""

    def __init__(self, root: int) -> None:
        self.root, self.peak = root, rss_bytes(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, rss_bytes(self.root))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.root))


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop a child we started, by its PID; then any of its descendants still alive."""
    if proc.poll() is not None:
        return
    tree = descendants(proc.pid)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    for pid in tree[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} while starting")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {timeout} s")


def launch_ghostcrate(toml: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """`ghostcrate serve` with this configuration, logging to `log_file` (not waited for)."""
    return subprocess.Popen(
        [str(PYTHON), "-m", "ghostcrate", "serve", "--config", str(toml)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("wb"),
    )


def wait_listening(log_file: Path, proc: subprocess.Popen[bytes], workers: int) -> None:
    """Wait until each of GhostCrate's `workers` has logged "listening" in `log_file`.

    /health answers as soon as one worker listens; until the others do, the kernel gives
    every connection to that one.
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"GhostCrate exited with status {proc.returncode} while starting")
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        if text.count('"msg": "listening"') + text.count(": listening") >= workers:
            return
        time.sleep(0.05)
    raise SystemExit(f"GhostCrate's {workers} workers did not all log 'listening' within 30 s")


# --- configuration ---------------------------------------------------------------------


def ghostcrate_toml(tmp: Path, port: int, origin: int, args: argparse.Namespace) -> Path:
    path = tmp / "ghostcrate.toml"
    path.write_text(
        f'data_dir = "{tmp / "ghostcrate-data"}"\n\n'
        "[server]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f"workers = {args.workers}\n"
        f"access_log = {'false' if args.no_access_log else 'true'}\n\n"
        "[upstream]\n"
        f'index = "http://127.0.0.1:{origin}/"\n'
        f"index_ttl = {args.index_ttl}\n\n"
        "[cache]\n"
        f'memory_bytes = "{args.memory_bytes}"\n'
    )
    return path


def nginx_conf(prefix: Path, port: int, origin: int, args: argparse.Namespace) -> Path:
    for sub in ("cache", "temp/client", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    access = "off" if args.no_access_log else f"{prefix}/access.log"
    # As root, nginx's workers would run as "nobody" and could not use the private temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    path = prefix / "nginx.conf"
    path.write_text(f"""
{user}
daemon off;
master_process on;
worker_processes {args.workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {access};
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=60s;
    client_body_temp_path {prefix}/temp/client;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=crates:64m max_size=20g
                     inactive=30d use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache crates;
        proxy_cache_lock on;
        proxy_cache_revalidate on;
        proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
        location = /__health {{ return 200 "ok\\n"; }}
        location /index/ {{
            proxy_cache_valid 200 {args.index_ttl}s;
            proxy_pass http://origin/;
        }}
        location /api/v1/crates/ {{
            proxy_cache_valid 200 365d;
            rewrite ^/api/v1/crates/([^/]+)/([^/]+)/download$ /crates/$1/$2/download break;
            proxy_pass http://origin;
        }}
    }}
}}
""")
    return path


# --- warming ---------------------------------------------------------------------------


async def fetch_all(base: str, paths: list[str], etags: dict[str, str]) -> int:
    """GET every path once (16 at a time); record ETags; return the number of failures."""
    failures = 0
    queue = list(paths)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            nonlocal failures
            while queue:
                path = queue.pop()
                async with session.get(base + path) as answer:
                    await answer.read()
                    if answer.status != 200:
                        failures += 1
                    if "ETag" in answer.headers:
                        etags[path] = answer.headers["ETag"]

        await asyncio.gather(*(worker() for _ in range(16)))
    return failures


def origin_stats(origin: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{origin}/__stats", timeout=10) as answer:
        stats: dict[str, Any] = json.loads(answer.read())
        return stats


def set_latency(origin: int, ms: float) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{origin}/__latency?ms={ms}", method="POST", data=b""
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def status_with_etag(url: str, etag: str) -> int:
    request = urllib.request.Request(url, headers={"If-None-Match": etag})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


# --- wrk -------------------------------------------------------------------------------


def wrk(
    server: Server,
    list_file: Path,
    seconds: float,
    *,
    connections: int,
    threads: int,
    etag: bool,
    authorization: str | None = None,
) -> Run:
    """One wrk run over the paths of `list_file`; `authorization` goes with every request."""
    first = list_file.read_text().split("\n", 1)[0].split("\t")[0]
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        server.url + first,
        "--",
        str(list_file),
    ] + (["etag"] if etag else [])
    with RssSampler(server.proc.pid) as sampler:
        done = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            env=os.environ | {"BENCH_AUTHORIZATION": authorization or ""},
        )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line.removeprefix("BENCH_JSON "))
            errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
            return Run(
                r["requests"],
                r["bytes"],
                r["duration_us"],
                errors,
                r["p50_us"],
                r["p99_us"],
                r["max_us"],
                sampler.peak,
            )
    raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


# --- the run ---------------------------------------------------------------------------


def read_list(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def write_etag_list(path: Path, paths: list[str], etags: dict[str, str]) -> Path:
    path.write_text("".join(f"{p}\t{etags[p]}\n" for p in paths if p in etags))
    return path


@contextlib.contextmanager
def scratch(prefix: str, *, keep: bool) -> Iterator[Path]:
    """A temporary directory for one run, deleted afterwards unless `keep`; logs the run's time."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    started_at = time.monotonic()
    try:
        yield tmp
    finally:
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"total {time.monotonic() - started_at:.0f} s")


def index_only_data(data: Path, index_files: int) -> None:
    """Generate a data set of `index_files` index files and no crates into `data`, unless
    one is there already (`--data` reuses it)."""
    if (data / "lists" / "index.txt").exists():
        return
    log(f"generating {index_files} index files into {data}")
    subprocess.run(
        [str(PYTHON), str(HERE / "datagen.py"), str(data), "--index-files", str(index_files),
         "--crates", "0", "--cold", "0"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def started(tmp: Path, args: argparse.Namespace, data: Path) -> Iterator[tuple[int, list[Server]]]:
    origin_port, gc_port, ngx_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        origin = subprocess.Popen(
            [str(PYTHON), str(HERE / "origin.py"), "--dir", str(data), "--port", str(origin_port)],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "origin.log").open("wb"),
        )
        procs.append(origin)
        wait_http(f"http://127.0.0.1:{origin_port}/__stats", origin, "the origin")
        toml = ghostcrate_toml(tmp, gc_port, origin_port, args)
        gc = launch_ghostcrate(toml, tmp / "ghostcrate.log")
        procs.append(gc)
        prefix = tmp / "nginx"
        conf = nginx_conf(prefix, ngx_port, origin_port, args)
        ngx = subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "nginx.stderr").open("wb"),
        )
        procs.append(ngx)
        wait_http(f"http://127.0.0.1:{gc_port}/health", gc, "GhostCrate")
        wait_listening(tmp / "ghostcrate.log", gc, args.workers)
        wait_http(f"http://127.0.0.1:{ngx_port}/__health", ngx, "nginx")
        yield origin_port, [Server(GC, gc_port, gc), Server(NGX, ngx_port, ngx)]
    finally:
        for proc in reversed(procs):
            stop(proc)


def warm(
    tmp: Path, origin: int, servers: list[Server], index: list[str], crates: list[str]
) -> dict[str, Path]:
    """Fetch everything once through each server; per server, a path<TAB>etag list file."""
    etag_files: dict[str, Path] = {}
    for server in servers:
        started_at = time.monotonic()
        before = origin_stats(origin)["total"]
        etags: dict[str, str] = {}
        failures = asyncio.run(fetch_all(server.url, index + crates, etags))
        after = origin_stats(origin)["total"]
        log(
            f"warmed {server.name}: {len(index)} index files + {len(crates)} crates in "
            f"{time.monotonic() - started_at:.1f} s, {failures} failures, "
            f"{after - before} origin requests"
        )
        if failures:
            raise SystemExit(f"warming {server.name} failed for {failures} paths")
        etag_files[server.name] = write_etag_list(tmp / f"etags-{server.name}.txt", index, etags)
        sample = index[0]
        status = status_with_etag(server.url + sample, etags.get(sample, '"none"'))
        log(
            f"{server.name}: If-None-Match on a warm index file answers {status}; "
            f"{len(descendants(server.proc.pid))} processes, "
            f"RSS {rss_bytes(server.proc.pid) / 2**20:.0f} MiB after warming"
        )
    return etag_files


def refresh(origin: int, servers: list[Server], index: list[str]) -> list[str]:
    """GET every index file once through each server, outside the timed runs.

    With `--index-ttl 60` a scenario starting more than a minute after the previous pass
    over the index would otherwise time the wave of revalidations with the origin, and the
    pass shows how fast each server revalidates. Returns one line per server: how long the
    pass took, origin requests made.
    """
    notes = []
    for server in servers:
        before = origin_stats(origin)
        started_at = time.monotonic()
        failures = asyncio.run(fetch_all(server.url, index, {}))
        seconds = time.monotonic() - started_at
        after = origin_stats(origin)
        by_status = {
            k: int(v) - int(before["by_status"].get(k, 0)) for k, v in after["by_status"].items()
        }
        note = (
            f"{server.name}: {len(index)} index files in {seconds:.1f} s "
            f"({len(index) / seconds:,.0f}/s, 16 at a time), {failures} failures, "
            f"origin answered {by_status.get('304', 0)} x 304, {by_status.get('200', 0)} x 200"
        )
        log(f"refresh {note}")
        notes.append(note)
    return notes


def stampede(
    origin: int, server: Server, url_path: str, args: argparse.Namespace
) -> tuple[Run, int, int]:
    """A cold crate, `stampede_clients` connections at once; upstream crate/index requests."""
    name, version = url_path.split("/")[4:6]
    origin_path = f"/crates/{name}/{version}/download"

    def counts() -> tuple[int, int]:
        stats = origin_stats(origin)
        return int(stats["by_path"].get(origin_path, 0)), int(stats["by_kind"].get("index", 0))

    single = Path(args.tmp) / f"stampede-{server.name}.txt"
    single.write_text(url_path + "\n")
    crate_before, index_before = counts()
    set_latency(origin, args.latency_ms)
    try:
        run = wrk(
            server, single, args.stampede_seconds,
            connections=args.stampede_clients, threads=2, etag=False,
        )  # fmt: skip
    finally:
        set_latency(origin, 0)
    crate_after, index_after = counts()
    return run, crate_after - crate_before, index_after - index_before


def table(results: dict[str, dict[str, Row]], stampede_rows: dict[str, Row]) -> str:
    head = (
        "| scenario | server | req/s | MB/s | p50 ms | p99 ms | peak RSS MiB | errors |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    ratios = []
    for scenario, rows in results.items():
        for name in (GC, NGX):
            row = rows[name]
            lines.append(
                f"| {scenario} | {name} | {row.rate():,.0f} | {row.mbps():,.1f} | "
                f"{row.p50():.2f} | {row.p99():.2f} | {row.rss_mb():.0f} | {row.errors()} |"
            )
        gc, ngx = rows[GC], rows[NGX]
        ratios.append(
            f"| {scenario} | {gc.rate() / ngx.rate():.2f} | {gc.mbps() / ngx.mbps():.2f} | "
            f"{gc.p50() / ngx.p50():.2f} | {gc.p99() / ngx.p99():.2f} | "
            f"{gc.rss_mb() / ngx.rss_mb():.2f} |"
        )
    out = head + "\n".join(lines) + "\n\nGhostCrate / nginx:\n\n"
    out += (
        "| scenario | req/s | MB/s | p50 | p99 | RSS |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |\n"
    )
    out += "\n".join(ratios) + "\n"
    if stampede_rows:
        out += (
            "\nCold stampede (one uncached crate, all connections at once, origin latency "
            "added):\n\n| server | upstream crate requests per round | upstream index "
            "requests | p50 ms | p99 ms | max ms | errors |\n| --- | --- | --- | ---: | ---: "
            "| ---: | ---: |\n"
        )
        for name in (GC, NGX):
            row = stampede_rows[name]
            crate_up = row.upstream[0::2]
            index_up = row.upstream[1::2]
            out += (
                f"| {name} | {crate_up} | {index_up} | {row.p50():.2f} | {row.p99():.2f} | "
                f"{row.max_ms():.0f} | {row.errors()} |\n"
            )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GhostCrate vs nginx proxy_cache, with wrk")
    parser.add_argument("--quick", action="store_true", help="~1 minute: smaller data, 2 rounds")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 8; quick 3)")
    parser.add_argument(
        "--warmup-seconds", type=float, default=2,
        help="untimed wrk run per scenario and server before its rounds (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--index-ttl", type=int, default=600,
        help="seconds both servers keep an index file before revalidating it (default 600: "
        "no revalidation falls in a timed run; 60 shows revalidation in the untimed passes)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--index-files", type=int, help="default 3000 (quick 1000)")
    parser.add_argument("--crates", type=int, help="default 300 (quick 100)")
    parser.add_argument("--workers", type=int, default=2, help="GhostCrate and nginx workers")
    parser.add_argument("--memory-bytes", default="64MiB", help="GhostCrate [cache] memory_bytes")
    parser.add_argument(
        "--disk-set-factor", type=float, default=4.0,
        help="crates of the 'working set' scenario, total size in memory_bytes (default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--hot-set-factor", type=float, default=0.5,
        help="crates of the 'hot crates' scenario, total size in memory_bytes (default 0.5)",
    )  # fmt: skip
    parser.add_argument("--latency-ms", type=float, default=50, help="origin latency, stampede")
    parser.add_argument("--stampede-clients", type=int, default=200)
    parser.add_argument("--stampede-seconds", type=float, default=2)
    parser.add_argument("--no-access-log", action="store_true", help="both servers, no log")
    parser.add_argument("--data", type=Path, help="reuse/keep the data set in this directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.seconds = args.seconds or (3 if args.quick else 8)
    args.index_files = args.index_files or (1000 if args.quick else 3000)
    args.crates = args.crates or (100 if args.quick else 300)
    return args


def main() -> None:
    args = parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH: run benchmarks/setup.sh (apt) first")
    with scratch("ghostcrate-bench-", keep=args.keep) as tmp:
        args.tmp = str(tmp)
        run_all(tmp, args)


def generate(data: Path, args: argparse.Namespace) -> None:
    """(Re)generate the data set unless `data` has one with the same crate sets."""
    memory = parse_size(args.memory_bytes)
    hot_bytes, disk_bytes = int(memory * args.hot_set_factor), int(memory * args.disk_set_factor)
    manifest_file = data / "manifest.json"
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        if (manifest.get("hot_set_bytes"), manifest.get("disk_set_bytes")) == (
            hot_bytes,
            disk_bytes,
        ):
            return
    log(
        f"generating {args.index_files} index files, {args.crates} crates, a hot set of "
        f"{hot_bytes / 2**20:.0f} MiB and a disk set of {disk_bytes / 2**20:.0f} MiB into {data}"
    )
    subprocess.run(
        [str(PYTHON), str(HERE / "datagen.py"), str(data), "--index-files",
         str(args.index_files), "--crates", str(args.crates), "--cold", str(2 * args.rounds),
         "--hot-set-bytes", str(hot_bytes), "--disk-set-bytes", str(disk_bytes)],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def prefetch(servers: list[Server], paths: list[str], what: str) -> None:
    """GET every path once through each server, untimed (fills GhostCrate's memory tier)."""
    for server in servers:
        started_at = time.monotonic()
        failures = asyncio.run(fetch_all(server.url, paths, {}))
        log(
            f"untimed pass over {len(paths)} {what} through {server.name}: "
            f"{time.monotonic() - started_at:.1f} s, {failures} failures"
        )


def run_all(tmp: Path, args: argparse.Namespace) -> None:
    data = args.data or tmp / "data"
    cold_needed = 2 * args.rounds
    generate(data, args)
    manifest = json.loads((data / "manifest.json").read_text())
    lists = data / "lists"
    index, crates, cold, hot_set, disk_set = (
        read_list(lists / f)
        for f in ("index.txt", "crates.txt", "cold.txt", "hot-crates.txt", "disk-crates.txt")
    )
    if len(cold) < cold_needed:
        raise SystemExit(f"{data} has {len(cold)} cold crates, {cold_needed} needed: regenerate")
    disk_scenario = f"warm .crate, working set {args.disk_set_factor:g}x memory"
    hot_scenario = "hot crates, fit in memory"

    load_before = Path("/proc/loadavg").read_text().strip()
    with started(tmp, args, data) as (origin, servers):
        log(f"origin :{origin}, " + ", ".join(f"{s.name} {s.url}" for s in servers))
        etag_files = warm(tmp, origin, servers, index, crates + hot_set + disk_set)
        refresh_notes: list[str] = []
        scenarios: list[tuple[str, dict[str, Path], bool]] = [
            ("warm index, random mix", {s.name: lists / "index.txt" for s in servers}, False),
            ("warm .crate, random mix", {s.name: lists / "crates.txt" for s in servers}, False),
            (disk_scenario, {s.name: lists / "disk-crates.txt" for s in servers}, False),
            (hot_scenario, {s.name: lists / "hot-crates.txt" for s in servers}, False),
            ("one hot small index file", {s.name: lists / "hot.txt" for s in servers}, False),
            ("304 revalidations, random index", etag_files, True),
        ]
        results: dict[str, dict[str, Row]] = {}
        for scenario, files, etag in scenarios:
            rows = results.setdefault(scenario, {GC: Row(), NGX: Row()})
            if "index" in scenario:
                refresh_notes += [
                    f"before {scenario}: {n}" for n in refresh(origin, servers, index)
                ]
            if scenario == hot_scenario:
                prefetch(servers, hot_set, "hot-set crates")
            for server in servers:  # untimed: every worker of each server has seen the files
                wrk(
                    server, files[server.name], args.warmup_seconds,
                    connections=args.connections, threads=args.threads, etag=etag,
                )  # fmt: skip
            for round_ in range(args.rounds):
                order = servers if round_ % 2 == 0 else servers[::-1]
                for server in order:
                    run = wrk(
                        server, files[server.name], args.seconds,
                        connections=args.connections, threads=args.threads, etag=etag,
                    )  # fmt: skip
                    rows[server.name].runs.append(run)
                    log(
                        f"{scenario} [{round_ + 1}/{args.rounds}] {server.name}: "
                        f"{run.requests / (run.duration_us / 1e6):,.0f} req/s, "
                        f"p99 {run.p99_us / 1000:.2f} ms, {run.errors} errors"
                    )
        stampede_rows = {GC: Row(), NGX: Row()}
        for round_ in range(args.rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for server in order:
                url_path = cold.pop()
                run, crate_up, index_up = stampede(origin, server, url_path, args)
                stampede_rows[server.name].runs.append(run)
                stampede_rows[server.name].upstream += [crate_up, index_up]
                log(f"stampede {server.name} {url_path}: {crate_up} upstream crate requests")

    print(f"# GhostCrate vs nginx proxy_cache ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(
        f"- wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x {args.seconds:g} s "
        f"per scenario and server, alternating, after an untimed {args.warmup_seconds:g} s run; "
        f"both servers {args.workers} workers and index files kept {args.index_ttl} s; "
        f"GhostCrate memory_bytes {args.memory_bytes}; access logs "
        f"{'off' if args.no_access_log else 'on (to files)'}"
    )
    print(
        f"- data: {json.dumps(manifest['index_files'])} index bytes; "
        f"{json.dumps(manifest['crates'])} crate bytes"
    )
    print(
        f"- crate sets: working set ({args.disk_set_factor:g}x memory_bytes) "
        f"{json.dumps(manifest['disk_set'])} bytes; hot crates ({args.hot_set_factor:g}x "
        f"memory_bytes) {json.dumps(manifest['hot_set'])} bytes"
    )
    print(
        f"- NOTE: wrk, both servers and the origin share this machine's {os.cpu_count()} cores; "
        "figures are relative, not absolute capacity. p50/p99: median over rounds; "
        "RSS: peak sum over the server's processes during its runs.\n"
    )
    print(table(results, stampede_rows))
    print("Untimed passes over every index file before the index scenarios:\n")
    print("".join(f"- {note}\n" for note in refresh_notes))
    print(f"Load average before / after: {load_before} / {Path('/proc/loadavg').read_text()}")
    if args.json:
        raw: dict[str, Any] = {
            scenario: {name: [vars(r) for r in row.runs] for name, row in rows.items()}
            for scenario, rows in results.items()
        }
        raw["stampede"] = {
            name: {"runs": [vars(r) for r in row.runs], "upstream": row.upstream}
            for name, row in stampede_rows.items()
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
