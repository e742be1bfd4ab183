"""Private crates beside the mirror: mirrored index hits with them and with `[auth]`, publishes/s.

    .venv/bin/python benchmarks/private.py [--quick]

Targets: req/s of mirrored index hits (bench.py's "warm index, random mix") with
private crates published is at least 0.95x, and with `[auth] required = true` (wrk
sending a token with every request) at least 0.8x, of the same run with neither.

Starts one origin (origin.py, a datagen.py index) and three GhostCrates in front of
it, each with its own `data_dir` and `--workers` workers: `plain` (no private crates,
default `[auth]`), `private` (`--private-crates` crates published over the HTTP API
with a token made by `ghostcrate user add` / `token create`) and `required` (the same,
with `[auth] required = true`). All three are warmed over every index file, then the
wrk runs rotate over them round by round. Then `--publishers` concurrent publishers
PUT distinct crates of `--crate-bytes` (incompressible) to `private`: new crates and
new versions, `--publishes` per round, and the script prints publishes/s and latency
percentiles per round. Every child process is started here and stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bench import (
    HERE,
    PYTHON,
    REPO,
    Row,
    Server,
    descendants,
    free_port,
    ghostcrate_toml,
    index_only_data,
    launch_ghostcrate,
    log,
    read_list,
    scratch,
    stop,
    wait_http,
    wait_listening,
    wrk,
)

if str(REPO) not in sys.path:  # tests.support is not an installed package
    sys.path.insert(0, str(REPO))

from tests.support.crates import CrateSpec, build_crate, index_path
from tests.support.publish import metadata_bytes, publish_body

PLAIN, PRIVATE, REQUIRED = "plain", "private", "required"
CONFIGS = (PLAIN, PRIVATE, REQUIRED)
DESCRIPTION = {
    PLAIN: "(a) no private crates, default [auth]",
    PRIVATE: "(b) private crates, default [auth]",
    REQUIRED: "(c) private crates, [auth] required = true, token on every request",
}
TARGETS = {PRIVATE: 0.95, REQUIRED: 0.8}
SCENARIO = "warm index, random mix"
USER = "bench"


@dataclass
class Instance:
    config: str
    server: Server
    toml: Path
    token: str | None = None


@dataclass
class PublishRound:
    publishes: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    crate_bytes: list[int] = field(default_factory=list)
    #: CPU seconds (user + system) the server's processes used during the round.
    server_cpu: float = 0.0
    #: CPU seconds this process (the publishers) used during the round.
    client_cpu: float = 0.0

    def rate(self) -> float:
        return self.publishes / self.seconds

    def percentile(self, p: int) -> float:
        """The `p`th percentile of the latencies, in ms."""
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return cuts[p - 1] * 1000


# --- accounts and publishing -----------------------------------------------------------


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process tree (all threads of each live process)."""
    ticks = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def ghostcrate_command(toml: Path, *args: str) -> str:
    """`ghostcrate ARGS --config TOML`, as an operator runs it; its standard output."""
    done = subprocess.run(
        [str(PYTHON), "-m", "ghostcrate", *args, "--config", str(toml)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ghostcrate {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def make_token(toml: Path) -> str:
    """An administrator `bench` and a token for it (`ghostcrate user add`, `token create`)."""
    ghostcrate_command(toml, "user", "add", USER, "--admin")
    return ghostcrate_command(toml, "token", "create", "--user", USER)


def body_of(name: str, version: str, extra_bytes: int) -> tuple[bytes, int]:
    """cargo's publish body for a test crate with `extra_bytes` of incompressible data,
    and the size of its `.crate`."""
    spec = CrateSpec(name, version, extra_bytes=extra_bytes)
    crate = build_crate(spec)
    return publish_body(metadata_bytes(spec), crate), len(crate)


async def publish_all(
    url: str, token: str, bodies: list[tuple[bytes, int]], publishers: int
) -> PublishRound:
    """PUT every body to /api/v1/crates/new, `publishers` at a time, each on its own
    keep-alive connection; every publish's latency and every failure."""
    queue = list(reversed(bodies))
    result = PublishRound(len(bodies), 0.0)
    headers = {"Authorization": token, "Content-Type": "application/octet-stream"}
    connector = aiohttp.TCPConnector(limit=publishers)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def publisher() -> None:
            while queue:
                body, crate_size = queue.pop()
                started_at = time.perf_counter()
                async with session.put(
                    url + "/api/v1/crates/new", data=body, headers=headers
                ) as answer:
                    text = await answer.text()
                result.latencies.append(time.perf_counter() - started_at)
                result.crate_bytes.append(crate_size)
                if answer.status != 200:
                    result.failures.append(f"{answer.status}: {text[:200]}")

        started_at = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(publishers)))
        result.seconds = time.perf_counter() - started_at
    return result


def load_bodies(
    round_: int, count: int, extra_bytes: int, per_crate: int
) -> list[tuple[bytes, int]]:
    """`count` distinct publishes: every `per_crate`-th a new crate, the others new versions."""
    return [
        body_of(f"bench-load{round_}-{i // per_crate:04d}", f"0.1.{i % per_crate}", extra_bytes)
        for i in range(count)
    ]


# --- the servers -----------------------------------------------------------------------


async def fetch_all(base: str, paths: list[str], token: str | None) -> int:
    """GET every path once (16 at a time), with the token if any; the number of failures."""
    failures = 0
    queue = list(paths)
    headers = {"Authorization": token} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker() -> None:
            nonlocal failures
            while queue:
                async with session.get(base + queue.pop(), headers=headers) as answer:
                    await answer.read()
                    failures += answer.status != 200

        await asyncio.gather(*(worker() for _ in range(16)))
    return failures


def status_of(url: str, token: str | None) -> int:
    async def get() -> int:
        headers = {"Authorization": token} if token else {}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
            await answer.read()
            return answer.status

    return asyncio.run(get())


@contextlib.contextmanager
def started(tmp: Path, args: argparse.Namespace, data: Path) -> Iterator[list[Instance]]:
    """The origin and one GhostCrate per configuration, stopped by PID at the end."""
    procs = []
    try:
        origin_port = free_port()
        origin = subprocess.Popen(
            [str(PYTHON), str(HERE / "origin.py"), "--dir", str(data), "--port", str(origin_port)],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "origin.log").open("wb"),
        )
        procs.append(origin)
        wait_http(f"http://127.0.0.1:{origin_port}/__stats", origin, "the origin")
        instances = []
        for config in CONFIGS:
            sub = tmp / config
            sub.mkdir()
            port = free_port()
            toml = ghostcrate_toml(sub, port, origin_port, args)
            if config == REQUIRED:
                with toml.open("a") as file:
                    file.write("\n[auth]\nrequired = true\n")
            proc = launch_ghostcrate(toml, sub / "ghostcrate.log")
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/health", proc, f"GhostCrate ({config})")
            wait_listening(sub / "ghostcrate.log", proc, args.workers)
            instances.append(Instance(config, Server(config, port, proc), toml))
        yield instances
    finally:
        for proc in reversed(procs):
            stop(proc)


