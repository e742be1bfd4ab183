"""`ghostcrate warm`: fill the cache ahead of need, from Cargo.lock files and crate specs.

A locked package is fetched as it is. A spec (`name` or `name@req`) is
resolved to its newest non-yanked matching version, and then so is every
dependency cargo could need from it: normal and build dependencies, of every
target, optional ones included (dev-dependencies are a crate's own business).
Everything goes through the mirror's verified fill, with bounded
concurrency; what is already cached is only counted, so an interrupted warm
resumes by running it again.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostcrate.cargo.names import CrateName, InvalidName
from ghostcrate.cargo.semver import InvalidVersion, Version, VersionReq
from ghostcrate.proxy.errors import ProxyError
from ghostcrate.proxy.setup import Mirror

log = logging.getLogger(__name__)

#: How crates.io appears as a `source` in Cargo.lock (git index, or sparse).
CRATES_IO_SOURCES = (
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
)


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    checksum: str | None

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class Spec:
    name: str
    req: str

    def __str__(self) -> str:
        return f"{self.name}@{self.req}"


class BadInput(ValueError):
    """A lock file or spec that cannot be read; the message says which and why."""


def parse_spec(text: str) -> Spec:
    """`name` or `name@req` (`serde`, `serde@1`, `tokio@>=1.30, <2`)."""
    name, _, req = text.strip().partition("@")
    try:
        CrateName(name)
        VersionReq.parse(req or "*")
    except (InvalidName, InvalidVersion) as error:
        raise BadInput(f"crate spec {text!r}: {error}") from None
    return Spec(name, req.strip() or "*")


def read_spec_file(path: Path) -> list[Spec]:
    """One spec a line; blank lines and `#` comments are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror}") from None
    return [parse_spec(line) for line in lines if line.split("#")[0].strip()]


def warm_inputs(
    paths: Iterable[Path], spec_texts: Iterable[str], spec_file: Path | None
) -> tuple[list[Path], list[Spec]]:
    """The lock files and specs to warm, from the command's arguments."""
    specs = [parse_spec(text) for text in spec_texts]
    if spec_file is not None:
        specs += read_spec_file(spec_file)
    lockfiles = find_lockfiles(paths)
    if not (specs or lockfiles):
        raise BadInput("nothing to warm: give Cargo.lock paths, --crate or --crates-file")
    return lockfiles, specs


def find_lockfiles(paths: Iterable[Path]) -> list[Path]:
    """The given files, and every Cargo.lock below the given directories."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.rglob("Cargo.lock"))
        elif path.is_file():
            found.append(path)
        else:
            raise BadInput(f"{path}: no such file or directory")
    return found


def read_lockfile(path: Path, *, any_registry: bool = False) -> tuple[list[Locked], int]:
    """The crates.io packages of a Cargo.lock (with `any_registry`, those of every
    registry), and how many others (git, path) it has."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: not a readable Cargo.lock ({error})") from None
    locked, others = [], 0
    for package in data.get("package", []):
        if not isinstance(package, dict):
            continue
        source = package.get("source")
        if source in CRATES_IO_SOURCES or (any_registry and _from_a_registry(source)):
            locked.append(Locked(package["name"], package["version"], package.get("checksum")))
        elif source is not None:
            others += 1
    return locked, others


def _from_a_registry(source: object) -> bool:
    return isinstance(source, str) and source.startswith(("registry+", "sparse+"))


