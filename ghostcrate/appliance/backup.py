"""`ghostcrate backup`: a consistent online snapshot of what cannot be fetched again.

What a backup holds, in a gzip tar written to a temporary name and renamed:

- `registry.db`: the registry database, copied through SQLite's backup API in
  one step, so it is the state of one moment (a read transaction: in WAL mode
  publishing goes on meanwhile). Every publish answered before the backup
  began is in it.
- `private/crates/`: the `.crate` file of every version that copy knows. A
  file is written before its version is committed and never removed while
  its version exists, so each one is there.
- `keys/` (signing keys) and `config/` (the configuration file), which hold
  secrets: the backup file is created with mode 0600.
- `cache/` only with `--with-cache`: mirrored crates can be fetched again.
- `MANIFEST.json`, last: the format, what the backup holds, and the sha256 of
  every file, which `backup --verify` and `restore` check.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ghostcrate import __version__
from ghostcrate.config import Settings
from ghostcrate.private.registry import private_dir, registry_database

FORMAT = "ghostcrate-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
DATABASE = "registry.db"
CRATES = "private/crates"
KEYS = "keys"
CONFIG = "config"
CACHE = "cache"
#: File names `--output DIRECTORY` gives backups, and `--keep` prunes.
NAME_PREFIX, NAME_SUFFIX = "ghostcrate-backup-", ".tar.gz"
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup could not be made, or a file is not a usable backup; the text says why."""


@dataclass
class Manifest:
    created_at: str
    schema: int
    crates: int
    versions: int
    with_cache: bool
    ghostcrate: str = __version__
    #: Archive path -> {"sha256", "size"}.
    files: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__}
        return json.dumps(document, indent=2, sort_keys=True).encode()


def backup_name(now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{NAME_PREFIX}{stamp}{NAME_SUFFIX}"


def create_backup(
    settings: Settings, output: Path, config_file: Path | None, *, with_cache: bool
) -> tuple[Path, Manifest]:
    """Write a backup to `output` (a file, or a directory to name one in); where, and what."""
    if output.is_dir():
        output = output / backup_name(time.time())
    database = registry_database(settings)
    if not database.is_file():
        raise BackupError(f"there is no registry database at {database}: nothing to back up")
    with tempfile.TemporaryDirectory(prefix="ghostcrate-backup-") as scratch:
        snapshot = Path(scratch) / DATABASE
        schema, cksums, crates = _snapshot(database, snapshot)
        manifest = Manifest(
            created_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            schema=schema,
            crates=crates,
            versions=len(cksums),
            with_cache=with_cache,
        )
        partial = output.with_name(f".{output.name}.partial")
        try:
            with _Writer.create(partial, manifest) as writer:
                writer.add(snapshot, DATABASE)
                blobs = private_dir(settings) / "crates"
                for cksum in sorted(cksums):
                    writer.add_crate(blobs / cksum[:2] / f"{cksum}.crate", cksum)
                writer.add_tree(settings.data_dir / KEYS, KEYS)
                if config_file is not None:
                    writer.add(config_file, f"{CONFIG}/{config_file.name}")
                if with_cache:
                    writer.add_tree(settings.cache_dir, CACHE)
            partial.replace(output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return output, manifest


def prune(directory: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` newest backups named by `backup_name` in `directory`."""
    backups = sorted(directory.glob(f"{NAME_PREFIX}*{NAME_SUFFIX}"))
    removed = backups[:-keep] if keep > 0 else backups
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _snapshot(database: Path, copy: Path) -> tuple[int, set[str], int]:
    """Copy `database` at one moment to `copy`: its schema version, crate checksums, crates."""
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(copy)
        try:
            source.backup(target)  # all pages in one step: one consistent moment
            schema = int(target.execute("PRAGMA user_version").fetchone()[0])
            cksums = {row[0] for row in target.execute("SELECT cksum FROM versions")}
            crates = int(target.execute("SELECT count(*) FROM crates").fetchone()[0])
        finally:
            target.close()
    finally:
        source.close()
    return schema, cksums, crates


class _Writer:
    """Adds files to the archive, recording each one's sha256 and size in the manifest."""

    def __init__(self, archive: tarfile.TarFile, manifest: Manifest) -> None:
        self._archive = archive
        self._manifest = manifest

    @classmethod
    @contextmanager
    def create(cls, path: Path, manifest: Manifest) -> Iterator[_Writer]:
        """A new archive at `path` (mode 0600); the manifest is added last, then it is synced."""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with (
            os.fdopen(descriptor, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as archive,
        ):
            writer = cls(archive, manifest)
            yield writer
            writer.add_bytes(manifest.to_json(), MANIFEST)
            archive.close()
            raw.flush()
            os.fsync(raw.fileno())

    def add_crate(self, path: Path, cksum: str) -> None:
        if not path.is_file():
            raise BackupError(f"the crate file of a published version is missing: {path}")
        self.add(path, f"{CRATES}/{cksum[:2]}/{cksum}.crate")

    def add(self, path: Path, name: str) -> None:
        info = self._archive.gettarinfo(str(path), arcname=name)
        with path.open("rb") as handle:
            hashing = _Hashing(handle)
            self._archive.addfile(info, hashing)
        self._manifest.files[name] = {"sha256": hashing.digest.hexdigest(), "size": info.size}

    def add_tree(self, root: Path, name: str) -> None:
        for path in _files(root):
            if path.name.endswith(".partial"):
                continue  # a write in progress
            try:
                self.add(path, f"{name}/{path.relative_to(root).as_posix()}")
            except FileNotFoundError:
                continue  # removed since the walk (an evicted cache file)

    def add_bytes(self, data: bytes, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o600
        self._archive.addfile(info, io.BytesIO(data))


class _Hashing:
    """A file object that hashes what is read from it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                yield path
