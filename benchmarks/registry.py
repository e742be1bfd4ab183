"""Registries of real `.crate` archives, written in the layout origin.py serves.

    OUT/config.json                      the origin's config.json (origin.py rewrites `dl`)
    OUT/index/<index path>               one JSON line per version, `cksum` = sha256 of the archive
    OUT/crates/<name>/<version>.crate    gzip'd tar with Cargo.toml and src/lib.rs (buildable)
    OUT/manifest.json                    what was generated (and the parameters, to reuse it)

The archives and index lines come from the test suite's generator (tests/support/crates.py),
so they are the same kind of crates the end-to-end tests build with the real cargo.
Used by coldfetch.py (a dependency tree of small crates) and storm.py (big crates).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.support is not an installed package
    sys.path.insert(0, str(REPO))

from tests.support.crates import (  # noqa: E402
    BuiltCrate,
    CrateSpec,
    Dep,
    Registry,
    built,
    index_path,
)

_WORD_TEXT = (
    "async serde tokio http tower trace log rand regex bytes json toml proc macro derive util "
    "sys ffi cli term color time uuid hash ring tls net path glob cache pool sync lock alloc arena "
    "map tree graph parse lexer codegen mock fmt error config env args stream buf zip tar image "
    "audio wasm web api client server proto rpc sql queue"
)
_WORDS = tuple(_WORD_TEXT.split())


def write_registry(out: Path, registry: Registry, params: dict[str, object]) -> dict[str, object]:
    """Write `registry` under `out` (replacing index/ and crates/); return the manifest."""
    for sub in ("index", "crates"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps({"dl": "http://127.0.0.1:0/crates", "api": "http://127.0.0.1:0"}) + "\n"
    )
    for name in registry.names():
        body = registry.index_file(name)
        assert body is not None
        path = out / "index" / index_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    crates: list[dict[str, object]] = []
    for crate in registry:
        path = out / "crates" / crate.name / f"{crate.version}.crate"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(crate.data)
        crates.append(
            {"name": crate.name, "version": crate.version, "size": len(crate.data),
             "cksum": crate.cksum, "yanked": crate.spec.yanked}
        )  # fmt: skip
    manifest: dict[str, object] = {"params": params, "crates": crates}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(out: Path, params: dict[str, object]) -> dict[str, object] | None:
    """The manifest of a registry already written under `out` with these `params`, or None."""
    try:
        manifest: dict[str, object] = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("params") == params else None


def crate_names(rng: random.Random, count: int, prefix: str = "") -> list[str]:
    """`count` distinct, lowercase, crates.io-looking names (`-` and `_`, some digits)."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))]
        name = prefix + rng.choice("-_").join(words)
        if rng.random() < 0.3:
            name += str(rng.randint(2, 99))
        # cargo treats `-` and `_` alike, so two names differing only there would collide.
        key = name.replace("_", "-")
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def dependency_tree(count: int, seed: int) -> tuple[Registry, list[str], int]:
    """A registry of `count` small crates that depend on each other (a DAG).

    Crate i depends on 0-4 crates published before it (the first quarter are leaves), all
    with `"1"` requirements; each crate has 1-5 versions 1.0.0, 1.1.0, ... so the newest
    one is chosen. Sizes are log-normal around 25 KB with a tail to 2 MB. Returns the
    registry, the crate names and the depth of the tree (levels of dependencies).
    """
    rng = random.Random(seed)
    names = crate_names(rng, count, prefix="gcb-")
    depth: dict[str, int] = {}
    registry = Registry()
    for i, name in enumerate(names):
        k = 0 if i < max(1, count // 4) else rng.choice([1, 1, 2, 2, 3, 4])
        deps = sorted(rng.sample(names[:i], min(k, i)))
        depth[name] = 1 + max((depth[d] for d in deps), default=0)
        size = min(2_000_000, int(rng.lognormvariate(math.log(25_000), 1.2)))
        for minor in range(rng.choice([1, 1, 2, 3, 5])):
            spec = CrateSpec(
                name,
                f"1.{minor}.0",
                deps=tuple(Dep(d, "1") for d in deps),
                extra_bytes=size,
            )
            registry.add(spec)
    return registry, names, max(depth.values(), default=0)


def big_crates(count: int, size: int, seed: int) -> tuple[Registry, list[BuiltCrate]]:
    """`count` crates of about `size` bytes each (incompressible data.bin), one version each."""
    rng = random.Random(seed)
    registry = Registry()
    found = [
        registry.add_built(built(CrateSpec(name, "1.0.0", extra_bytes=size)))
        for name in crate_names(rng, count, prefix="big-")
    ]
    return registry, found
