"""A storm of 10 MB crate downloads: does each GhostCrate worker's RSS stay within budget?

    .venv/bin/python benchmarks/storm.py [--quick] [--clients 200] [--seconds 20]

Target: each worker's RSS stays under its memory-tier budget (`[cache] memory_bytes`)
plus 100 MiB during a storm of 10 MB-crate downloads.

Generates ~20 real crates of ~10 MB each (incompressible data; registry.py), serves them
with origin.py, starts GhostCrate (`workers = 2`, `memory_bytes = 64MiB`) with an empty
`data_dir`, then runs two phases of `--clients` concurrent downloaders (a separate
process, aiohttp, one keep-alive connection per client):

- cold: every client starts at once, client i with crate i mod N, so every crate is
  fetched from the origin through GhostCrate while ~10 clients wait for each; then each
  client keeps downloading random crates until the phase ends;
- warm: the same, everything cached.

A share of the clients (`--slow-share`) are slow readers: a 64 KiB receive buffer,
reading at `--slow-rate` per second, so a server that buffers answers in memory instead
of streaming them shows it. Every worker's RSS (the supervisor's children, found in
/proc) is sampled every 100 ms. Prints per phase the downloads, MB/s, errors and the
origin's request counts, and per worker the peak RSS against the budget. Every child
process is started here and stopped by its PID; every phase has a fixed length.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bench import (
    PYTHON,
    free_port,
    launch_ghostcrate,
    log,
    origin_stats,
    parse_size,
    scratch,
    stop,
    wait_http,
    wait_listening,
)
from registry import big_crates, read_manifest, write_registry

HERE = Path(__file__).resolve().parent
MiB = 2**20
# --- the clients (run in their own process: `storm.py --client SPEC`) -------------------


@dataclass
class Target:
    path: str
    size: int
    cksum: str


@dataclass
class ClientResult:
    done_fast: int = 0
    done_slow: int = 0
    cut: int = 0
    bytes: int = 0
    slow_bytes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    fast_seconds: list[float] = field(default_factory=list)
    first_wave: list[float] = field(default_factory=list)


def slow_socket(addr_info: Any) -> socket.socket:
    """A client socket with a small receive buffer, so a slow reader pushes back at once."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return sock


@dataclass
class Storm:
    """Download loops of one client process."""

    spec: dict[str, Any]
    targets: list[Target]
    result: ClientResult

    async def client(self, index: int, session: aiohttp.ClientSession, slow: bool) -> None:
        """Download until the deadline: crate `index` mod N first, then random ones."""
        loop = asyncio.get_running_loop()
        started, deadline = loop.time(), loop.time() + self.spec["seconds"]
        rng = random.Random(f"{self.spec['seed']}:{index}")
        first = True
        while loop.time() < deadline:
            target = self.targets[index % len(self.targets)] if first else rng.choice(self.targets)
            begin = loop.time()
            outcome: str | None
            try:
                async with asyncio.timeout_at(deadline):
                    verify = first and self.spec["verify"]
                    outcome = await self.download(session, target, slow, verify=verify)
            except TimeoutError:
                if loop.time() >= deadline - 0.01:
                    self.result.cut += 1  # still downloading when the phase ended
                    return
                outcome = "timeout"
            except (aiohttp.ClientError, OSError) as error:
                outcome = type(error).__name__
            if outcome is not None:
                self.result.errors[outcome] += 1
                await asyncio.sleep(0.1)
            elif slow:
                self.result.done_slow += 1
            else:
                self.result.done_fast += 1
                self.result.fast_seconds.append(loop.time() - begin)
                if first:
                    self.result.first_wave.append(loop.time() - started)
            first = False

    async def download(
        self, session: aiohttp.ClientSession, target: Target, slow: bool, *, verify: bool
    ) -> str | None:
        """One GET, read to the end (slowly for a slow reader); what went wrong, or None."""
        loop = asyncio.get_running_loop()
        rate = self.spec["slow_rate"]
        got = 0
        hasher = hashlib.sha256() if verify else None
        async with session.get(self.spec["base"] + target.path) as answer:
            if answer.status != 200:
                await answer.read()
                return f"status {answer.status}"
            begin = loop.time()
            while chunk := await (answer.content.read(65536) if slow else answer.content.readany()):
                got += len(chunk)
                self.result.bytes += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                if slow:
                    # Paced against a schedule, so a busy event loop does not slow it further.
                    self.result.slow_bytes += len(chunk)
                    delay = begin + got / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
        if got != target.size:
            return "short body"
        if hasher is not None and hasher.hexdigest() != target.cksum:
            return "checksum mismatch"
        return None


