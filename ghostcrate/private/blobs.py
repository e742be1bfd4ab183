"""The durable store of private `.crate` files: data, not cache.

Files are named by their sha256 (`private/crates/ab/abcd....crate` below
`data_dir`), outside the evictable disk tier, so no eviction, `gc` or `verify`
of the mirror's cache ever sees them. A file is written to a temporary name,
flushed to disk, and renamed; its directory is flushed too, so once `put`
returns the file survives a crash. With S3, the same file is stored in the
bucket below `private/crates/` first, so another node (or this one rebuilt)
has it, and a bucket that refuses it leaves no local file behind.

A file whose version never reached the database (a crash between the two) is
an orphan: `orphans` finds them so that start-up removes them. An orphan in the
bucket is left there: other nodes may know its version (each node has its own
database until the registry moves to PostgreSQL), and being named by its
checksum it is harmless, overwritten by the same bytes if they are published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Protocol

from ghostcrate.private.errors import RegistryError

log = logging.getLogger(__name__)

#: Key prefix of private crates in the S3 bucket (below the `[s3] prefix`).
S3_PREFIX = "private/crates/"
_SUFFIX = ".crate"
_TEMPORARY = ".partial"


class Bucket(Protocol):
    """What the store needs of the S3 tier."""

    async def put_bytes(self, key: str, data: bytes) -> bool: ...

    async def get(self, key: str) -> bytes | None: ...


class BlobStore:
    """Private `.crate` files by checksum, on local disk and, with `[s3]`, in the bucket."""

    def __init__(self, root: Path, bucket: Bucket | None = None) -> None:
        self.root = root
        self._bucket = bucket

    def path(self, cksum: str) -> Path:
        return self.root / cksum[:2] / f"{cksum}{_SUFFIX}"

    async def put(self, cksum: str, data: bytes) -> None:
        """Store `data` in the bucket (if any), then durably on disk, under its checksum `cksum`."""
        if self._bucket is not None and not await self._bucket.put_bytes(
            S3_PREFIX + cksum + _SUFFIX, data
        ):
            raise RegistryError(
                "the crate could not be stored in the S3 bucket, so it was not published; "
                "try again (the server log says why S3 failed)",
                status=503,
            )
        await asyncio.get_running_loop().run_in_executor(None, self._write, cksum, data)

    async def discard(self, cksum: str) -> None:
        """Remove the local file of a publish that was refused after it was stored."""
        path = self.path(cksum)
        await asyncio.get_running_loop().run_in_executor(
            None, partial(path.unlink, missing_ok=True)
        )

    async def find(self, cksum: str) -> Path | None:
        """The local file, fetched from the bucket first if only the bucket has it."""
        path = self.path(cksum)
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, path.is_file):
            return path
        if self._bucket is None:
            return None
        data = await self._bucket.get(S3_PREFIX + cksum + _SUFFIX)
        if data is None:
            return None
        if await loop.run_in_executor(None, _sha256, data) != cksum:
            log.error(
                "a private crate in the S3 bucket does not match its checksum",
                extra={"cksum": cksum},
            )
            return None
        await loop.run_in_executor(None, self._write, cksum, data)
        return path

    def _write(self, cksum: str, data: bytes) -> None:
        path = self.path(cksum)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}{_TEMPORARY}")
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def orphans(self, known: set[str], older_than: float = 0.0) -> list[Path]:
        """Files (and leftover temporaries) whose checksum is not in `known`.

        Only those last changed more than `older_than` seconds ago: a publish in
        progress elsewhere has written its file but not yet committed its version.
        """
        found: list[Path] = []
        if not self.root.is_dir():
            return found
        limit = time.time() - older_than
        for path in self.root.glob("*/*"):
            name = path.name
            temporary = name.endswith(_TEMPORARY)
            if not temporary and name.removesuffix(_SUFFIX) in known:
                continue
            try:
                if path.stat().st_mtime <= limit:
                    found.append(path)
            except FileNotFoundError:
                continue
        return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
