"""The S3 tier against a real S3 over HTTP: moto's server, behind a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry

from ghostcrate.cache.disk import DiskStore
from ghostcrate.cache.metrics import CacheMetrics
from ghostcrate.cache.s3 import CHUNK_SIZE, S3Tier
from ghostcrate.cache.tiers import SharedTier
from tests.support.s3 import (
    RETRY_AFTER,
    MotoServer,
    S3FaultProxy,
    s3_settings,
    unanswered_endpoint,
)

LOGGER = "ghostcrate.cache.s3"
DEGRADED = "S3 tier degraded; using the other tiers"
RECOVERED = "S3 tier recovered"


@dataclass
class Opened:
    """A tier and the metrics it reports to."""

    tier: S3Tier
    registry: CollectorRegistry

    def errors(self, op: str) -> float:
        labels = {"tier": "s3", "op": op}
        value = self.registry.get_sample_value("ghostcrate_cache_tier_errors_total", labels)
        return value or 0.0

    def all_errors(self) -> float:
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == "ghostcrate_cache_tier_errors_total"
        )

    def gauge(self) -> float | None:
        return self.registry.get_sample_value("ghostcrate_cache_tier_available", {"tier": "s3"})


MakeTier = Callable[..., Awaitable[Opened]]


@pytest.fixture
async def make_tier(bucket: str, proxy: S3FaultProxy) -> AsyncIterator[MakeTier]:
    """Open tiers (on `bucket` through `proxy` unless told otherwise); all closed at the end."""
    opened: list[S3Tier] = []

    async def make(endpoint_url: str | None = None, **overrides: Any) -> Opened:
        overrides.setdefault("bucket", bucket)
        settings = s3_settings(endpoint_url=endpoint_url or proxy.endpoint_url, **overrides)
        registry = CollectorRegistry()
        tier = await S3Tier.create(settings, CacheMetrics.create(registry))
        opened.append(tier)
        return Opened(tier, registry)

    yield make
    for tier in opened:
        await tier.close()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.name == LOGGER and r.getMessage() == text)


# --- contract ---------------------------------------------------------------


async def test_put_get_contains_delete(make_tier: MakeTier) -> None:
    s3 = await make_tier()
    tier: SharedTier = s3.tier
    assert tier.name == "s3"
    assert await tier.put_bytes("index/se/rd/serde", b'{"name":"serde"}\n')
    assert await tier.contains("index/se/rd/serde")
    assert await tier.get("index/se/rd/serde") == b'{"name":"serde"}\n'
    assert await tier.put_bytes("index/se/rd/serde", b"replaced\n")
    assert await tier.get("index/se/rd/serde") == b"replaced\n"
    assert await tier.delete("index/se/rd/serde")
    assert not await tier.contains("index/se/rd/serde")
    assert await tier.get("index/se/rd/serde") is None
    assert await tier.delete("index/se/rd/serde")  # S3 answers, whether or not it existed
    assert await tier.put_bytes("index/1/e", b"")
    assert await tier.get("index/1/e") == b""
    # "no such key" is an answer, not a failure
    assert s3.all_errors() == 0
    assert s3.gauge() == 1
    assert s3.tier.available


async def test_download_streams_into_a_pending_file(make_tier: MakeTier, tmp_path: Path) -> None:
    s3 = await make_tier()
    data = os.urandom(1_000_003)
    assert await s3.tier.put_bytes("crates/serde/serde-1.0.0.crate", data)
    store = DiskStore(tmp_path / "disk")
    written: list[int] = []
    async with store.pending("crates/serde/serde-1.0.0.crate") as pending:
        write = pending.write

        async def spy(chunk: bytes) -> None:
            written.append(len(chunk))
            await write(chunk)

        pending.write = spy  # type: ignore[method-assign]
        assert await s3.tier.download("crates/serde/serde-1.0.0.crate", pending)
        assert pending.size == len(data)
        assert pending.sha256() == hashlib.sha256(data).hexdigest()
        await pending.commit()
    assert (tmp_path / "disk" / "crates/serde/serde-1.0.0.crate").read_bytes() == data
    assert len(written) > 1
    assert max(written) <= CHUNK_SIZE  # streamed, never read whole

    async with store.pending("crates/nope/nope-1.0.0.crate") as pending:
        assert not await s3.tier.download("crates/nope/nope-1.0.0.crate", pending)
        assert pending.size == 0
    assert s3.all_errors() == 0


async def test_iterate_applies_and_strips_the_settings_prefix(
    make_tier: MakeTier, moto: MotoServer, bucket: str
) -> None:
    prefixed = await make_tier(prefix="/mirror/a/")
    bare = await make_tier()
    objects = {
        "index/se/rd/serde": b"serde index",
        "index/3/f/foo": b"foo",
        "crates/serde/serde-1.0.0.crate": b"crate bytes",
    }
    for key, data in objects.items():
        assert await prefixed.tier.put_bytes(key, data)
    assert await bare.tier.put_bytes("other/thing", b"outside the prefix")

    with moto.client() as client:
        stored = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert stored == {f"mirror/a/{key}" for key in objects} | {"other/thing"}

    everything = [item async for item in prefixed.tier.iterate()]
    assert sorted(everything) == sorted((key, len(data)) for key, data in objects.items())
    index = [item async for item in prefixed.tier.iterate("index/")]
    assert sorted(index) == [("index/3/f/foo", 3), ("index/se/rd/serde", 11)]
    assert [item async for item in prefixed.tier.iterate("nothing/")] == []
    assert await prefixed.tier.get("index/3/f/foo") == b"foo"
    assert await prefixed.tier.get("other/thing") is None

    unprefixed = sorted(key for key, _ in [item async for item in bare.tier.iterate()])
    assert unprefixed == sorted(stored)
    assert [item async for item in bare.tier.iterate("other/")] == [("other/thing", 18)]


async def test_a_large_file_goes_up_in_parts(
    make_tier: MakeTier, proxy: S3FaultProxy, moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    threshold = 5 * 2**20 + 1
    s3 = await make_tier(multipart_threshold=threshold)
    data = os.urandom(12_000_000)
    big = tmp_path / "big.crate"
    big.write_bytes(data)
    small = tmp_path / "small.crate"
    small.write_bytes(data[:threshold])

    assert await s3.tier.put_file("crates/big/big-1.0.0.crate", big)
    parts = [r for r in proxy.requests if r.is_upload_part]
    assert len(parts) == 3  # 5 MiB + 1, 5 MiB + 1, the rest
    with moto.client() as client:
        head = client.head_object(Bucket=bucket, Key="crates/big/big-1.0.0.crate")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(data)
    assert await s3.tier.get("crates/big/big-1.0.0.crate") == data

    proxy.reset_requests()
    assert await s3.tier.put_file("crates/small/small-1.0.0.crate", small)
    assert [(r.method, r.query) for r in proxy.requests] == [("PUT", "")]
    assert await s3.tier.get("crates/small/small-1.0.0.crate") == data[:threshold]
    assert s3.all_errors() == 0


async def test_a_failed_multipart_upload_is_aborted(
    make_tier: MakeTier, proxy: S3FaultProxy, moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    s3 = await make_tier(multipart_threshold=5 * 2**20 + 1)
    big = tmp_path / "big.crate"
    big.write_bytes(os.urandom(12_000_000))
    proxy.fail_after_parts(1)

    assert not await s3.tier.put_file("crates/big/big-1.0.0.crate", big)

    requests = proxy.requests
    assert [r.method for r in requests if "uploads" in r.query.split("&")] == ["POST"]
    assert len([r for r in requests if r.is_upload_part]) == 2  # one passed, one failed
    aborts = [r for r in requests if r.is_abort]
    assert len(aborts) == 1
    assert aborts[0].path == f"/{bucket}/crates/big/big-1.0.0.crate"
    upload_id = aborts[0].query.split("uploadId=")[1].split("&")[0]
    with moto.client() as client:
        with pytest.raises(ClientError) as missing:
            client.head_object(Bucket=bucket, Key="crates/big/big-1.0.0.crate")
        assert missing.value.response["Error"]["Code"] == "404"
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        with pytest.raises(ClientError) as gone:  # the uploaded part went with the upload
            client.list_parts(Bucket=bucket, Key="crates/big/big-1.0.0.crate", UploadId=upload_id)
        assert gone.value.response["Error"]["Code"] == "NoSuchUpload"
    assert s3.errors("put_file") == 1
    assert s3.gauge() == 0


async def test_a_cancelled_upload_is_aborted(
    make_tier: MakeTier, proxy: S3FaultProxy, moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    s3 = await make_tier(multipart_threshold=5 * 2**20 + 1)
    big = tmp_path / "big.crate"
    big.write_bytes(os.urandom(12_000_000))
    proxy.set_latency(0.3)
    upload = asyncio.ensure_future(s3.tier.put_file("crates/big/big-1.0.0.crate", big))
    for _ in range(500):  # until the first part is on its way
        if any(r.is_upload_part for r in proxy.requests):
            break
        await asyncio.sleep(0.01)
    upload.cancel()  # e.g. shutdown's grace period for uploads ran out
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert [r for r in proxy.requests if r.is_abort] != []
    with moto.client() as client:
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3.all_errors() == 0  # cancelled, not failed


async def test_local_file_errors_are_not_s3_failures(
    make_tier: MakeTier, proxy: S3FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    s3 = await make_tier()
    assert await s3.tier.put_bytes("crates/a/a-1.0.0.crate", b"a" * 200_000)
    proxy.reset_requests()
    # the file to share was evicted before its upload
    assert not await s3.tier.put_file("crates/x/x-1.0.0.crate", tmp_path / "missing.crate")
    assert proxy.requests == []

    store = DiskStore(tmp_path / "disk")
    async with store.pending("crates/a/a-1.0.0.crate") as pending:

        async def disk_full(chunk: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        pending.write = disk_full  # type: ignore[method-assign]
        assert not await s3.tier.download("crates/a/a-1.0.0.crate", pending)

    assert s3.all_errors() == 0
    assert s3.tier.available
    assert s3.gauge() == 1
    assert messages(caplog, DEGRADED) == 0
    assert messages(caplog, "S3 tier: local file error") == 1
    assert await s3.tier.contains("crates/a/a-1.0.0.crate")


# --- failures ---------------------------------------------------------------


@pytest.fixture
def own_moto() -> Iterator[MotoServer]:
    """A moto server of the test's own, to stop and start."""
    with MotoServer() as server:
        yield server