def private_names(args: argparse.Namespace) -> list[str]:
    return [f"bench-private-{i:04d}" for i in range(args.private_crates)]


def populate(instance: Instance, args: argparse.Namespace) -> None:
    """A token, then `--private-crates` private crates published over the HTTP API."""
    token = instance.token = make_token(instance.toml)
    bodies = [body_of(name, "1.0.0", 1024) for name in private_names(args)]
    done = asyncio.run(publish_all(instance.server.url, token, bodies, args.publishers))
    if done.failures:
        raise SystemExit(f"publishing to {instance.config} failed: {done.failures[:3]}")
    log(
        f"{instance.config}: {len(bodies)} private crates published in {done.seconds:.1f} s "
        f"({done.rate():.0f}/s)"
    )


def warm(instance: Instance, index: list[str], private_paths: list[str]) -> None:
    started_at = time.monotonic()
    paths = index + (private_paths if instance.config != PLAIN else [])
    failures = asyncio.run(fetch_all(instance.server.url, paths, instance.token))
    log(
        f"warmed {instance.config}: {len(paths)} index files in "
        f"{time.monotonic() - started_at:.1f} s, {failures} failures"
    )
    if failures:
        raise SystemExit(f"warming {instance.config} failed for {failures} paths")
    if instance.config == REQUIRED:  # the configuration is what it says
        without = status_of(instance.server.url + index[0], None)
        if without != 401:
            raise SystemExit(f"{REQUIRED}: an index hit without a token answered {without}")


