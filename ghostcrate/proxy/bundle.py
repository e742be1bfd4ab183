"""Bundles: the mirror's cache in one file, to carry across an air gap.

A bundle is a tar archive. Its first member, `manifest.json`, lists every
file with its cache key, size and sha256; the files follow as `files/<key>`.
Index files travel in their stored form (body and validators). Files below
`private/` are carried for the private registry: the bundle checks them
against the manifest like any other and hands them over staged, without
reading them (format version 2; a bundle without them stays version 1, which
older GhostCrates import).

Import is all or nothing: every file is copied into a staging directory
beside the cache and checked against the manifest, and every crate against
the sha256 of its index entry, before the first file becomes visible
(`stage_bundle`; its caller checks the carried files too before it calls
`Staged.publish`). A bundle that fails any check is refused whole. Importing
twice adds nothing.

A bundle extracted and tarred again is accepted if every file still matches:
the manifest is read before any file wherever it is, `./` is ignored, and so
are directories (no member is ever extracted as such: staged files are named
by the manifest's keys). Links, devices, paths outside the bundle, files the
manifest does not list and files that appear twice are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ghostcrate import __version__
from ghostcrate.cache import TieredCache
from ghostcrate.cargo.names import CrateName, index_path
from ghostcrate.proxy.indexfile import IndexFile
from ghostcrate.proxy.keys import crate_key, index_key, is_index_key, parse_crate_key
from ghostcrate.proxy.warm import Locked, read_lockfile

FORMAT = "ghostcrate-bundle"
#: Version 1: mirror files only; 2: files below `private/` too.
FORMAT_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
MEMBER_PREFIX = "files/"
CHUNK = 1024 * 1024
ABANDONED_STAGING_SECONDS = 3600
#: A carried file's key: below `private/`, each part starting with a letter or digit.
_CARRIED_KEY = re.compile(r"private(?:/[A-Za-z0-9][A-Za-z0-9_.+-]*)+")


class BundleError(Exception):
    """The bundle cannot be written or is refused; the message says why."""


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Carried:
    """A file the bundle carries for the private registry: its key (below `private/`),
    and its bytes or the file that holds them."""

    key: str
    source: Path | bytes


def is_carried_key(key: str) -> bool:
    return _CARRIED_KEY.fullmatch(key) is not None


@dataclass
class ExportReport:
    files: int = 0
    bytes: int = 0
    skipped_unchanged: int = 0


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    already_present: int = 0
    kept_newer_index: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    """What an export leaves out: what an earlier bundle carried, or older files; and
    whether it is limited to the packages of some lock files (`locked`: their crates.io
    packages; `locked_anywhere`: their packages from any registry, which private crates
    named with `registry = ...` are)."""

    since_label: str | None = None
    since_manifest: dict[str, Entry] | None = None
    since_time: dt.datetime | None = None
    locked: list[Locked] | None = None
    locked_anywhere: list[Locked] | None = None

    @classmethod
    def from_arguments(cls, since: str | None, lockfiles: list[Path]) -> Selection:
        """From `--since BUNDLE_OR_DATE` and `--lockfile` paths (blocking: reads them)."""
        manifest = manifest_of(Path(since)) if since and Path(since).is_file() else None
        time = parse_since(since) if since and manifest is None else None
        if not lockfiles:
            return cls(since, manifest, time)
        locked = [p for path in lockfiles for p in read_lockfile(path)[0]]
        anywhere = [p for path in lockfiles for p in read_lockfile(path, any_registry=True)[0]]
        return cls(since, manifest, time, locked, anywhere)


def manifest_of(path: Path) -> dict[str, Entry]:
    """Key -> entry of a bundle's manifest (for an incremental export)."""
    with _open_bundle(path) as archive:
        return {entry.key: entry for entry in _read_manifest(archive, path)[1]}


def parse_since(text: str) -> dt.datetime:
    try:
        since = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BundleError(
            f"--since {text!r} is neither a bundle file nor a date (2026-11-01 or "
            "2026-11-01T12:00:00+00:00)"
        ) from None
    return since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)


