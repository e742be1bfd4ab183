"""A cold `cargo fetch`: directly from the upstream vs through a freshly started, empty GhostCrate.

    .venv/bin/python benchmarks/coldfetch.py [--latency-ms 50] [--rounds 3] [--crates 40]

Target: with the upstream adding 50 ms per request, a cold fetch through GhostCrate takes
at most 1.3x the direct one: the proxy must not serialise what cargo does in parallel.

Generates a registry of real crates that depend on each other (registry.py), serves it
with origin.py (which adds the latency to every request) and writes a workspace that
depends on every crate. The upstream is what crates.io is: HTTPS with HTTP/2, here an
nginx TLS front (no cache) before the origin, with a throw-away CA that cargo and
GhostCrate are told to trust. Over HTTP/2 cargo multiplexes its requests; over plain
HTTP/1.1 it makes at most one request at a time (it sends `Upgrade: h2c` and waits
for a connection it could multiplex on), so the variants are:

- direct: cargo -> upstream (HTTPS, HTTP/2);
- ghostcrate: cargo -> GhostCrate (plain HTTP, as README.md configures it) -> upstream;
- ghostcrate behind h2: cargo -> an nginx TLS/HTTP-2 terminator (no cache) -> GhostCrate
  -> upstream, which shows whether GhostCrate itself serialises parallel requests.

`--plain` drops TLS: cargo and GhostCrate talk plain HTTP to the origin (no nginx), and
the third variant is left out; cargo is then serial in both variants.

Each round runs every variant once (the order rotates), each with a fresh CARGO_HOME and
no Cargo.lock; GhostCrate is started for each of its fetches with an empty `data_dir`
(start-up not timed) and stopped afterwards. What is timed is one `cargo fetch`: cargo
resolves (config.json and every index file, level by level down the dependency tree),
then downloads every crate, as on a fresh checkout without a lock file. Every child
process is started here and stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import (
    PYTHON,
    free_port,
    launch_ghostcrate,
    log,
    origin_stats,
    scratch,
    stop,
    wait_http,
    wait_listening,
)
from registry import dependency_tree, read_manifest, write_registry

from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import make_workspace
from tests.support.tls import make_pki

HERE = Path(__file__).resolve().parent
DIRECT, GC, GC_H2 = "direct", "ghostcrate", "ghostcrate behind h2"


@dataclass
class Fetch:
    seconds: float
    #: Origin requests during the fetch: config.json, index files, crates.
    config: int
    index: int
    crates: int
    #: Most origin requests in flight at once during the fetch.
    peak: int
    downloaded: int
    lock: frozenset[tuple[str, str, str | None]]

    def requests(self) -> str:
        return f"{self.config} / {self.index} / {self.crates}"


@dataclass
class Net:
    """Where everything listens, for one run."""

    origin: int
    #: The upstream's index root, as cargo (direct) and GhostCrate see it.
    upstream: str
    #: The CA that cargo and GhostCrate must trust (None with --plain).
    ca: Path | None
    #: GhostCrate's port (the same for every start, so the terminator can point at it).
    gc_port: int
    #: The TLS/HTTP-2 terminator in front of GhostCrate (None with --plain).
    terminator: int | None


# --- processes -------------------------------------------------------------------------


def start_ghostcrate(
    workdir: Path, net: Net, public_url: str | None, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    """A GhostCrate with an empty data_dir, ready (every worker listening)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    toml = workdir / "ghostcrate.toml"
    toml.write_text(
        f'data_dir = "{workdir / "data"}"\n\n'
        "[server]\n"
        f'listen = "127.0.0.1:{net.gc_port}"\n'
        + (f'public_url = "{public_url}"\n' if public_url else "")
        + f"workers = {args.workers}\n\n"
        "[upstream]\n"
        f'index = "{net.upstream}"\n'
        + (f'ca_bundle = "{net.ca}"\n' if net.ca else "")
        + "\n[cache]\n"
        f'memory_bytes = "{args.memory_bytes}"\n'
    )
    log_file = workdir / "ghostcrate.log"
    proc = launch_ghostcrate(toml, log_file)
    try:
        wait_http(f"http://127.0.0.1:{net.gc_port}/health", proc, "GhostCrate")
        wait_listening(log_file, proc, args.workers)
    except BaseException:
        stop(proc)
        raise
    return proc


