"""The shared S3 tier: one aioboto3 client for the tier's life, best effort throughout.

Every operation answers "absent" (None / False / nothing) instead of raising when S3
is down, slow or failing. The first failure marks the tier degraded (one warning,
`tier_available{tier="s3"}` at 0); for `retry_after` seconds after a failure no
request is sent at all, then one request probes S3 again and a success brings the
tier back. "No such key" is an answer, not a failure.

Errors on the local side (writing into the `PendingFile`, reading the file to
upload) also answer absent, but are not S3's fault: they are logged, and neither
counted against S3 nor degrade the tier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import aiofiles
import aiofiles.os
from botocore.config import Config
from botocore.exceptions import ClientError

from ghostcrate.cache.disk import PendingFile
from ghostcrate.cache.metrics import CacheMetrics
from ghostcrate.config import S3Settings

log = logging.getLogger(__name__)

#: Size of the reads from a downloaded object's body.
CHUNK_SIZE = 64 * 2**10
#: S3's smallest part (all parts but the last) and largest part count.
MIN_PART_SIZE = 5 * 2**20
MAX_PARTS = 10_000
#: Parts are held in memory while sent, so they are not made larger than this.
MAX_PART_SIZE = 64 * 2**20
#: A request carrying a body gets one more second per MiB before the backstop cuts it.
MIN_UPLOAD_RATE = 2**20
#: Error codes that mean "no such object" (HEAD answers carry only the status).
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})

_T = TypeVar("_T")
_Response = dict[str, Any]


class _LocalError(Exception):
    """Wraps an error of a local file, so that it is not taken for an S3 failure."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def _local(step: Awaitable[_T]) -> _T:
    try:
        return await step
    except Exception as error:
        raise _LocalError(error) from error