async def export_bundle(
    cache: TieredCache,
    output: Path,
    *,
    since_manifest: dict[str, Entry] | None = None,
    since_time: dt.datetime | None = None,
    locked: Iterable[Locked] | None = None,
    carried: Sequence[Carried] = (),
    upstream: str = "",
    on_checked: Callable[[int, int], None] = lambda done, total: None,
    on_written: Callable[[int, int], None] = lambda done, total: None,
) -> ExportReport:
    """Write the cached files (all, or those of `locked`) not in `since_*`, and the
    `carried` files (all of them: the caller chose them), to `output`.

    Progress is told in files: those hashed for the manifest (`on_checked`), then
    those written after it (`on_written`), which the report counts.
    """
    plan = _Plan(
        root=cache.disk.root,
        keys=await _keys_to_export(cache, locked),
        carried={c.key: c.source for c in carried},
        since_manifest=since_manifest or {},
        since_time=since_time,
        upstream=upstream,
        on_checked=on_checked,
        on_written=on_written,
    )
    return await asyncio.get_running_loop().run_in_executor(None, _write_bundle, plan, output)


@dataclass(frozen=True)
class _Plan:
    root: Path
    keys: list[str]
    carried: dict[str, Path | bytes]
    since_manifest: dict[str, Entry]
    since_time: dt.datetime | None
    upstream: str
    on_checked: Callable[[int, int], None]
    on_written: Callable[[int, int], None]

    def unchanged(self, entry: Entry, modified: dt.datetime) -> bool:
        previous = self.since_manifest.get(entry.key)
        if previous is not None:
            return previous.sha256 == entry.sha256
        return self.since_time is not None and modified < self.since_time

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        source = self.carried.get(key, self.root / key)
        with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as handle:
            yield handle


async def _keys_to_export(cache: TieredCache, locked: Iterable[Locked] | None) -> list[str]:
    present = [key for key, _ in await cache.disk.files()]
    if locked is None:
        return [key for key in present if is_index_key(key) or parse_crate_key(key)]
    wanted: set[str] = set()
    for package in locked:
        name = CrateName(package.name)
        wanted |= {index_key(index_path(name)), crate_key(name, package.version)}
    missing = sorted(k for k in wanted - set(present) if not k.startswith("index/"))
    if missing:
        raise BundleError(
            f"{len(missing)} locked crates are not cached, e.g. {missing[0]}; "
            "run `ghostcrate warm` with the same lock files first"
        )
    return sorted(wanted & set(present))