async def run_clients(spec: dict[str, Any]) -> ClientResult:
    storm = Storm(spec, [Target(**t) for t in spec["targets"]], ClientResult())
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    fast_conn = aiohttp.TCPConnector(limit=0)
    slow_conn = aiohttp.TCPConnector(limit=0, socket_factory=slow_socket)
    slow = set(spec["slow"])
    async with (
        aiohttp.ClientSession(connector=fast_conn, timeout=timeout) as fast,
        aiohttp.ClientSession(connector=slow_conn, timeout=timeout) as slow_session,
    ):
        await asyncio.gather(
            *(
                storm.client(i, slow_session if i in slow else fast, i in slow)
                for i in spec["clients"]
            )
        )
    return storm.result


def client_main(spec_file: Path) -> None:
    import uvloop

    spec = json.loads(spec_file.read_text())
    result = uvloop.run(run_clients(spec))
    out = vars(result) | {"errors": dict(result.errors)}
    print(json.dumps(out))


# --- RSS sampling ----------------------------------------------------------------------


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == parent:
                    found.append(int(entry.name))
    return found


def memory_of(pid: int) -> tuple[int, int] | None:
    """VmRSS and RssAnon of `pid`, bytes; None if it is gone."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    except OSError:
        return None
    return rss, anon


def is_worker(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


@dataclass
class WorkerPeak:
    before: int = 0
    rss: int = 0
    anon: int = 0
    samples: int = 0


class WorkerSampler:
    """Peak VmRSS / RssAnon of every GhostCrate worker, per phase, every `interval` s."""

    def __init__(self, root: int, workers: int, interval: float = 0.1) -> None:
        self.root, self.workers, self.interval = root, workers, interval
        self.phase = "idle"
        self.peaks: dict[str, dict[int, WorkerPeak]] = {}
        self.supervisor: dict[str, int] = {}
        self.pids_seen: set[int] = set()
        self.lag_max = 0.0
        self._pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.root]
        return [pid for pid in children(self.root) if is_worker(pid)]

    def begin(self, phase: str) -> None:
        """Start a phase: its peaks start from each worker's current RSS."""
        self._pids = self.worker_pids()
        peaks = self.peaks.setdefault(phase, {})
        for pid in self._pids:
            mem = memory_of(pid)
            if mem is not None:
                peaks[pid] = WorkerPeak(mem[0], mem[0], mem[1], 1)
        self.phase = phase

    def sample(self) -> None:
        peaks = self.peaks.setdefault(self.phase, {})
        for pid in self._pids:
            mem = memory_of(pid)
            if mem is None:  # a worker died: look for its replacement
                self._pids = self.worker_pids()
                continue
            peak = peaks.setdefault(pid, WorkerPeak(before=mem[0]))
            peak.rss, peak.anon = max(peak.rss, mem[0]), max(peak.anon, mem[1])
            peak.samples += 1
        self.pids_seen.update(self._pids)
        sup = memory_of(self.root)
        if sup is not None and self.workers > 1:
            self.supervisor[self.phase] = max(self.supervisor.get(self.phase, 0), sup[0])

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                self.lag_max = max(self.lag_max, -delay)
                next_at = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def __enter__(self) -> WorkerSampler:
        self._pids = self.worker_pids()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the run ---------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    clients: dict[str, Any]
    upstream: dict[str, int]


def run_phase(
    tmp: Path,
    name: str,
    *,
    base: str,
    targets: list[dict[str, Any]],
    origin: int,
    args: argparse.Namespace,
) -> Phase:
    rng = random.Random(args.seed)
    slow = sorted(rng.sample(range(args.clients), round(args.clients * args.slow_share)))
    per_proc = [list(range(args.clients))[i :: args.client_procs] for i in range(args.client_procs)]
    before = origin_stats(origin)["by_kind"]
    procs: list[subprocess.Popen[bytes]] = []
    started_at = time.monotonic()
    try:
        for n, mine in enumerate(per_proc):
            spec = {
                "base": base, "targets": targets, "clients": mine, "slow": slow,
                "slow_rate": args.slow_rate, "seconds": args.seconds, "seed": f"{name}:{n}",
                "verify": not args.no_verify,
            }  # fmt: skip
            spec_file = tmp / f"client-{name}-{n}.json"
            spec_file.write_text(json.dumps(spec))
            procs.append(
                subprocess.Popen(
                    [str(PYTHON), str(Path(__file__).resolve()), "--client", str(spec_file)],
                    stdout=subprocess.PIPE,
                    stderr=(tmp / f"client-{name}-{n}.log").open("wb"),
                )
            )
        outputs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=args.seconds + 120)
            if proc.returncode != 0:
                raise SystemExit(f"the {name} clients failed: see {tmp}/client-{name}-*.log")
            outputs.append(json.loads(out))
    finally:
        for proc in procs:
            stop(proc)
    seconds = time.monotonic() - started_at
    after = origin_stats(origin)["by_kind"]
    merged: dict[str, Any] = {}
    for out in outputs:
        for key, value in out.items():
            if isinstance(value, dict):
                merged.setdefault(key, Counter()).update(value)
            else:
                merged[key] = merged.get(key, type(value)()) + value
    upstream = {
        k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in ("crate", "index", "config")
    }
    return Phase(name, seconds, merged, upstream)