# --- the run ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="index hits with private crates; publishes/s")
    parser.add_argument("--quick", action="store_true", help="1000 index files, 2 rounds x 3 s")
    parser.add_argument("--rounds", type=int, help="wrk rounds per configuration (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 8; quick 3)")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="untimed wrk run each")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--index-files", type=int, help="default 3000 (quick 1000)")
    parser.add_argument("--workers", type=int, default=2, help="GhostCrate [server] workers")
    parser.add_argument("--memory-bytes", default="64MiB", help="GhostCrate [cache] memory_bytes")
    parser.add_argument("--index-ttl", type=int, default=600, help="seconds index files are kept")
    parser.add_argument("--no-access-log", action="store_true", help="GhostCrate without logs")
    parser.add_argument("--private-crates", type=int, default=200, help="published for (b), (c)")
    parser.add_argument("--publishers", type=int, default=8, help="concurrent publishers")
    parser.add_argument("--publishes", type=int, help="per publish round (default 400; quick 200)")
    parser.add_argument("--publish-rounds", type=int, help="default 2 (quick 1)")
    parser.add_argument(
        "--crate-bytes", type=int, default=20_000,
        help="incompressible bytes in each crate of the publish rounds (default 20000: "
        "a ~20 KB .crate)",
    )  # fmt: skip
    parser.add_argument(
        "--versions-per-crate", type=int, default=4,
        help="publish rounds: a new crate every N publishes, new versions in between",
    )  # fmt: skip
    parser.add_argument("--no-publish", action="store_true", help="index hits only")
    parser.add_argument("--no-reads", action="store_true", help="publishes only")
    parser.add_argument("--data", type=Path, help="a datagen.py data directory to reuse")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.seconds = args.seconds or (3 if args.quick else 8)
    args.index_files = args.index_files or (1000 if args.quick else 3000)
    args.publishes = args.publishes or (200 if args.quick else 400)
    args.publish_rounds = args.publish_rounds or (1 if args.quick else 2)
    return args


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: run benchmarks/setup.sh (apt) first")
    with scratch("ghostcrate-private-", keep=args.keep) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    data: Path = args.data or tmp / "data"
    index_only_data(data, args.index_files)
    list_file = data / "lists" / "index.txt"
    index = read_list(list_file)
    load_before = Path("/proc/loadavg").read_text().strip()
    rows = {config: Row() for config in CONFIGS}
    publish_rounds: list[PublishRound] = []
    with started(tmp, args, data) as instances:
        log(", ".join(f"{i.config} {i.server.url}" for i in instances))
        for instance in instances:
            if instance.config != PLAIN:
                populate(instance, args)
        private_paths = [f"/index/{index_path(name)}" for name in private_names(args)]
        if not args.no_reads:
            for instance in instances:
                warm(instance, index, private_paths)
            for instance in instances:  # untimed: every worker has seen the files
                wrk(
                    instance.server, list_file, args.warmup_seconds,
                    connections=args.connections, threads=args.threads, etag=False,
                    authorization=instance.token if instance.config == REQUIRED else None,
                )  # fmt: skip
            for round_ in range(args.rounds):
                shift = round_ % len(instances)
                for instance in instances[shift:] + instances[:shift]:
                    result = wrk(
                        instance.server, list_file, args.seconds,
                        connections=args.connections, threads=args.threads, etag=False,
                        authorization=instance.token if instance.config == REQUIRED else None,
                    )  # fmt: skip
                    rows[instance.config].runs.append(result)
                    log(
                        f"{SCENARIO} [{round_ + 1}/{args.rounds}] {instance.config}: "
                        f"{result.requests / (result.duration_us / 1e6):,.0f} req/s, "
                        f"p99 {result.p99_us / 1000:.2f} ms, {result.errors} errors"
                    )
        if not args.no_publish:
            target = next(i for i in instances if i.config == PRIVATE)
            assert target.token is not None
            for round_ in range(args.publish_rounds):
                bodies = load_bodies(
                    round_, args.publishes, args.crate_bytes, args.versions_per_crate
                )
                server_before, client_before = (
                    cpu_seconds(target.server.proc.pid),
                    time.process_time(),
                )
                done = asyncio.run(
                    publish_all(target.server.url, target.token, bodies, args.publishers)
                )
                done.server_cpu = cpu_seconds(target.server.proc.pid) - server_before
                done.client_cpu = time.process_time() - client_before
                publish_rounds.append(done)
                log(
                    f"publish round {round_ + 1}: {done.publishes} in {done.seconds:.1f} s, "
                    f"{done.rate():.1f}/s, p50 {done.percentile(50):.0f} ms, "
                    f"server CPU {done.server_cpu:.1f} s, {len(done.failures)} failures"
                )
    load_after = Path("/proc/loadavg").read_text().strip()
    report(args, rows, publish_rounds, load_before, load_after)