def _write_bundle(plan: _Plan, output: Path) -> ExportReport:
    report = ExportReport()
    entries: list[Entry] = []
    total = len(plan.keys) + len(plan.carried)
    for done, key in enumerate(plan.keys, start=1):
        path = plan.root / key
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile: not exported
            modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            entry = Entry(key, path.stat().st_size, _sha256(path))
            if plan.unchanged(entry, modified):
                report.skipped_unchanged += 1
            else:
                entries.append(entry)
        plan.on_checked(done, total)
    for done, key in enumerate(plan.carried, start=len(plan.keys) + 1):
        with plan.open(key) as handle:
            digest, size = _copy_hashing(handle, None)
        entries.append(Entry(key, size, digest))
        plan.on_checked(done, total)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSIONS[1] if plan.carried else FORMAT_VERSIONS[0],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "generator": f"ghostcrate {__version__}",
        "upstream": plan.upstream,
        "files": [{"key": e.key, "size": e.size, "sha256": e.sha256} for e in entries],
    }
    temporary = output.with_name(f".{output.name}.{uuid.uuid4().hex}.partial")
    try:
        with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as archive:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            for done, entry in enumerate(entries, start=1):
                with plan.open(entry.key) as handle:
                    info = tarfile.TarInfo(MEMBER_PREFIX + entry.key)
                    info.size = entry.size
                    archive.addfile(info, handle)
                report.files += 1
                report.bytes += entry.size
                plan.on_written(done, len(entries))
        temporary.replace(output)  # a bundle is complete, or not there
    finally:
        temporary.unlink(missing_ok=True)
    if not entries:
        plan.on_written(0, 0)
    return report


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextlib.contextmanager
def _open_bundle(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(path, "r:") as archive:
            yield archive
    except (OSError, tarfile.TarError) as error:
        raise BundleError(f"{path}: not a readable bundle ({error})") from None


def _read_manifest(archive: tarfile.TarFile, path: Path) -> tuple[tarfile.TarInfo, list[Entry]]:
    """The manifest's member (first in an exported bundle: found without reading
    further) and its entries."""
    member = next((m for m in archive if _inner_path(m.name) == MANIFEST), None)
    if member is None:
        raise BundleError(f"{path}: not a GhostCrate bundle (no {MANIFEST})")
    if not member.isfile():
        raise BundleError(f"{path}: its {MANIFEST} is {_kind(member)}, not a file")
    handle = archive.extractfile(member)
    assert handle is not None  # a regular file
    try:
        manifest = json.loads(handle.read())
        if manifest.get("format") != FORMAT or manifest.get("version") not in FORMAT_VERSIONS:
            raise BundleError(
                f"{path}: unsupported bundle format {manifest.get('format')!r} version "
                f"{manifest.get('version')!r} (this GhostCrate reads {FORMAT!r} versions "
                f"{', '.join(map(str, FORMAT_VERSIONS))})"
            )
        entries = [
            Entry(str(f["key"]), int(f["size"]), str(f["sha256"])) for f in manifest["files"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleError(f"{path}: its manifest is damaged ({error})") from None
    for entry in entries:
        key = entry.key
        if not (is_index_key(key) or parse_crate_key(key) or is_carried_key(key)):
            raise BundleError(f"{path}: the manifest names {key!r}, not a mirror file")
    return member, entries


def _inner_path(name: str) -> str | None:
    """A member's path in the bundle, `./` and trailing slashes left out; None if it
    leaves the bundle (absolute, or with a `..`)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return None if name.startswith("/") or ".." in parts else "/".join(parts)


_NOT_FILES = {
    tarfile.DIRTYPE: "a directory",
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}


def _kind(member: tarfile.TarInfo) -> str:
    return _NOT_FILES.get(member.type, f"of tar type {member.type!r}")


@dataclass(frozen=True)
class Staged:
    """A bundle checked whole and copied into a staging directory; nothing is visible yet."""

    cache: TieredCache
    entries: list[Entry]
    directory: Path

    @property
    def carried(self) -> dict[str, Path]:
        """Key -> staged copy of each file carried for the private registry."""
        return {e.key: self.directory / e.key for e in self.entries if is_carried_key(e.key)}

    async def publish(self) -> ImportReport:
        """Add the mirror files the cache lacks (the carried ones are the caller's)."""
        mirrored = [e for e in self.entries if not is_carried_key(e.key)]
        return await _publish(self.cache, mirrored, self.directory)


@contextlib.asynccontextmanager
async def stage_bundle(
    cache: TieredCache,
    bundle: Path,
    staging_root: Path,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> AsyncIterator[Staged]:
    """Verify the whole bundle into a staging directory, removed at the end. Raises
    `BundleError`."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _remove_abandoned_staging, staging_root)
    staging = staging_root / uuid.uuid4().hex
    try:
        entries = await loop.run_in_executor(None, _stage, bundle, staging, on_progress)
        await loop.run_in_executor(None, _check_crates, entries, staging, cache.disk.root)
        yield Staged(cache, entries, staging)
    finally:
        await loop.run_in_executor(None, shutil.rmtree, staging, True)


def _remove_abandoned_staging(staging_root: Path) -> None:
    """Staging directories of imports that crashed (an hour old: no import takes that long)."""
    if not staging_root.is_dir():
        return
    cutoff = time.time() - ABANDONED_STAGING_SECONDS
    for directory in staging_root.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if directory.stat().st_mtime < cutoff:
                shutil.rmtree(directory, ignore_errors=True)


def _stage(bundle: Path, staging: Path, on_progress: Callable[[int, int], None]) -> list[Entry]:
    """Extract every file into `staging`, checking size and sha256 against the manifest."""
    with _open_bundle(bundle) as archive:
        manifest, entries = _read_manifest(archive, bundle)
        expected = {MEMBER_PREFIX + e.key: e for e in entries}
        seen: set[str] = set()
        for member in archive:
            name = _inner_path(member.name)
            if name is None:
                raise BundleError(
                    f"{bundle}: {member.name!r} points outside the bundle; nothing was imported"
                )
            if member is manifest or member.isdir():
                continue
            if not member.isfile():
                raise BundleError(
                    f"{bundle}: {member.name!r} is {_kind(member)}, not a file; "
                    "nothing was imported"
                )
            if name in seen or name == MANIFEST:
                raise BundleError(f"{bundle}: {member.name!r} appears twice; nothing was imported")
            entry = expected.get(name)
            if entry is None:
                raise BundleError(
                    f"{bundle}: {member.name!r} is not in the manifest; nothing was imported"
                )
            seen.add(name)
            source = archive.extractfile(member)
            assert source is not None
            target = staging / entry.key
            target.parent.mkdir(parents=True, exist_ok=True)
            digest, size = _copy_hashing(source, target)
            if size != entry.size or digest != entry.sha256:
                raise BundleError(
                    f"{bundle}: {entry.key} is damaged (sha256 {digest}, the manifest says "
                    f"{entry.sha256}); nothing was imported"
                )
            on_progress(len(seen), len(entries))
        if len(seen) != len(entries):
            missing = sorted(set(expected) - seen)[0].removeprefix(MEMBER_PREFIX)
            raise BundleError(f"{bundle}: {missing} is listed but missing; nothing was imported")
    return entries


def _copy_hashing(source: IO[bytes], target: Path | None) -> tuple[str, int]:
    """sha256 and size of `source`, copied to `target` (durably) if one is given."""
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") if target is not None else contextlib.nullcontext() as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())  # durable before it is renamed into the cache
    return digest.hexdigest(), size


def _check_crates(entries: list[Entry], staging: Path, cache_root: Path) -> None:
    """Every crate must match the sha256 of its index entry (from the bundle or the cache)."""
    for entry in entries:
        parsed = parse_crate_key(entry.key)
        if parsed is None:
            continue
        name, version = parsed
        key = index_key(index_path(name))
        candidates = [staging / key, cache_root / key]
        recorded = next((c for c in (_cksum(p, version) for p in candidates) if c), None)
        if recorded is None:
            raise BundleError(
                f"{entry.key} has no index entry in the bundle or the cache; nothing was imported"
            )
        if recorded != entry.sha256:
            raise BundleError(
                f"{entry.key} differs from its index entry (sha256 {entry.sha256}, the index "
                f"says {recorded}); nothing was imported"
            )


def _cksum(index_file: Path, version: str) -> str | None:
    try:
        stored = IndexFile.decode(index_file.read_bytes(), 0.0)
    except (OSError, ValueError, KeyError):
        return None
    entry: dict[str, Any] | None = stored.entry(version)
    return str(entry["cksum"]) if entry and "cksum" in entry else None


async def _publish(cache: TieredCache, entries: list[Entry], staging: Path) -> ImportReport:
    report = ImportReport()
    present = dict(await cache.disk.files())
    for entry in entries:
        source = staging / entry.key
        if entry.key in present and await _same(cache, entry):
            report.already_present += 1
            continue
        if (
            entry.key.startswith("index/")
            and entry.key in present
            and not await _bundle_index_is_newer(cache, entry.key, source)
        ):
            report.kept_newer_index.append(entry.key)
            continue
        async with cache.hold(entry.key):
            await cache.disk.adopt(entry.key, source, mtime=0.0)
        report.added.append(entry.key)
    return report


async def _same(cache: TieredCache, entry: Entry) -> bool:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _sha256, cache.disk.path(entry.key)) == entry.sha256
    except FileNotFoundError:
        return False


async def _bundle_index_is_newer(cache: TieredCache, key: str, source: Path) -> bool:
    """Index files only grow (yanks aside): the bundle's wins if it has every cached version."""
    found = await cache.disk.read(key)
    if found is None:
        return True
    try:
        cached = IndexFile.decode(found[0], found[1]).versions()
        data = await asyncio.get_running_loop().run_in_executor(None, source.read_bytes)
        offered = IndexFile.decode(data, 0.0).versions()
    except (ValueError, KeyError):
        return True
    return offered >= cached