def _is_not_found(error: BaseException) -> bool:
    if not isinstance(error, ClientError):
        return False
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in _NOT_FOUND


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class S3Tier:
    """A `SharedTier` on one bucket of S3 or any S3-compatible endpoint."""

    name: str = "s3"

    def __init__(
        self, settings: S3Settings, metrics: CacheMetrics, client: Any, stack: AsyncExitStack
    ) -> None:
        """Use `open()` or `create()`; `client` is an entered aioboto3 S3 client."""
        self._settings = settings
        self._metrics = metrics
        self._client = client
        self._stack = stack
        self._prefix = settings.key_prefix
        self._backstop = settings.connect_timeout + settings.read_timeout
        # As boto3's own transfers do: with botocore's default checksums (1.36+), a
        # multipart upload declares CRC32 up front, or AWS refuses the parts' checksums.
        calculation = getattr(client.meta.config, "request_checksum_calculation", None)
        self._checksums = calculation == "when_supported"
        self._available = True
        self._failures = 0  # failures so far; a success only counts if none came after its start
        self._retry_at = 0.0
        self._closed = False
        metrics.tier_available.labels(self.name).set(1)

    # --- lifecycle ----------------------------------------------------------

    @classmethod
    async def create(cls, settings: S3Settings, metrics: CacheMetrics) -> S3Tier:
        """A tier with its client open (no request is sent); `close()` releases it."""
        config = Config(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # One attempt: a failure falls through to the other tiers at once.
            # (`max_attempts` counts retries, `total_max_attempts` counts attempts.)
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            max_pool_connections=settings.max_connections,
        )
        credentials: dict[str, str] = {}
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            credentials = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": settings.secret_access_key.get_secret_value(),
            }
        session = aioboto3.Session()
        async with AsyncExitStack() as stack:
            # The client's connection pool lives until the context is left: keep it entered.
            client = await stack.enter_async_context(
                session.client(
                    "s3",
                    endpoint_url=settings.endpoint_url,
                    region_name=settings.region or "us-east-1",
                    config=config,
                    **credentials,
                )
            )
            return cls(settings, metrics, client, stack.pop_all())

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: S3Settings, metrics: CacheMetrics) -> AsyncIterator[S3Tier]:
        """The tier for the length of a `async with` block."""
        tier = await cls.create(settings, metrics)
        try:
            yield tier
        finally:
            await tier.close()

    async def close(self) -> None:
        """Release the connections; afterwards every operation answers absent."""
        if not self._closed:
            self._closed = True
            await self._stack.aclose()

    @property
    def available(self) -> bool:
        """False while the tier is degraded after a failure."""
        return self._available

    # --- operations ---------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """A small object's bytes, or None if absent or unavailable."""

        async def action() -> bytes | None:
            chunks: list[bytes] = []

            async def collect(chunk: bytes) -> None:
                chunks.append(chunk)

            # Small objects: the backstop bounds the whole transfer, not each read.
            async with asyncio.timeout(self._backstop):
                response = await self._request("get_object", Key=self._key(key))
                await self._stream(response["Body"], collect)
            return b"".join(chunks)

        return await self._run("get", None, action)

    async def download(self, key: str, pending: PendingFile) -> bool:
        """Stream an object into `pending` in chunks; False if absent or unavailable.

        An error writing to `pending` also answers False (logged, not counted against S3).
        """

        async def action() -> bool:
            response = await self._request("get_object", Key=self._key(key))
            await self._stream(response["Body"], lambda chunk: _local(pending.write(chunk)))
            return True

        return await self._run("download", False, action)

    async def put_bytes(self, key: str, data: bytes) -> bool:
        """Store a small object in one PUT; False if unavailable."""

        async def action() -> bool:
            await self._request("put_object", len(data), Key=self._key(key), Body=data)
            return True

        return await self._run("put_bytes", False, action)

    async def put_file(self, key: str, path: Path) -> bool:
        """Store a file: one PUT up to `multipart_threshold`, parts above it.

        A failed multipart upload is aborted, so no parts are left behind. An error
        reading `path` (gone, unreadable) answers False (logged, not counted against S3).
        """

        async def action() -> bool:
            size = await _local(aiofiles.os.path.getsize(path))
            if size > self._settings.multipart_threshold:
                await self._put_parts(self._key(key), path, size)
            else:
                data = await _local(_read_file(path))
                await self._request("put_object", len(data), Key=self._key(key), Body=data)
            return True

        return await self._run("put_file", False, action)

    async def probe(self) -> str | None:
        """Ask S3 for the bucket now, past the tier's back-off: None if it answers, else why."""
        try:
            await self._request("head_bucket")
        except Exception as error:
            return _describe(error)
        return None

    async def contains(self, key: str) -> bool:
        """Whether the object exists; False if unavailable."""

        async def action() -> bool:
            await self._request("head_object", Key=self._key(key))
            return True

        return await self._run("contains", False, action)

    async def delete(self, key: str) -> bool:
        """Remove an object; True if S3 answered (whether or not it existed)."""

        async def action() -> bool:
            await self._request("delete_object", Key=self._key(key))
            return True

        return await self._run("delete", False, action)

    async def iterate(self, prefix: str = "") -> AsyncIterator[tuple[str, int]]:
        """(key, size) of every object below `prefix`, without the settings prefix.

        Stops quietly (after counting the failure) if S3 fails part way.
        """
        epoch = self._admit()
        if epoch is None:
            return
        paginator = self._client.get_paginator("list_objects_v2")
        pages = aiter(paginator.paginate(Bucket=self._settings.bucket, Prefix=self._key(prefix)))
        try:
            while True:
                try:
                    async with asyncio.timeout(self._backstop):
                        page: _Response = await anext(pages)
                except StopAsyncIteration:
                    break
                except Exception as error:
                    self._failed("iterate", error)
                    return
                self._succeeded(epoch)
                for item in page.get("Contents", []):
                    full: str = item["Key"]
                    if full.startswith(self._prefix):
                        yield full[len(self._prefix) :], int(item["Size"])
        finally:
            closing = getattr(pages, "aclose", None)
            if closing is not None:
                await closing()

    # --- health -------------------------------------------------------------

    def _admit(self) -> int | None:
        """The failure count to start an operation with, or None to answer absent now.

        While degraded, one operation per `retry_after` is let through as a probe.
        """
        if self._closed:
            return None
        if not self._available:
            now = time.monotonic()
            if now < self._retry_at:
                return None
            self._retry_at = now + self._settings.retry_after
        return self._failures

    def _succeeded(self, epoch: int) -> None:
        """S3 answered; the tier is back if nothing failed since this operation started."""
        if not self._available and epoch == self._failures:
            self._available = True
            self._metrics.tier_available.labels(self.name).set(1)
            log.info("S3 tier recovered")

    def _failed(self, op: str, error: BaseException) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + self._settings.retry_after
        self._metrics.tier_errors.labels(self.name, op).inc()
        self._metrics.tier_available.labels(self.name).set(0)
        detail = {"op": op, "error": _describe(error)}
        if self._available:
            self._available = False
            log.warning("S3 tier degraded; using the other tiers", extra=detail)
        else:
            log.debug("S3 tier still failing", extra=detail)

    async def _run(self, op: str, absent: _T, action: Callable[[], Awaitable[_T]]) -> _T:
        """`action`'s result, or `absent` when skipped, not found or failed."""
        epoch = self._admit()
        if epoch is None:
            return absent
        try:
            result = await action()
        except _LocalError as local:
            detail = {"op": op, "error": _describe(local.error)}
            if isinstance(local.error, FileNotFoundError):  # e.g. evicted before its upload
                log.debug("S3 tier: the local file is gone", extra=detail)
            else:
                log.warning("S3 tier: local file error", extra=detail)
            return absent
        except Exception as error:
            if not _is_not_found(error):
                self._failed(op, error)
                return absent
            result = absent
        self._succeeded(epoch)
        return result

    # --- requests -----------------------------------------------------------

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def _request(self, method: str, body_size: int = 0, /, **params: Any) -> _Response:
        """One S3 call on the bucket, cut off by the backstop if the timeouts do not."""
        async with asyncio.timeout(self._backstop + body_size / MIN_UPLOAD_RATE):
            call = getattr(self._client, method)
            response: _Response = await call(Bucket=self._settings.bucket, **params)
        return response

    async def _stream(self, body: Any, sink: Callable[[bytes], Awaitable[None]]) -> None:
        """Pass a response body to `sink` in chunks; the connection is released in all cases."""
        async with body:
            while True:
                async with asyncio.timeout(self._backstop):
                    chunk: bytes = await body.read(CHUNK_SIZE)
                if not chunk:
                    return
                await sink(chunk)

    def _part_size(self, size: int) -> int:
        wanted = min(self._settings.multipart_threshold, MAX_PART_SIZE)
        return max(MIN_PART_SIZE, wanted, -(-size // MAX_PARTS))

    async def _put_parts(self, key: str, path: Path, size: int) -> None:
        """A multipart upload of `path`, aborted on any failure (cancellation included)."""
        checksum = {"ChecksumAlgorithm": "CRC32"} if self._checksums else {}
        created = await self._request("create_multipart_upload", Key=key, **checksum)
        upload_id: str = created["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            part_size = self._part_size(size)
            file = await _local(aiofiles.open(path, "rb"))
            try:
                while chunk := await _local(file.read(part_size)):
                    number = len(parts) + 1
                    uploaded = await self._request(
                        "upload_part",
                        len(chunk),
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        **checksum,
                    )
                    part = {"PartNumber": number, "ETag": uploaded["ETag"]}
                    if "ChecksumCRC32" in uploaded:
                        part["ChecksumCRC32"] = uploaded["ChecksumCRC32"]
                    parts.append(part)
            finally:
                await file.close()
            await self._request(
                "complete_multipart_upload",
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await self._abort(key, upload_id)
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload so its parts are deleted; sent even while degraded."""
        try:
            await self._request("abort_multipart_upload", Key=key, UploadId=upload_id)
        except Exception as error:
            log.warning(
                "S3 multipart upload not aborted; its parts stay until a lifecycle rule"
                " removes them",
                extra={"key": key, "upload_id": upload_id, "error": _describe(error)},
            )


async def _read_file(path: Path) -> bytes:
    async with aiofiles.open(path, "rb") as file:
        return await file.read()
