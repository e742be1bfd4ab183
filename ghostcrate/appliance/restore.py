"""`ghostcrate backup --verify` and `ghostcrate restore`: check a backup, and bring it back.

Verifying reads the whole file: every member is a regular file under a known
top-level name, its sha256 and size match the manifest and nothing is missing
or extra, the database copy passes SQLite's `integrity_check`, and every
version it records has its `.crate` file, whose sha256 is the version's
checksum. Restoring verifies first, then writes into a `data_dir` that must be
empty (or not exist yet): it never mixes a backup with live data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tarfile
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostcrate.appliance.backup import (
    CACHE,
    CONFIG,
    CRATES,
    DATABASE,
    FORMAT,
    FORMAT_VERSION,
    KEYS,
    MANIFEST,
    BackupError,
)
from ghostcrate.config import Settings
from ghostcrate.private.registry import private_dir, registry_database
from ghostcrate.private.schema import MIGRATIONS

_TOP = {DATABASE, MANIFEST}
_TREES = (CRATES, KEYS, CONFIG, CACHE)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Verified:
    manifest: dict[str, Any]
    files: int
    bytes: int


def verify_backup(path: Path) -> Verified:
    """Check the backup at `path` without restoring it; `BackupError` says what is wrong."""
    with tempfile.TemporaryDirectory(prefix="ghostcrate-verify-") as scratch:
        return _verify(path, Path(scratch) / DATABASE)


def restore_backup(path: Path, settings: Settings) -> Verified:
    """Verify the backup at `path`, then restore it into `settings.data_dir` (must be empty)."""
    data_dir = settings.data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(
            f"data_dir {data_dir} is not empty: restore only into an empty or new data_dir "
            "(stop the server, move the old one aside, and run restore again)"
        )
    verified = verify_backup(path)
    cache_dir = settings.cache_dir
    if verified.manifest.get("with_cache") and cache_dir.exists() and any(cache_dir.iterdir()):
        raise BackupError(
            f"[cache] dir {cache_dir} is not empty, and the backup holds a cache: empty it first"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            name = member.name
            if name == MANIFEST:
                continue
            if name == DATABASE:
                target = registry_database(settings)
            elif name.startswith(f"{CRATES}/"):
                target = private_dir(settings) / "crates" / name.removeprefix(f"{CRATES}/")
            elif name.startswith(f"{CONFIG}/"):
                target = data_dir / "restored-config" / name.removeprefix(f"{CONFIG}/")
            elif name.startswith(f"{CACHE}/"):
                target = settings.cache_dir / name.removeprefix(f"{CACHE}/")
            else:  # keys/ and cache/ go where they were
                target = data_dir / name
            # The database holds password hashes and token digests: owner-only too.
            secret = name == DATABASE or name.startswith((f"{KEYS}/", f"{CONFIG}/"))
            _write(archive, member, target, secret=secret)
    _sync_tree(data_dir)
    return verified


def _verify(path: Path, database: Path) -> Verified:
    hashes: dict[str, tuple[str, int]] = {}
    crates: dict[str, str] = {}  # cksum from the file name -> the file's sha256
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                _check_member(member)
                handle = archive.extractfile(member)
                assert handle is not None  # a regular file (checked above)
                if member.name == MANIFEST:
                    manifest = _manifest(handle.read(1 << 24))
                    continue
                digest = hashlib.sha256()
                copying = database.open("wb") if member.name == DATABASE else nullcontext()
                with handle, copying as copy:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        if copy is not None:
                            copy.write(chunk)
                hashes[member.name] = (digest.hexdigest(), member.size)
                if member.name.startswith(f"{CRATES}/"):
                    crates[Path(member.name).name.removesuffix(".crate")] = digest.hexdigest()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BackupError(f"{path} is not a readable GhostCrate backup: {error}") from None
    if manifest is None:
        raise BackupError(f"{path} has no {MANIFEST}: not a complete GhostCrate backup")
    _compare(manifest, hashes)
    if DATABASE not in hashes:
        raise BackupError(f"{path} holds no registry database")
    _check_database(database, crates)
    return Verified(manifest, len(hashes), sum(size for _, size in hashes.values()))


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = name.split("/")
    if not member.isfile() or name.startswith("/") or ".." in parts or "" in parts:
        raise BackupError(f"unexpected member {name!r}: a backup holds only plain files")
    if name not in _TOP and not name.startswith(tuple(f"{tree}/" for tree in _TREES)):
        raise BackupError(f"unexpected member {name!r} in the backup")


def _manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise BackupError(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{MANIFEST} is not a GhostCrate backup's")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format {manifest.get('format_version')} is not one this GhostCrate reads "
            f"({FORMAT_VERSION})"
        )
    if int(manifest.get("schema", 0)) > len(MIGRATIONS):
        raise BackupError(
            f"the backup's registry database has schema {manifest['schema']}, newer than this "
            f"GhostCrate's ({len(MIGRATIONS)}): restore it with the version that made it"
        )
    return manifest


def _compare(manifest: dict[str, Any], hashes: dict[str, tuple[str, int]]) -> None:
    listed: dict[str, Any] = manifest.get("files", {})
    missing = sorted(set(listed) - set(hashes))
    extra = sorted(set(hashes) - set(listed))
    if missing or extra:
        raise BackupError(
            f"the backup does not hold what its manifest lists (missing: {missing[:5]}, "
            f"not listed: {extra[:5]})"
        )
    for name, (digest, size) in hashes.items():
        if listed[name].get("sha256") != digest or listed[name].get("size") != size:
            raise BackupError(f"{name} in the backup does not match its manifest: it is damaged")


def _check_database(database: Path, crates: dict[str, str]) -> None:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        result = connection.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise BackupError(f"the backup's registry database is damaged: {result}")
        rows = connection.execute(
            "SELECT c.name, v.num, v.cksum FROM versions v JOIN crates c ON c.id = v.crate_id"
        ).fetchall()
    except sqlite3.DatabaseError as error:
        raise BackupError(f"the backup's registry database cannot be read: {error}") from None
    finally:
        connection.close()
    for name, version, cksum in rows:
        if crates.get(cksum) != cksum:
            raise BackupError(
                f"{name} {version}: its .crate file is missing from the backup or damaged"
            )


def _write(
    archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path, *, secret: bool
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if secret else 0o777)
    handle = archive.extractfile(member)
    assert handle is not None
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with handle, os.fdopen(descriptor, "wb") as out:
        while chunk := handle.read(_CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.utime(target, (member.mtime, member.mtime))


def _sync_tree(root: Path) -> None:
    """Flush every directory below `root`, so the restored names survive a crash."""
    for directory, _, _ in os.walk(root):
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