def report(
    args: argparse.Namespace,
    rows: dict[str, Row],
    publish_rounds: list[PublishRound],
    load_before: str,
    load_after: str,
) -> None:
    print(f"# Private crates beside the mirror ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(
        f"- GhostCrate `workers = {args.workers}`, memory_bytes {args.memory_bytes}, access "
        f"logs {'off' if args.no_access_log else 'on (to files)'}; {args.private_crates} "
        "private crates in (b) and (c)"
    )
    print(
        f"- NOTE: wrk, the three GhostCrates and the origin share this machine's "
        f"{os.cpu_count()} cores (only one GhostCrate is loaded at a time); figures are "
        "relative.\n"
    )
    if not args.no_reads:
        print(
            f"## Mirrored index hits ({SCENARIO}, {args.index_files} files)\n\n"
            f"wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x "
            f"{args.seconds:g} s per configuration, rotating, after an untimed "
            f"{args.warmup_seconds:g} s run each.\n"
        )
        head = "| configuration | " + " | ".join(f"round {r + 1} req/s" for r in range(args.rounds))
        print(head + " | all rounds req/s | p50 ms | p99 ms | peak RSS MiB | errors |")
        print("| --- |" + " ---: |" * (args.rounds + 5))
        for config in CONFIGS:
            row = rows[config]
            per_run = " | ".join(f"{r.requests / (r.duration_us / 1e6):,.0f}" for r in row.runs)
            print(
                f"| {DESCRIPTION[config]} | {per_run} | {row.rate():,.0f} | {row.p50():.2f} | "
                f"{row.p99():.2f} | {row.rss_mb():.0f} | {row.errors()} |"
            )
        print("\nRatios to (a), per round and over all rounds:\n")
        print("| ratio | " + " | ".join(f"round {r + 1}" for r in range(args.rounds)), end="")
        print(" | all rounds | target | verdict |")
        print("| --- |" + " ---: |" * (args.rounds + 2) + " --- |")
        base = rows[PLAIN]
        for config, label in ((PRIVATE, "b / a"), (REQUIRED, "c / a")):
            row = rows[config]
            per_round = [
                (r.requests / r.duration_us) / (b.requests / b.duration_us)
                for r, b in zip(row.runs, base.runs, strict=True)
            ]
            overall = row.rate() / base.rate()
            verdict = "PASS" if overall >= TARGETS[config] else "FAIL"
            print(
                f"| {label} | " + " | ".join(f"{x:.2f}" for x in per_round)
                + f" | {overall:.2f} | >= {TARGETS[config]} | {verdict} |"
            )  # fmt: skip
        print()
    if publish_rounds:
        sizes = [s for r in publish_rounds for s in r.crate_bytes]
        print(
            f"## Publishes ({args.publishers} concurrent publishers, `.crate` median "
            f"{statistics.median(sizes) / 1000:.1f} KB)\n\n"
            f"Each round publishes {args.publishes} distinct crates to (b) over HTTP (a new "
            f"crate every {args.versions_per_crate} publishes, new versions in between). "
            "The registry's SQLite is in WAL mode with `synchronous = FULL`: each publish's "
            "commit waits for an fdatasync of the WAL (under the write lock), and its `.crate` "
            "file and directory are fsynced before it.\n"
        )
        print("| round | publishes | seconds | publishes/s | p50 ms | p95 ms | p99 ms | max ms "
              "| server CPU s (per publish ms) | publishers' CPU s | failures |")  # fmt: skip
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n, r in enumerate(publish_rounds, 1):
            print(
                f"| {n} | {r.publishes} | {r.seconds:.1f} | {r.rate():.1f} | "
                f"{r.percentile(50):.0f} | {r.percentile(95):.0f} | {r.percentile(99):.0f} | "
                f"{max(r.latencies) * 1000:.0f} | {r.server_cpu:.1f} "
                f"({r.server_cpu / r.publishes * 1000:.1f}) | {r.client_cpu:.1f} | "
                f"{len(r.failures)} |"
            )
        print(
            f"\nServer CPU is the user + system time of all of (b)'s processes during the "
            f"round; the machine has {os.cpu_count()} cores for the server and the publishers."
        )
        for r in publish_rounds:
            for failure in r.failures[:5]:
                print(f"\n- failure: {failure}")
        print()
    print(f"Load average before / after: {load_before} / {load_after}")
    if args.json:
        raw: dict[str, Any] = {config: [vars(r) for r in row.runs] for config, row in rows.items()}
        raw["publish"] = [vars(r) for r in publish_rounds]
        args.json.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
