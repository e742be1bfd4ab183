"""Worker scaling: "warm index, random mix" with 1 and 2 workers, GhostCrate and nginx.

    .venv/bin/python benchmarks/scaling.py [--quick] [--workers 1,2]

Starts, for each worker count, an origin, a GhostCrate (`[server] workers = N`) and an
nginx (`worker_processes N`) exactly as bench.py does (its functions are reused), warms
every index file through all of them, then runs bench.py's "warm index, random mix" wrk
scenario round by round, rotating through all servers so that noise spreads evenly.
Before each round every server is passed over the whole index once, untimed (index files
are fresh for 60 s; a round must not time a wave of revalidations). Prints req/s per
worker count and the speed-up against the smallest count, for both servers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench import (
    GC,
    NGX,
    Row,
    Server,
    index_only_data,
    log,
    read_list,
    refresh,
    scratch,
    started,
    warm,
    wrk,
)

SCENARIO = "warm index, random mix"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="req/s against the number of workers")
    parser.add_argument("--quick", action="store_true", help="~1 minute: 1000 index files")
    parser.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 8; quick 3)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--index-files", type=int, help="default 3000 (quick 1000)")
    parser.add_argument("--memory-bytes", default="64MiB", help="GhostCrate [cache] memory_bytes")
    parser.add_argument(
        "--index-ttl", type=int, default=600, help="seconds index files are kept (bench.py's)"
    )
    parser.add_argument("--no-access-log", action="store_true", help="both servers, no log")
    parser.add_argument("--data", type=Path, help="a bench.py/datagen.py data directory to reuse")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    args.counts = sorted({int(n) for n in args.workers.split(",")})
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.seconds = args.seconds or (3 if args.quick else 8)
    args.index_files = args.index_files or (1000 if args.quick else 3000)
    return args


def table(rows: dict[tuple[str, int], Row], counts: list[int]) -> str:
    out = [
        "| server | workers | req/s | MB/s | p50 ms | p99 ms | peak RSS MiB | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in (GC, NGX):
        for n in counts:
            row = rows[(name, n)]
            out.append(
                f"| {name} | {n} | {row.rate():,.0f} | {row.mbps():,.1f} | {row.p50():.2f} | "
                f"{row.p99():.2f} | {row.rss_mb():.0f} | {row.errors()} |"
            )
    base = counts[0]
    out += [
        "",
        f"Speed-up against {base} worker{'s' if base > 1 else ''} (req/s):",
        "",
        "| server | " + " | ".join(f"{n} vs {base}" for n in counts[1:]) + " |",
        "| --- | " + " | ".join("---:" for _ in counts[1:]) + " |",
    ]
    for name in (GC, NGX):
        ups = [rows[(name, n)].rate() / rows[(name, base)].rate() for n in counts[1:]]
        out.append(f"| {name} | " + " | ".join(f"{u:.2f}" for u in ups) + " |")
    out += [
        "",
        "GhostCrate / nginx (req/s) at each worker count:",
        "",
        "| workers | " + " | ".join(str(n) for n in counts) + " |",
        "| --- | " + " | ".join("---:" for _ in counts) + " |",
        "| ghostcrate / nginx | "
        + " | ".join(f"{rows[(GC, n)].rate() / rows[(NGX, n)].rate():.2f}" for n in counts)
        + " |",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    args = parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH: run benchmarks/setup.sh (apt) first")
    with scratch("ghostcrate-scaling-", keep=args.keep) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    data: Path = args.data or tmp / "data"
    index_only_data(data, args.index_files)
    manifest = json.loads((data / "manifest.json").read_text())
    list_file = data / "lists" / "index.txt"
    index = read_list(list_file)
    load_before = Path("/proc/loadavg").read_text().strip()
    groups: dict[int, tuple[int, list[Server]]] = {}
    with contextlib.ExitStack() as stack:
        for n in args.counts:
            sub = tmp / f"workers-{n}"
            sub.mkdir()
            settings = argparse.Namespace(**(vars(args) | {"workers": n}))
            origin, servers = stack.enter_context(started(sub, settings, data))
            log(f"{n} worker(s): origin :{origin}, " + ", ".join(s.url for s in servers))
            warm(sub, origin, servers, index, [])
            groups[n] = (origin, servers)
        keys = [(s.name, n) for n, (_, servers) in groups.items() for s in servers]
        by_key = {(s.name, n): s for n, (_, servers) in groups.items() for s in servers}
        rows = {key: Row() for key in keys}
        for round_ in range(args.rounds):
            for origin, servers in groups.values():
                refresh(origin, servers, index)
            shift = round_ % len(keys)
            for key in keys[shift:] + keys[:shift]:
                run = wrk(
                    by_key[key], list_file, args.seconds,
                    connections=args.connections, threads=args.threads, etag=False,
                )  # fmt: skip
                rows[key].runs.append(run)
                log(
                    f"{SCENARIO} [{round_ + 1}/{args.rounds}] {key[0]} x{key[1]}: "
                    f"{run.requests / (run.duration_us / 1e6):,.0f} req/s, "
                    f"p99 {run.p99_us / 1000:.2f} ms, {run.errors} errors"
                )

    print(f"# Worker scaling, {SCENARIO} ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(
        f"- wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x "
        f"{args.seconds:g} s per server and worker count, rotating; GhostCrate `workers` / "
        f"nginx `worker_processes` = {', '.join(map(str, args.counts))}; GhostCrate "
        f"memory_bytes {args.memory_bytes}; access logs "
        f"{'off' if args.no_access_log else 'on (to files)'}"
    )
    print(f"- data: {json.dumps(manifest['index_files'])} index bytes")
    print(
        f"- NOTE: wrk ({args.threads} threads), the servers and the origin share this machine's "
        f"{os.cpu_count()} cores, so no server can use {max(args.counts)} cores for itself: "
        "the speed-up shows how each server uses what the machine leaves it, not its "
        "scaling on dedicated cores.\n"
    )
    print(table(rows, args.counts))
    print(f"Load average before / after: {load_before} / {Path('/proc/loadavg').read_text()}")
    if args.json:
        raw: dict[str, Any] = {
            f"{name} x{n}": [vars(r) for r in row.runs] for (name, n), row in rows.items()
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