def report(
    phases: list[Phase],
    sampler: WorkerSampler,
    args: argparse.Namespace,
    info: dict[str, Any],
) -> str:
    budget = args.memory_bytes + args.slack
    n_slow = round(args.clients * args.slow_share)
    out = [
        f"# Storm of {info['crate_mb']:.0f} MB crate downloads ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"- {info['crates']} crates of ~{info['crate_mb']:.1f} MB ({info['total_mb']:.0f} MB in "
        f"all, incompressible); {args.clients} clients, {n_slow} of them slow readers "
        f"({args.slow_rate / MiB:g} MiB/s, 64 KiB receive buffer); {args.seconds:g} s per "
        f"phase; origin latency {args.latency_ms:g} ms; {args.client_procs} client process(es)",
        f"- GhostCrate `workers = {args.workers}`, `memory_bytes = {args.memory_raw}`, empty "
        f"`data_dir` at the start; budget per worker = memory_bytes + {args.slack / MiB:g} MiB "
        f"= {budget / MiB:.0f} MiB; RSS sampled every {sampler.interval * 1000:.0f} ms "
        f"(longest sampling delay {sampler.lag_max * 1000:.0f} ms)",
        f"- NOTE: the clients, GhostCrate and the origin share this machine's {info['cpus']} "
        "cores; MB/s is relative, not capacity.",
        "",
        "| phase | downloads done (fast / slow) | cut by the end | GB received | MB/s | "
        "errors | fast download p50 / max s | first wave done s | MiB/s per slow reader | "
        "upstream crate / index / config requests |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for p in phases:
        c = p.clients
        fast = c["fast_seconds"] or [0.0]
        slow_rate = c["slow_bytes"] / max(1, n_slow) / p.seconds / MiB
        wave = max(c["first_wave"]) if c["first_wave"] else float("nan")
        out.append(
            f"| {p.name} | {c['done_fast']} / {c['done_slow']} | {c['cut']} | "
            f"{c['bytes'] / 1e9:.2f} | {c['bytes'] / 1e6 / p.seconds:,.0f} | "
            f"{sum(c['errors'].values())} | {statistics.median(fast):.2f} / {max(fast):.2f} | "
            f"{wave:.2f} | {slow_rate:.2f} | {p.upstream['crate']} / {p.upstream['index']} / "
            f"{p.upstream['config']} |"
        )
    errors = Counter[str]()
    for p in phases:
        errors.update(p.clients["errors"])
    if errors:
        out += ["", "Errors: " + ", ".join(f"{k} x {v}" for k, v in errors.most_common())]
    out += [
        "",
        "| phase | worker pid | RSS before MiB | peak RSS MiB | peak anon MiB | budget MiB | "
        "peak / budget | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    passed = True
    for p in phases:
        for pid, peak in sorted(sampler.peaks.get(p.name, {}).items()):
            ok = peak.rss < budget
            passed &= ok
            out.append(
                f"| {p.name} | {pid} | {peak.before / MiB:.0f} | {peak.rss / MiB:.0f} | "
                f"{peak.anon / MiB:.0f} | {budget / MiB:.0f} | {peak.rss / budget:.2f} | "
                f"{'PASS' if ok else 'FAIL'} |"
            )
    restarted = len(sampler.pids_seen) > args.workers
    out += [
        "",
        "Supervisor peak RSS: "
        + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in sampler.supervisor.items() if k != "idle")
        + (" (not a worker; not budgeted)" if sampler.supervisor else "n/a (one process)"),
        f"Workers seen: {len(sampler.pids_seen)} pids for {args.workers} workers"
        + (" - A WORKER WAS RESTARTED (died?)" if restarted else ""),
        "",
        f"Target: every worker's peak RSS < memory_bytes + {args.slack / MiB:g} MiB: "
        f"**{'PASS' if passed and not restarted else 'FAIL'}**",
    ]
    return "\n".join(out) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="10 MB crate download storm vs worker RSS")
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="8 s phases")
    parser.add_argument("--crates", type=int, default=20, help="number of big crates")
    parser.add_argument("--crate-size", type=parse_size, default="10MB", help="size of each")
    parser.add_argument("--clients", type=int, default=200, help="concurrent downloaders")
    parser.add_argument("--client-procs", type=int, default=1, help="processes running them")
    parser.add_argument("--slow-share", type=float, default=0.25, help="share of slow readers")
    parser.add_argument("--slow-rate", type=parse_size, default="1MiB", help="per second")
    parser.add_argument("--seconds", type=float, help="per phase (default 20; quick 8)")
    parser.add_argument("--workers", type=int, default=2, help="GhostCrate [server] workers")
    parser.add_argument("--memory-bytes", default="64MiB", help="GhostCrate [cache] memory_bytes")
    parser.add_argument("--slack", type=parse_size, default="100MiB", help="budget above it")
    parser.add_argument("--latency-ms", type=float, default=50, help="origin latency")
    parser.add_argument("--no-verify", action="store_true", help="skip sha256 of first bodies")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, help="reuse/keep the crates in this directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    args.seconds = args.seconds or (8 if args.quick else 20)
    args.memory_raw = args.memory_bytes
    args.memory_bytes = parse_size(args.memory_bytes)
    return args


