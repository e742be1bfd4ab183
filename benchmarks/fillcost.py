"""Instructions a GhostCrate worker spends per cold fill, counted by callgrind.

    .venv/bin/python benchmarks/fillcost.py [--bursts 10] [--against DIR]

Wall-clock figures on a shared 2-core machine move by 20 % from one run to the next;
instruction counts do not: valgrind counts the same program the same way whatever else
the machine is doing. This measures what a cold fill costs the worker that does it,
which is what a cold `cargo fetch` through one worker waits for (`coldfetch.py`).

Generates a data set (datagen.py), serves it with origin.py behind an nginx TLS +
HTTP/2 front (the upstream as crates.io is; `coldfetch.py`'s), and starts GhostCrate
with one worker under `valgrind --tool=callgrind` with counting off. Over one h2c
connection whose windows are as large as curl's (cargo's), it then asks for bursts of
40 cold index files, and bursts of 40 cold crates (their index files fetched first,
not counted). Counting is switched on (`callgrind_control`) only around the bursts
after the first of each kind (which opens the upstream connection). Prints the
instructions per index fill and per crate fill (worker process, all threads, user
space). With `--against DIR` (a checkout of another commit, e.g. a `git worktree`),
the same is measured for it in the same run, on the same files, and the ratios.
Needs valgrind, nginx and the project's `.venv`; everything listens on 127.0.0.1 and
every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from pathlib import Path

from bench import PYTHON, free_port, log, scratch, stop, wait_http
from coldfetch import Net, nginx_tls_conf, wait_tls

from ghostcrate.cargo.names import CrateName
from ghostcrate.cargo.names import index_path as cargo_index_path
from tests.support.h2client import H2Client
from tests.support.tls import make_pki

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BURST = 40
#: What curl (cargo's HTTP client) advertises: a stream window of 32 MiB, a large connection window.
STREAM_WINDOW = 32 * 2**20
CONNECTION_WINDOW = 100 * 2**20


def index_path(download: str) -> str:
    """The sparse-index path of a download path `/api/v1/crates/NAME/VERSION/download`."""
    return f"/index/{cargo_index_path(CrateName(download.split('/')[4]))}"


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL)


def total(dump: Path) -> int:
    """The instruction total of one callgrind dump."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):  # ("summary:" stays 0 in a dump taken on demand)
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


async def bursts(
    port: int, pid: int, index_bursts: list[list[str]], crate_bursts: list[list[str]]
) -> None:
    client, _ = await H2Client.upgrade("127.0.0.1", port, "/index/config.json")
    try:
        client.widen_windows(STREAM_WINDOW, CONNECTION_WINDOW)
        for kind, groups in (("index", index_bursts), ("crate", crate_bursts)):
            if kind == "crate":  # their index files, not counted
                for group in groups:
                    await client.get_many(sorted({index_path(p) for p in group}))
            for number, group in enumerate(groups):
                if number == 1:
                    callgrind(pid, "--instr=on")
                answers = await client.get_many(group)
                bad = [a.status for a in answers if a.status != 200]
                if bad:
                    raise SystemExit(f"{kind} burst {number}: statuses {bad}")
            callgrind(pid, "--instr=off")
            callgrind(pid, "--dump")
    finally:
        await client.close()


def measure(
    root: Path, tmp: Path, net: Net, ca: Path, groups: tuple[list[list[str]], list[list[str]]]
) -> tuple[float, float]:
    """Instructions per index fill and per crate fill of the checkout at `root`."""
    work = tmp / f"gc-{abs(hash(root))}"
    work.mkdir()
    port = free_port()
    toml = work / "ghostcrate.toml"
    toml.write_text(
        f'data_dir = "{work / "data"}"\n[server]\nlisten = "127.0.0.1:{port}"\nworkers = 1\n'
        f'access_log = false\n[upstream]\nindex = "{net.upstream}"\nca_bundle = "{ca}"\n'
    )
    out = work / "callgrind.out"
    log(f"starting GhostCrate from {root} under callgrind (about 30 s)")
    gc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         str(PYTHON), "-m", "ghostcrate", "serve", "--config", str(toml)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=(work / "ghostcrate.log").open("wb"),
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", gc, "GhostCrate", timeout=300)
        asyncio.run(bursts(port, gc.pid, *groups))
    finally:
        stop(gc)
    index_fills = sum(len(group) for group in groups[0][1:])
    crate_fills = sum(len(group) for group in groups[1][1:])
    return total(Path(f"{out}.1")) / index_fills, total(Path(f"{out}.2")) / crate_fills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=10, help="counted bursts of each kind")
    parser.add_argument("--against", type=Path, help="another checkout to measure the same way")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    with scratch("ghostcrate-fillcost-", keep=args.keep) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    per_kind = (args.bursts + 1) * BURST
    data = tmp / "data"
    subprocess.run(
        [str(PYTHON), str(HERE / "datagen.py"), str(data), "--index-files", str(4 * per_kind),
         "--crates", str(2 * per_kind)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    downloads = (data / "lists" / "crates.txt").read_text().split()
    if len(downloads) < 2 * per_kind:
        raise SystemExit(f"datagen wrote {len(downloads)} crates, {2 * per_kind} are needed")
    index_groups = [
        sorted({index_path(p) for p in downloads[i : i + BURST]}) for i in range(0, per_kind, BURST)
    ]
    crate_groups = [
        downloads[per_kind + i : per_kind + i + BURST] for i in range(0, per_kind, BURST)
    ]
    origin_port, front_port = free_port(), free_port()
    pki = make_pki(tmp / "pki", "fillcost")
    net = Net(
        origin_port, f"https://127.0.0.1:{front_port}/", pki.ca_path, free_port(), free_port()
    )
    origin = subprocess.Popen(
        [str(PYTHON), str(HERE / "origin.py"), "--dir", str(data), "--port", str(origin_port),
         "--latency-ms", "20", "--public-url", net.upstream],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nginx: subprocess.Popen[bytes] | None = None
    try:
        wait_http(f"http://127.0.0.1:{origin_port}/__stats", origin, "origin")
        conf = nginx_tls_conf(tmp / "nginx", tmp / "pki", front_port, origin_port, net)
        prefix = tmp / "nginx"
        nginx = subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_tls(front_port, nginx)
        roots = [REPO] + ([args.against.resolve()] if args.against else [])
        results = {
            root: measure(root, tmp, net, pki.ca_path, (index_groups, crate_groups))
            for root in roots
        }
    finally:
        if nginx is not None:
            stop(nginx)
        stop(origin)
    print(f"\nInstructions per cold fill, one worker, {args.bursts} bursts of {BURST} each:\n")
    print("| checkout | per index fill | per crate fill |")
    print("| --- | ---: | ---: |")
    for root, (index, crate) in results.items():
        print(f"| `{root}` | {index / 1e6:.2f} M | {crate / 1e6:.2f} M |")
    if args.against:
        (index, crate), (old_index, old_crate) = results[REPO], results[args.against.resolve()]
        print(f"| this / against | {index / old_index:.2f} | {crate / old_crate:.2f} |")


if __name__ == "__main__":
    main()