async def test_stopped_s3_degrades_then_recovers(
    make_tier: MakeTier, own_moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    own_moto.create_bucket("ghostcrate-own")
    s3 = await make_tier(own_moto.endpoint_url, bucket="ghostcrate-own")
    assert await s3.tier.put_bytes("index/se/rd/serde", b"serde")
    own_moto.stop()

    started = time.monotonic()
    assert await s3.tier.get("index/se/rd/serde") is None
    assert time.monotonic() - started < 3
    assert s3.gauge() == 0
    assert s3.errors("get") == 1
    assert not s3.tier.available

    # degraded: answered at once, without trying
    started = time.monotonic()
    assert not await s3.tier.contains("index/se/rd/serde")
    assert not await s3.tier.put_bytes("index/se/rd/serde", b"new")
    assert [item async for item in s3.tier.iterate()] == []
    assert time.monotonic() - started < 0.1
    assert s3.all_errors() == 1

    # after retry_after it tries again, and fails again: counted, not logged again
    await asyncio.sleep(RETRY_AFTER + 0.1)
    assert not await s3.tier.put_bytes("index/se/rd/serde", b"new")
    assert s3.errors("put_bytes") == 1
    assert messages(caplog, DEGRADED) == 1
    warning = next(r for r in caplog.records if r.getMessage() == DEGRADED)
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["op"] == "get"
    assert "EndpointConnectionError" in warning.__dict__["error"]

    own_moto.start()
    own_moto.create_bucket("ghostcrate-own")  # moto forgets everything when stopped
    await asyncio.sleep(RETRY_AFTER + 0.1)
    assert await s3.tier.put_bytes("index/se/rd/serde", b"back")
    assert s3.gauge() == 1
    assert s3.tier.available
    assert await s3.tier.get("index/se/rd/serde") == b"back"
    assert messages(caplog, RECOVERED) == 1
    assert messages(caplog, DEGRADED) == 1


async def test_an_unanswered_connect_gives_up_after_connect_timeout(
    make_tier: MakeTier,
) -> None:
    with unanswered_endpoint() as endpoint_url:
        s3 = await make_tier(endpoint_url, connect_timeout=1, read_timeout=1)
        started = time.monotonic()
        assert not await s3.tier.contains("index/se/rd/serde")
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3
    assert s3.errors("contains") == 1
    assert s3.gauge() == 0


async def test_no_request_reaches_s3_while_degraded(
    make_tier: MakeTier, proxy: S3FaultProxy, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    s3 = await make_tier()
    assert await s3.tier.put_bytes("index/se/rd/serde", b"serde")
    proxy.set_status(500)
    proxy.reset_requests()

    assert await s3.tier.get("index/se/rd/serde") is None
    assert len(proxy.requests) == 1
    assert s3.errors("get") == 1

    upload = tmp_path / "x.crate"
    upload.write_bytes(b"x")
    store = DiskStore(tmp_path / "disk")
    async with store.pending("crates/x/x-1.0.0.crate") as pending:
        assert not await s3.tier.download("index/se/rd/serde", pending)
    assert not await s3.tier.contains("index/se/rd/serde")
    assert not await s3.tier.put_bytes("index/se/rd/serde", b"new")
    assert not await s3.tier.put_file("crates/x/x-1.0.0.crate", upload)
    assert not await s3.tier.delete("index/se/rd/serde")
    assert [item async for item in s3.tier.iterate()] == []
    assert len(proxy.requests) == 1
    assert s3.all_errors() == 1

    # after retry_after, concurrent callers send one probe between them
    await asyncio.sleep(RETRY_AFTER + 0.1)
    answers = await asyncio.gather(*(s3.tier.get("index/se/rd/serde") for _ in range(5)))
    assert answers == [None] * 5
    assert len(proxy.requests) == 2
    assert s3.errors("get") == 2

    proxy.clear_faults()
    await asyncio.sleep(RETRY_AFTER + 0.1)
    assert await s3.tier.get("index/se/rd/serde") == b"serde"
    assert s3.gauge() == 1
    assert messages(caplog, DEGRADED) == 1
    assert messages(caplog, RECOVERED) == 1


@pytest.mark.parametrize("fault", ["500", "503", "drop"])
async def test_failing_s3_answers_absent_and_counts(
    make_tier: MakeTier, proxy: S3FaultProxy, fault: str
) -> None:
    s3 = await make_tier(retry_after=0)  # try every time, to count every operation
    assert await s3.tier.put_bytes("index/se/rd/serde", b"serde")
    if fault == "drop":
        proxy.set_drop()
    else:
        proxy.set_status(int(fault))

    assert await s3.tier.get("index/se/rd/serde") is None
    assert not await s3.tier.contains("index/se/rd/serde")
    assert not await s3.tier.put_bytes("index/se/rd/serde", b"new")
    assert not await s3.tier.delete("index/se/rd/serde")
    assert [item async for item in s3.tier.iterate()] == []
    for op in ("get", "contains", "put_bytes", "delete", "iterate"):
        assert s3.errors(op) == 1, op
    assert s3.gauge() == 0

    proxy.clear_faults()
    assert await s3.tier.get("index/se/rd/serde") == b"serde"
    assert s3.gauge() == 1


async def test_slow_s3_answers_absent_within_the_timeouts(
    make_tier: MakeTier, proxy: S3FaultProxy
) -> None:
    s3 = await make_tier(read_timeout=0.5, retry_after=0)
    assert await s3.tier.put_bytes("index/se/rd/serde", b"serde")
    proxy.set_latency(3)

    started = time.monotonic()
    assert await s3.tier.get("index/se/rd/serde") is None
    assert not await s3.tier.put_bytes("index/se/rd/serde", b"new")
    assert time.monotonic() - started < 2.5
    assert s3.errors("get") == 1
    assert s3.errors("put_bytes") == 1
    assert s3.gauge() == 0


async def test_a_download_cut_mid_body_fails(
    make_tier: MakeTier, proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3 = await make_tier()
    data = os.urandom(2_000_000)
    assert await s3.tier.put_bytes("crates/a/a-1.0.0.crate", data)
    proxy.cut_bodies_after(300_000)
    store = DiskStore(tmp_path / "disk")
    async with store.pending("crates/a/a-1.0.0.crate") as pending:
        assert not await s3.tier.download("crates/a/a-1.0.0.crate", pending)
        assert 0 < pending.size < len(data)
    assert not await store.exists("crates/a/a-1.0.0.crate")
    assert s3.errors("download") == 1
    assert s3.gauge() == 0


async def test_a_closed_tier_answers_absent(
    bucket: str, proxy: S3FaultProxy, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    settings = s3_settings(bucket, proxy.endpoint_url)
    async with S3Tier.open(settings, CacheMetrics.create(registry)) as tier:
        assert await tier.put_bytes("index/1/a", b"a")
    await tier.close()  # twice is fine
    proxy.reset_requests()
    assert await tier.get("index/1/a") is None
    assert not await tier.put_bytes("index/1/a", b"a")
    assert proxy.requests == []