def main() -> None:
    args = parse_args()
    if args.client is not None:
        client_main(args.client)
        return
    with scratch("ghostcrate-storm-", keep=args.keep) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    data: Path = args.data or tmp / "registry"
    params: dict[str, object] = {
        "kind": "big", "crates": args.crates, "size": args.crate_size, "seed": args.seed
    }  # fmt: skip
    manifest = read_manifest(data, params)
    if manifest is None:
        log(f"generating {args.crates} crates of {args.crate_size / 1e6:g} MB into {data}")
        registry, _ = big_crates(args.crates, args.crate_size, args.seed)
        manifest = write_registry(data, registry, params)
        del registry
    crates: list[dict[str, Any]] = manifest["crates"]  # type: ignore[assignment]
    targets = [
        {"path": path, "size": c["size"], "cksum": c["cksum"]}
        for c, path in zip(crates, download_paths_of(crates), strict=True)
    ]
    total = sum(int(c["size"]) for c in crates)
    info = {
        "crates": len(crates),
        "crate_mb": total / len(crates) / 1e6,
        "total_mb": total / 1e6,
        "cpus": len(os.sched_getaffinity(0)),
    }

    origin_port, gc_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    phases: list[Phase] = []
    try:
        origin = subprocess.Popen(
            [str(PYTHON), str(HERE / "origin.py"), "--dir", str(data), "--port", str(origin_port),
             "--latency-ms", str(args.latency_ms)],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "origin.log").open("wb"),
        )  # fmt: skip
        procs.append(origin)
        wait_http(f"http://127.0.0.1:{origin_port}/__stats", origin, "the origin")
        toml = tmp / "ghostcrate.toml"
        toml.write_text(
            f'data_dir = "{tmp / "ghostcrate-data"}"\n\n'
            "[server]\n"
            f'listen = "127.0.0.1:{gc_port}"\n'
            f"workers = {args.workers}\n"
            "shutdown_timeout = 5\n\n"
            "[upstream]\n"
            f'index = "http://127.0.0.1:{origin_port}/"\n\n'
            "[cache]\n"
            f'memory_bytes = "{args.memory_raw}"\n'
        )
        gc = launch_ghostcrate(toml, tmp / "ghostcrate.log")
        procs.append(gc)
        wait_http(f"http://127.0.0.1:{gc_port}/health", gc, "GhostCrate")
        wait_listening(tmp / "ghostcrate.log", gc, args.workers)
        base = f"http://127.0.0.1:{gc_port}"
        with WorkerSampler(gc.pid, args.workers) as sampler:
            for name in ("cold", "warm"):
                sampler.begin(name)
                log(f"{name} phase: {args.clients} clients for {args.seconds:g} s")
                phase = run_phase(
                    tmp, name, base=base, targets=targets, origin=origin_port, args=args
                )
                sampler.phase = "idle"
                phases.append(phase)
                peaks = sampler.peaks.get(name, {})
                log(
                    f"{name}: {phase.clients['bytes'] / 1e6 / phase.seconds:,.0f} MB/s, "
                    f"{sum(phase.clients['errors'].values())} errors, upstream {phase.upstream}, "
                    "peak RSS "
                    + ", ".join(f"{pid}: {p.rss / MiB:.0f} MiB" for pid, p in peaks.items())
                )
                time.sleep(1)
    finally:
        for proc in reversed(procs):
            stop(proc)
    print(report(phases, sampler, args, info))


def download_paths_of(crates: list[dict[str, Any]]) -> list[str]:
    return [f"/api/v1/crates/{c['name']}/{c['version']}/download" for c in crates]


if __name__ == "__main__":
    main()
