"""Generate a realistic sparse-index + crate data set for the GhostCrate benchmark.

Layout written under OUT:

    OUT/config.json                      the origin's config.json (origin.py rewrites `dl`)
    OUT/index/<index path>               sparse index files (one JSON line per version)
    OUT/crates/<name>/<version>.crate    gzip'd tar bytes whose sha256 is the index `cksum`
    OUT/lists/index.txt                  URL paths of every index file (as a mirror serves them)
    OUT/lists/crates.txt                 URL paths of every warm crate download
    OUT/lists/cold.txt                   URL paths of crates kept cold for the stampede scenario
    OUT/lists/hot.txt                    one small index file's URL path (the hot-file scenario)
    OUT/lists/hot-crates.txt             URL paths of the "hot set" crates (--hot-set-bytes)
    OUT/lists/disk-crates.txt            URL paths of the "disk set" crates (--disk-set-bytes)
    OUT/manifest.json                    parameters and size statistics

Everything is deterministic for a given seed and parameters. Index file sizes follow a
log-normal fit of crates.io's mix (median ~1.3 KB, p90 ~12 KB, p99 ~65 KB) plus a few
files over 1 MB; crate sizes are log-normal around a few tens of KB with a tail of several MB.

Two optional extra sets of crates, each with its own small index file (not in index.txt),
are sized by their total: the hot set (small and medium crates, median ~40 KB, at most
1 MB; meant to fit in GhostCrate's memory tier) and the disk set (median ~150 KB, at most
4 MB; meant to be several times the memory tier, so most of it is served from disk).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import random
import shutil
import statistics
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ghostcrate.cargo.names import CrateName
from ghostcrate.cargo.names import index_path as cargo_index_path

INDEX_MEDIAN = 950.0  # lines overshoot the target by half a line
INDEX_SIGMA = math.log(12_000 / INDEX_MEDIAN) / 1.2816  # p90 ~12 KB
CRATE_MEDIAN = 30_000.0
CRATE_SIGMA = 1.35
INDEX_MAX = 3_000_000
CRATE_MAX = 12_000_000
BIG_INDEX_SIZES = (1_100_000, 1_400_000, 2_200_000)
BIG_CRATE_SIZES = (3_000_000, 5_000_000, 8_000_000)
COLD_CRATE_SIZE = 1_000_000
#: Crate size distributions (median, sigma, cap) of the hot and disk sets.
HOT_SET_SIZES = (40_000.0, 1.0, 1_000_000)
DISK_SET_SIZES = (150_000.0, 1.0, 4_000_000)

_WORD_TEXT = (
    "async serde tokio futures http hyper tower tracing log rand regex bytes json yaml toml "
    "proc macro derive core util utils sys ffi bindgen build cli term color time chrono uuid "
    "crypto hash sha ring rustls tls net io fs path glob walk cache lru pool sync atomic lock "
    "alloc mem arena vec map set tree graph parse parser lexer ast syn quote codegen test mock "
    "bench fmt error anyhow thiserror config env args clap opt stream buf zip gzip tar xz zstd "
    "image pixel audio video wasm web api client server grpc proto rpc db sql redis kafka mq"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Params:
    out: Path
    index_files: int
    crates: int
    cold: int
    seed: int
    hot_set_bytes: int = 0
    disk_set_bytes: int = 0


def index_path(name: str) -> str:
    return cargo_index_path(CrateName(name))


def crate_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    # A handful of 1-, 2- and 3-letter names, as crates.io has, to cover every path shape.
    for short in ("a", "z", "io", "rs", "gc", "log", "url", "nix"):
        if len(names) < count:
            names.append(short)
            seen.add(short)
    while len(names) < count:
        parts = rng.randint(1, 3)
        name = rng.choice(["-", "_"]).join(rng.choice(_WORDS) for _ in range(parts))
        if rng.random() < 0.5:
            name = f"{name}{rng.randint(0, 999)}"
        if name.lower() not in seen and len(name) <= 64:
            seen.add(name.lower())
            names.append(name)
    return names


def lognormal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(200, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


def versions_of(rng: random.Random) -> Iterator[str]:
    major, minor, patch = 0, rng.randint(0, 3), 0
    while True:
        yield f"{major}.{minor}.{patch}"
        roll = rng.random()
        if roll < 0.65:
            patch += 1
        elif roll < 0.95:
            minor, patch = minor + 1, 0
        else:
            major, minor, patch = major + 1, 0, 0


def index_line(rng: random.Random, name: str, vers: str, cksum: str, dep_names: list[str]) -> str:
    deps = [
        {
            "name": dep,
            "req": f"^{rng.randint(0, 3)}.{rng.randint(0, 20)}",
            "features": rng.sample(["std", "derive", "alloc", "serde", "full"], rng.randint(0, 2)),
            "optional": rng.random() < 0.2,
            "default_features": rng.random() < 0.85,
            "target": None if rng.random() < 0.9 else 'cfg(target_os = "linux")',
            "kind": rng.choice(["normal", "normal", "normal", "dev", "build"]),
        }
        for dep in rng.sample(dep_names, min(len(dep_names), rng.choice([0, 1, 2, 3, 5, 8])))
    ]
    features: dict[str, list[str]] = {}
    if rng.random() < 0.6:
        features["default"] = ["std"]
        features["std"] = []
    for extra in rng.sample(["serde", "full", "alloc", "nightly", "tracing"], rng.randint(0, 3)):
        features[extra] = [f"dep:{d['name']}" for d in deps[:1]]
    entry = {
        "name": name,
        "vers": vers,
        "deps": deps,
        "cksum": cksum,
        "features": features,
        "yanked": rng.random() < 0.03,
        "v": 2,
    }
    if rng.random() < 0.5:
        entry["rust_version"] = f"1.{rng.randint(56, 80)}"
    return json.dumps(entry, separators=(",", ":"))


def crate_bytes(rng: random.Random, name: str, vers: str, size: int, level: int = 1) -> bytes:
    """A .crate-shaped file: gzip'd tar with a Cargo.toml and incompressible filler.

    The filler does not compress, so `level` 0 (stored blocks) gives about the same bytes
    as 1, faster."""
    manifest = f'[package]\nname = "{name}"\nversion = "{vers}"\nedition = "2021"\n'.encode()
    filler = rng.randbytes(max(0, size - 1536))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in (("Cargo.toml", manifest), ("src/data.bin", filler)):
            info = tarfile.TarInfo(f"{name}-{vers}/{member}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=level, mtime=0)


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats(sizes: list[int]) -> dict[str, int]:
    if not sizes:
        return {}
    return {
        "count": len(sizes),
        "median": int(statistics.median(sizes)),
        "p90": percentile(sizes, 0.90),
        "p99": percentile(sizes, 0.99),
        "max": max(sizes),
        "over_1MB": sum(s > 1_000_000 for s in sizes),
        "total": sum(sizes),
    }


def index_lines(
    rng: random.Random, name: str, target: int, dep_pool: list[str]
) -> tuple[list[str], str]:
    """Versions of one crate until the file reaches `target` bytes; and the last version."""
    lines: list[str] = []
    size = 0
    versions = versions_of(rng)
    vers = ""
    while size < target or not lines:
        vers = next(versions)
        line = index_line(rng, name, vers, rng.randbytes(32).hex(), dep_pool)
        lines.append(line)
        size += len(line) + 1
    return lines, vers


def crate_set(
    params: Params, prefix: str, total: int, sizes: tuple[float, float, int], dep_pool: list[str]
) -> tuple[list[str], list[int]]:
    """Crates named `{prefix}-NNNN`, each the newest version in its own small index file,
    with log-normal sizes (median, sigma, cap) adding up to about `total` bytes.
    Returns their download URL paths and their sizes."""
    rng = random.Random(f"{params.seed}:{prefix}")
    median, sigma, cap = sizes
    urls: list[str] = []
    file_sizes: list[int] = []
    written = 0
    while written < total:
        size = min(lognormal(rng, median, sigma, cap), max(2_000, total - written))
        name = f"{prefix}-{len(urls):04d}"
        line_rng = random.Random(f"{params.seed}:{name}")
        lines, vers = index_lines(line_rng, name, lognormal(line_rng, 600, 0.8, 20_000), dep_pool)
        data = crate_bytes(line_rng, name, vers, size, level=0)
        lines[-1] = index_line(line_rng, name, vers, hashlib.sha256(data).hexdigest(), dep_pool)
        crate_file = params.out / "crates" / name / f"{vers}.crate"
        crate_file.parent.mkdir(parents=True, exist_ok=True)
        crate_file.write_bytes(data)
        index_file = params.out / "index" / index_path(name)
        index_file.parent.mkdir(parents=True, exist_ok=True)
        index_file.write_text("\n".join(lines) + "\n")
        urls.append(f"/api/v1/crates/{name}/{vers}/download")
        file_sizes.append(len(data))
        written += len(data)
    return urls, file_sizes


def write_lists(directory: Path, lists: dict[str, list[str]]) -> None:
    for file, urls in lists.items():
        (directory / file).write_text("".join(f"{u}\n" for u in urls))


def generate(params: Params) -> dict[str, object]:
    rng = random.Random(params.seed)
    out = params.out
    for sub in ("index", "crates", "lists"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "lists").mkdir(parents=True, exist_ok=True)

    names = crate_names(rng, params.index_files)
    targets = [lognormal(rng, INDEX_MEDIAN, INDEX_SIGMA, INDEX_MAX) for _ in names]
    for i, big in enumerate(BIG_INDEX_SIZES[: max(0, min(3, len(names) // 500))]):
        targets[-1 - i] = big
    # Crates with a .crate file: `crates` warm ones and `cold` ones for the stampede.
    with_crate = rng.sample(range(len(names)), min(len(names), params.crates + params.cold))
    cold_set = set(with_crate[: params.cold])
    crate_sizes: dict[int, int] = {
        i: lognormal(rng, CRATE_MEDIAN, CRATE_SIGMA, CRATE_MAX) for i in with_crate
    }
    for n, i in enumerate(sorted(set(with_crate) - cold_set)[: len(BIG_CRATE_SIZES)]):
        crate_sizes[i] = BIG_CRATE_SIZES[n]
    for i in cold_set:
        crate_sizes[i] = COLD_CRATE_SIZE

    index_urls: list[str] = []
    crate_urls: list[str] = []
    cold_urls: list[str] = []
    index_sizes: list[int] = []
    crate_file_sizes: list[int] = []
    hot: tuple[int, str] | None = None
    for i, name in enumerate(names):
        line_rng = random.Random(f"{params.seed}:{name}")
        dep_pool = [n for n in rng.sample(names, min(40, len(names))) if n != name]
        lines, vers = index_lines(line_rng, name, targets[i], dep_pool)
        if i in crate_sizes:
            # The latest version gets a real crate whose sha256 is its index entry's cksum.
            data = crate_bytes(line_rng, name, vers, crate_sizes[i])
            lines[-1] = index_line(line_rng, name, vers, hashlib.sha256(data).hexdigest(), dep_pool)
            crate_file = out / "crates" / name / f"{vers}.crate"
            crate_file.parent.mkdir(parents=True, exist_ok=True)
            crate_file.write_bytes(data)
            url = f"/api/v1/crates/{name}/{vers}/download"
            (cold_urls if i in cold_set else crate_urls).append(url)
            if i not in cold_set:
                crate_file_sizes.append(len(data))
        body = ("\n".join(lines) + "\n").encode()
        path = out / "index" / index_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        index_urls.append(f"/index/{index_path(name)}")
        index_sizes.append(len(body))
        if 1000 <= len(body) <= 1600 and hot is None:
            hot = (len(body), f"/index/{index_path(name)}")

    (out / "config.json").write_text(
        json.dumps({"dl": "http://127.0.0.1:0/crates", "api": "http://127.0.0.1:0"}) + "\n"
    )
    set_pool = names[:40]
    hot_urls, hot_sizes = crate_set(params, "hotset", params.hot_set_bytes, HOT_SET_SIZES, set_pool)
    disk_urls, disk_sizes = crate_set(
        params, "diskset", params.disk_set_bytes, DISK_SET_SIZES, set_pool
    )
    lists = {
        "index.txt": index_urls,
        "crates.txt": crate_urls,
        "cold.txt": cold_urls,
        "hot.txt": [hot[1] if hot else index_urls[0]],
        "hot-crates.txt": hot_urls,
        "disk-crates.txt": disk_urls,
    }
    write_lists(out / "lists", lists)

    manifest: dict[str, object] = {
        "seed": params.seed,
        "index_files": stats(index_sizes),
        "crates": stats(crate_file_sizes),
        "cold_crates": len(cold_urls),
        "hot_set_bytes": params.hot_set_bytes,
        "disk_set_bytes": params.disk_set_bytes,
        "hot_set": stats(hot_sizes),
        "disk_set": stats(disk_sizes),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to (re)generate")
    parser.add_argument("--index-files", type=int, default=3000, help="index files (crate names)")
    parser.add_argument("--crates", type=int, default=300, help="warm .crate files")
    parser.add_argument("--cold", type=int, default=8, help="cold crates for the stampede")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hot-set-bytes", type=int, default=0, help="total size of the hot set of crates"
    )
    parser.add_argument(
        "--disk-set-bytes", type=int, default=0, help="total size of the disk set of crates"
    )
    args = parser.parse_args()
    params = Params(
        args.out, args.index_files, args.crates, args.cold, args.seed,
        args.hot_set_bytes, args.disk_set_bytes,
    )  # fmt: skip
    manifest = generate(params)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
