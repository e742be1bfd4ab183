"""The local disk tier: files below one root, every write atomic.

A write goes to a temporary file in the destination's directory, is flushed
to disk, and is renamed into place only when the caller commits it; a reader
never sees half a file, and a crash leaves only temporary files, which
`remove_leftovers` deletes at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiofiles
import aiofiles.os
from aiofiles.threadpool.binary import AsyncBufferedIOBase

TEMP_PREFIX = ".tmp-"
_T = TypeVar("_T")


class PendingFile:
    """A temporary file that becomes `final` on `commit()`, or vanishes.

    It hashes what is written, so a caller can check the sha256 before committing.
    """

    def __init__(self, handle: AsyncBufferedIOBase, temp: Path, final: Path) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.temp = temp
        self.final = final
        self.size = 0
        self.committed = False

    async def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        await self._handle.write(chunk)
        self.size += len(chunk)

    def sha256(self) -> str:
        """Hex sha256 of everything written so far."""
        return self._digest.hexdigest()

    async def commit(self) -> None:
        """Flush to disk and rename into place (atomic on POSIX)."""
        await self._handle.flush()
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, self._handle.fileno())
        await self._handle.close()
        await aiofiles.os.replace(self.temp, self.final)
        self.committed = True


class DiskStore:
    """Files addressed by a relative key such as `index/se/rd/serde`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """The file for a key. Keys are built by the program from validated parts."""
        if key.startswith("/") or ".." in key.split("/") or TEMP_PREFIX in key:
            raise ValueError(f"unsafe cache key {key!r}")
        return self.root / key

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    async def read(self, key: str) -> tuple[bytes, float] | None:
        """The file's bytes and modification time, or None if absent."""
        return await self._run(_read_with_mtime, self.path(key))

    async def exists(self, key: str) -> bool:
        return await aiofiles.os.path.isfile(self.path(key))

    async def touch(self, key: str) -> None:
        """Mark a file as checked now (its mtime is when it was last known fresh)."""
        with contextlib.suppress(FileNotFoundError):
            await self._run(os.utime, self.path(key))

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self.path(key))

    @asynccontextmanager
    async def pending(self, key: str) -> AsyncIterator[PendingFile]:
        """A temporary file for `key`; unless committed, it is removed on exit."""
        final = self.path(key)
        await aiofiles.os.makedirs(final.parent, exist_ok=True)
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}.{uuid.uuid4().hex}")
        handle = await aiofiles.open(temp, "wb")
        pending = PendingFile(handle, temp, final)
        try:
            yield pending
        finally:
            if not pending.committed:
                await handle.close()
                with contextlib.suppress(FileNotFoundError):
                    await aiofiles.os.remove(temp)

    async def write(self, key: str, data: bytes) -> None:
        async with self.pending(key) as pending:
            await pending.write(data)
            await pending.commit()

    def remove_leftovers(self) -> int:
        """Delete temporary files a crash left behind; call before serving."""
        removed = 0
        for temp in self._temporaries():
            temp.unlink(missing_ok=True)
            removed += 1
        return removed

    def _temporaries(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for directory, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    yield Path(directory, name)


def _read_with_mtime(path: Path) -> tuple[bytes, float] | None:
    try:
        with path.open("rb") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            return handle.read(), mtime
    except FileNotFoundError:
        return None