@dataclass
class WarmReport:
    fetched: list[str] = field(default_factory=list)
    already_cached: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Names never asked of the upstream (the private registry's): not warmed.
    skipped: set[str] = field(default_factory=set)


class Warmer:
    def __init__(
        self,
        mirror: Mirror,
        concurrency: int,
        on_progress: Callable[[int, int], None],
        never_upstream: Callable[[str], bool] = lambda name: False,
    ) -> None:
        """`never_upstream(name)`: a name the upstream must never be asked about."""
        self._mirror = mirror
        self._never_upstream = never_upstream
        self._limit = asyncio.Semaphore(concurrency)
        self._on_progress = on_progress
        self._report = WarmReport()
        self._seen: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Progress counts what the summary counts: crates (fetched, cached or failed), and
        #: specs that failed; a spec still being resolved counts as one item to come.
        self._crates = self._specs_pending = self._failed_specs = 0

    async def run(self, locked: Iterable[Locked], specs: Iterable[Spec]) -> WarmReport:
        for package in locked:
            self._queue(("crate", package.name.lower(), package.version), self._crate(package))
        for spec in specs:
            self._queue(("spec", spec.name.lower(), spec.req), self._spec(spec))
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        for part in (self._report.fetched, self._report.already_cached):
            part.sort()
        self._report.failed.sort()
        return self._report

    def _queue(self, identity: tuple[str, str, str], work: Coroutine[Any, Any, None]) -> None:
        """Run `work` unless the same item was queued before."""
        if identity in self._seen:
            work.close()
            return
        self._seen.add(identity)
        if self._never_upstream(identity[1]):
            work.close()
            self._report.skipped.add(identity[1])
            return
        if identity[0] == "crate":
            self._crates += 1
        else:
            self._specs_pending += 1
        task = asyncio.ensure_future(self._step(identity[0], work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step(self, kind: str, work: Coroutine[Any, Any, None]) -> None:
        async with self._limit:
            await work
        if kind == "spec":
            self._specs_pending -= 1
        report = self._report
        done = len(report.fetched) + len(report.already_cached) + len(report.failed)
        self._on_progress(done, self._crates + self._specs_pending + self._failed_specs)

    async def _crate(self, package: Locked) -> None:
        try:
            fetched = await self._warm_crate(package)
        except (ProxyError, InvalidName) as error:
            self._report.failed.append((str(package), str(error)))
            return
        (self._report.fetched if fetched else self._report.already_cached).append(str(package))

    async def _warm_crate(self, package: Locked) -> bool:
        """Make sure the crate (and its index file) is cached; True if it was fetched now."""
        name = CrateName(package.name)
        index = await self._mirror.index.get(name)
        entry = index.entry(package.version) if index is not None else None
        if entry is None:
            raise ProxyError(f"no version {package.version} upstream")
        if package.checksum is not None and entry.get("cksum") != package.checksum:
            raise ProxyError(
                f"the lock file's checksum {package.checksum} differs from the index "
                f"entry's {entry.get('cksum')}"
            )
        if await self._mirror.crates.cached(name, package.version) is not None:
            return False
        await self._mirror.crates.fetch(name, package.version)
        return True

    async def _spec(self, spec: Spec) -> None:
        try:
            entry = await self._resolve(spec)
        except (ProxyError, InvalidName, InvalidVersion) as error:
            self._report.failed.append((str(spec), str(error)))
            self._failed_specs += 1
            return
        real_name, version = str(entry["name"]), str(entry["vers"])
        self._queue(
            ("crate", real_name.lower(), version),
            self._crate(Locked(real_name, version, None)),
        )
        for dep in entry.get("deps") or []:
            if dep.get("kind") == "dev" or dep.get("registry"):
                continue  # dev-only, or from another registry than this mirror's
            dep_name = str(dep.get("package") or dep.get("name"))
            dep_req = str(dep.get("req", "*"))
            self._queue(("spec", dep_name.lower(), dep_req), self._spec(Spec(dep_name, dep_req)))

    async def _resolve(self, spec: Spec) -> dict[str, Any]:
        """The index entry of the newest non-yanked version matching the spec."""
        index = await self._mirror.index.get(CrateName(spec.name))
        if index is None:
            raise ProxyError("no such crate upstream")
        req = VersionReq.parse(spec.req)
        candidates = [
            (Version.parse(version), entry)
            for version, entry in index.entries().items()
            if not entry.get("yanked") and req.matches(Version.parse(version))
        ]
        if not candidates:
            raise ProxyError(f"no version matches {spec.req!r} (yanked ones are not chosen)")
        return max(candidates, key=lambda candidate: candidate[0])[1]