def nginx_tls_conf(prefix: Path, pki_dir: Path, front: int, origin: int, net: Net) -> Path:
    """nginx with two TLS + HTTP/2 reverse proxies, no cache: the upstream's front
    (before the origin) and the terminator (before GhostCrate)."""
    for sub in ("temp/client", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    ssl = (
        f"ssl_certificate {pki_dir / 'server-chain.pem'};\n"
        f"        ssl_certificate_key {pki_dir / 'server-key.pem'};"
    )
    proxy = (
        "proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $http_host;"
    )
    path = prefix / "nginx.conf"
    path.write_text(f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/client;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    keepalive_requests 100000;
    upstream origin {{ server 127.0.0.1:{origin} max_fails=0; keepalive 64; }}
    upstream ghostcrate {{ server 127.0.0.1:{net.gc_port} max_fails=0; keepalive 64; }}
    server {{
        listen 127.0.0.1:{front} ssl http2;
        {ssl}
        location / {{
            {proxy}
            proxy_pass http://origin;
        }}
    }}
    server {{
        listen 127.0.0.1:{net.terminator} ssl http2;
        {ssl}
        location / {{
            {proxy}
            proxy_pass http://ghostcrate;
        }}
    }}
}}
""")
    return path


# --- one fetch -------------------------------------------------------------------------


def reset_peak(origin: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{origin}/__peak", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10):
        pass


def cargo_fetch(root: Path, workspace: Path, index_url: str, net: Net, timeout: float) -> Fetch:
    """`cargo fetch` without a lock file, in a fresh CARGO_HOME under `root`; timed."""
    shutil.rmtree(root, ignore_errors=True)
    cargo = CargoEnv(root)
    cargo.configure_replacement(index_url)
    env = {"CARGO_HTTP_CAINFO": str(net.ca)} if net.ca else {}
    (workspace / "Cargo.lock").unlink(missing_ok=True)
    reset_peak(net.origin)
    before = origin_stats(net.origin)["by_kind"]
    started_at = time.monotonic()
    cargo.run(["fetch"], cwd=workspace, timeout=timeout, env=env)
    seconds = time.monotonic() - started_at
    stats = origin_stats(net.origin)
    after = stats["by_kind"]

    def delta(kind: str) -> int:
        return int(after.get(kind, 0)) - int(before.get(kind, 0))

    lock = frozenset((p.name, p.version, p.checksum) for p in read_lockfile(workspace))
    fetched = Fetch(
        seconds,
        delta("config"),
        delta("index"),
        delta("crate"),
        int(stats["peak_in_flight"].get("all", 0)),
        len(cargo.cached_crates()),
        lock,
    )
    shutil.rmtree(root, ignore_errors=True)
    return fetched


def fetch_variant(
    tmp: Path, variant: str, workspace: Path, net: Net, args: argparse.Namespace
) -> Fetch:
    cargo_root = tmp / "cargo"
    if variant == DIRECT:
        return cargo_fetch(cargo_root, workspace, net.upstream, net, args.timeout)
    public_url = f"https://127.0.0.1:{net.terminator}" if variant == GC_H2 else None
    proc = start_ghostcrate(tmp / "ghostcrate", net, public_url, args)
    try:
        url = f"{public_url or f'http://127.0.0.1:{net.gc_port}'}/index/"
        return cargo_fetch(cargo_root, workspace, url, net, args.timeout)
    finally:
        stop(proc)


# --- report ----------------------------------------------------------------------------


def report(
    rounds: list[dict[str, Fetch]],
    variants: list[str],
    args: argparse.Namespace,
    summary: dict[str, object],
) -> str:
    medians = {v: statistics.median(r[v].seconds for r in rounds) for v in variants}
    upstream = (
        "plain HTTP origin (`--plain`): cargo is serial in both variants"
        if args.plain
        else "HTTPS + HTTP/2 (nginx TLS front, no cache, before the origin), like crates.io"
    )
    out = [
        "# Cold `cargo fetch`: direct vs through a fresh GhostCrate "
        f"({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"- registry: {summary['crates']} crates ({summary['versions']} versions), "
        f"{summary['crate_mb']:.1f} MB of .crate files fetched, dependency tree "
        f"{summary['depth']} levels deep; the workspace depends on every crate directly",
        f"- upstream: {upstream}; origin latency {args.latency_ms:g} ms per request",
        f"- GhostCrate `workers = {args.workers}`, `memory_bytes = {args.memory_bytes}`, empty "
        f"`data_dir` for every fetch (start-up not timed); {summary['cargo']}",
        "- timed: one `cargo fetch` with no Cargo.lock and an empty CARGO_HOME (resolution "
        "of every index file, then every download); the order of the variants rotates",
        "",
        "| round | variant | seconds | / direct | origin requests (config / index / crate) "
        "| peak origin requests in flight |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for i, r in enumerate(rounds, 1):
        for v in variants:
            out.append(
                f"| {i} | {v} | {r[v].seconds:.2f} | {r[v].seconds / r[DIRECT].seconds:.2f} | "
                f"{r[v].requests()} | {r[v].peak} |"
            )
    out += [
        "",
        f"Medians over {len(rounds)} rounds; target: at most {args.target:g}x direct.",
        "",
        "| variant | median s | / direct | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for v in variants:
        ratio = medians[v] / medians[DIRECT]
        verdict = "(reference)" if v == DIRECT else ("PASS" if ratio <= args.target else "FAIL")
        out.append(f"| {v} | {medians[v]:.2f} | {ratio:.2f} | {verdict} |")
    mismatched = [
        f"{i} ({v})"
        for i, r in enumerate(rounds, 1)
        for v in variants
        if r[v].lock != r[DIRECT].lock
    ]
    out.append("")
    out.append(
        "Cargo.lock identical to the direct one in every round and variant."
        if not mismatched
        else f"Cargo.lock DIFFERS from the direct one in rounds {', '.join(mismatched)}."
    )
    return "\n".join(out) + "\n"


# --- the run ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="cold cargo fetch: direct vs GhostCrate")
    parser.add_argument("--latency-ms", type=float, default=50, help="origin latency per request")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (every variant)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--crates", type=int, default=40, help="crates in the registry")
    parser.add_argument("--workers", type=int, default=2, help="GhostCrate [server] workers")
    parser.add_argument("--memory-bytes", default="64MiB", help="GhostCrate [cache] memory_bytes")
    parser.add_argument("--plain", action="store_true", help="no TLS/HTTP-2: plain HTTP origin")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=1.3, help="ratio that passes")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per cargo fetch")
    parser.add_argument("--data", type=Path, help="reuse/keep the registry in this directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    for tool in ["cargo"] + ([] if args.plain else ["nginx"]):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (nginx: benchmarks/setup.sh, or --plain)")
    with scratch("ghostcrate-coldfetch-", keep=args.keep) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    data: Path = args.data or tmp / "registry"
    registry, names, depth = dependency_tree(args.crates, args.seed)
    params: dict[str, object] = {"kind": "tree", "crates": args.crates, "seed": args.seed}
    if read_manifest(data, params) is None:
        log(f"writing {len(registry)} versions of {len(names)} crates into {data}")
        write_registry(data, registry, params)
    newest = [registry.newest(name) for name in names]
    summary: dict[str, object] = {
        "crates": len(names),
        "versions": len(registry),
        "crate_mb": sum(len(c.data) for c in newest if c is not None) / 1e6,
        "depth": depth,
        "cargo": subprocess.run(
            ["cargo", "--version"], check=True, capture_output=True, text=True
        ).stdout.strip(),
    }
    workspace = make_workspace(tmp / "workspace", dict.fromkeys(names, "1"))

    origin_port, front_port = free_port(), free_port()
    if args.plain:
        net = Net(origin_port, f"http://127.0.0.1:{origin_port}/", None, free_port(), None)
        variants = [DIRECT, GC]
    else:
        pki = make_pki(tmp / "pki", "GhostCrate coldfetch")
        upstream = f"https://127.0.0.1:{front_port}/"
        net = Net(origin_port, upstream, pki.ca_path, free_port(), free_port())
        variants = [DIRECT, GC, GC_H2]
    procs: list[subprocess.Popen[bytes]] = []
    rounds: list[dict[str, Fetch]] = []
    try:
        origin = subprocess.Popen(
            [str(PYTHON), str(HERE / "origin.py"), "--dir", str(data), "--port", str(origin_port),
             "--latency-ms", str(args.latency_ms), "--public-url", net.upstream],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "origin.log").open("wb"),
        )  # fmt: skip
        procs.append(origin)
        wait_http(f"http://127.0.0.1:{origin_port}/__stats", origin, "the origin")
        if not args.plain:
            prefix = tmp / "nginx"
            conf = nginx_tls_conf(prefix, tmp / "pki", front_port, origin_port, net)
            nginx = subprocess.Popen(
                ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=(tmp / "nginx.stderr").open("wb"),
            )
            procs.append(nginx)
            wait_tls(front_port, nginx)
        log(f"upstream {net.upstream} (origin :{origin_port}, {args.latency_ms:g} ms latency)")
        for n in range(args.warmup + args.rounds):
            warmup = n < args.warmup
            label = f"warm-up {n + 1}" if warmup else f"round {n - args.warmup + 1}"
            order = variants[n % len(variants) :] + variants[: n % len(variants)]
            result: dict[str, Fetch] = {}
            for variant in order:
                fetched = fetch_variant(tmp, variant, workspace, net, args)
                log(
                    f"{label} {variant}: {fetched.seconds:.2f} s, {fetched.downloaded} crates, "
                    f"origin config/index/crate requests {fetched.requests()}, "
                    f"peak in flight {fetched.peak}"
                )
                if fetched.downloaded != len(names):
                    raise SystemExit(
                        f"{label} {variant}: cargo downloaded {fetched.downloaded} crates, "
                        f"expected {len(names)}"
                    )
                result[variant] = fetched
            if not warmup:
                rounds.append(result)
    finally:
        for proc in reversed(procs):
            stop(proc)
    print(report(rounds, variants, args, summary))
    raw = {
        f"round {i}": {k: {"seconds": v.seconds, "peak": v.peak} for k, v in r.items()}
        for i, r in enumerate(rounds, 1)
    }
    log("raw: " + json.dumps(raw))


def wait_tls(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until nginx accepts connections on `port` (TLS: no plain HTTP check)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nginx did not listen on {port} within 30 s")


if __name__ == "__main__":
    main()
