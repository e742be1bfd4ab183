"""Mirrored index hits in the fast lane with `[limits]` configured vs switched off.

    .venv/bin/python benchmarks/limits.py [--rounds 3] [--seconds 5]

Target: req/s of mirrored index hits (bench.py's "warm index, random mix") on a
GhostCrate with small `[limits]` rates set for every route class is at least 0.95x
of the same run on one with `[limits] enabled = false`: the lanes never ask the
limiter about index and download hits. Starts one origin (origin.py, a datagen.py
index of `--index-files` files) and the two GhostCrates in front of it, warms both,
rotates wrk runs over them round by round, checks that the limited one does answer
429 on the API, and prints the ratio. Every child process is started here and
stopped by its PID. About a minute with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench import (
    HERE,
    PYTHON,
    Row,
    Server,
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
from private import fetch_all

OFF, ON = "off", "limited"
TARGET = 0.95
#: The limited GhostCrate's tables: small enough that the API answers 429 at once.
LIMITED = "".join(
    f'\n[limits.{name}]\nper_token = "10/minute"\nper_user = "10/minute"\n'
    f'per_address = "10/minute"\n'
    for name in ("publish", "login", "search", "api")
)


@contextlib.contextmanager
def started(tmp: Path, args: argparse.Namespace, data: Path) -> Iterator[dict[str, Server]]:
    """The origin and the two GhostCrates, stopped by PID at the end."""
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
        servers = {}
        for config, extra in ((OFF, "\n[limits]\nenabled = false\n"), (ON, LIMITED)):
            sub = tmp / config
            sub.mkdir()
            port = free_port()
            toml = ghostcrate_toml(sub, port, origin_port, args)
            with toml.open("a") as file:
                file.write(extra)
            proc = launch_ghostcrate(toml, sub / "ghostcrate.log")
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/health", proc, f"GhostCrate ({config})")
            wait_listening(sub / "ghostcrate.log", proc, args.workers)
            servers[config] = Server(config, port, proc)
        yield servers
    finally:
        for proc in reversed(procs):
            stop(proc)


def api_statuses(server: Server, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        try:
            with urllib.request.urlopen(server.url + "/api/v1/crates/nosuchcrate") as answer:
                statuses.append(answer.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    return statuses


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="index hits with [limits] on vs off")
    parser.add_argument("--rounds", type=int, default=3, help="wrk rounds per configuration")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="untimed wrk run each")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--index-files", type=int, default=1000, help="datagen.py index files")
    parser.add_argument("--workers", type=int, default=2, help="GhostCrate [server] workers")
    parser.add_argument("--memory-bytes", default="64MiB", help="GhostCrate [cache] memory_bytes")
    parser.add_argument("--index-ttl", type=int, default=600, help="seconds index files are kept")
    parser.add_argument("--no-access-log", action="store_true", help="GhostCrate without logs")
    parser.add_argument("--data", type=Path, help="a datagen.py data directory to reuse")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: run benchmarks/setup.sh (apt) first")
    with scratch("ghostcrate-limits-", keep=args.keep) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    data: Path = args.data or tmp / "data"
    index_only_data(data, args.index_files)
    list_file = data / "lists" / "index.txt"
    index = read_list(list_file)
    load_before = Path("/proc/loadavg").read_text().strip()
    rows = {OFF: Row(), ON: Row()}
    with started(tmp, args, data) as servers:
        order = list(servers.values())
        for server in order:
            failures = asyncio.run(fetch_all(server.url, index, None))
            if failures:
                raise SystemExit(f"warming {server.name} failed for {failures} paths")
            wrk(server, list_file, args.warmup_seconds, connections=args.connections,
                threads=args.threads, etag=False)  # fmt: skip
        for round_ in range(args.rounds):
            for server in order[round_ % 2 :] + order[: round_ % 2]:
                result = wrk(server, list_file, args.seconds, connections=args.connections,
                             threads=args.threads, etag=False)  # fmt: skip
                rows[server.name].runs.append(result)
                log(
                    f"[{round_ + 1}/{args.rounds}] {server.name}: "
                    f"{result.requests / (result.duration_us / 1e6):,.0f} req/s, "
                    f"{result.errors} errors"
                )
        limited = api_statuses(servers[ON], 12)
        if 429 not in limited:
            raise SystemExit(f"the limited GhostCrate never answered 429 on the API: {limited}")
    load_after = Path("/proc/loadavg").read_text().strip()
    report(args, rows, limited, load_before, load_after)


def report(
    args: argparse.Namespace,
    rows: dict[str, Row],
    limited: list[int],
    load_before: str,
    load_after: str,
) -> None:
    print(f"# Fast-lane index hits with [limits] ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(
        f"wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x {args.seconds:g} s "
        f"per configuration, rotating; {args.index_files} index files; workers = "
        f"{args.workers}.\n"
    )
    print("| configuration | " + " | ".join(f"round {r + 1}" for r in range(args.rounds)), end="")
    print(" | all rounds req/s | p50 ms | p99 ms | errors |")
    print("| --- |" + " ---: |" * (args.rounds + 4))
    for name, row in rows.items():
        per_run = " | ".join(f"{r.requests / (r.duration_us / 1e6):,.0f}" for r in row.runs)
        print(
            f"| {name} | {per_run} | {row.rate():,.0f} | {row.p50():.2f} | {row.p99():.2f} | "
            f"{row.errors()} |"
        )
    ratio = rows[ON].rate() / rows[OFF].rate()
    per_round = [
        (on.requests / on.duration_us) / (off.requests / off.duration_us)
        for on, off in zip(rows[ON].runs, rows[OFF].runs, strict=True)
    ]
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"\nlimited / off: {ratio:.3f}x (rounds: {', '.join(f'{x:.2f}' for x in per_round)}); "
        f"target >= {TARGET}: {verdict}"
    )
    print(f"API statuses of the limited GhostCrate afterwards: {limited}")
    print(f"Load average before / after: {load_before} / {load_after}")


if __name__ == "__main__":
    main()
