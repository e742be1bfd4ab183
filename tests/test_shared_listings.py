"""Listings of the S3 tier (an offline index view's) are reused a while, and end at a write."""

from __future__ import annotations

from pathlib import Path

from ghostcrate.cache import CacheMetrics
from ghostcrate.cache.setup import open_cache
from ghostcrate.config import Settings
from tests.support.s3 import S3FaultProxy, s3_settings


def listings(proxy: S3FaultProxy) -> int:
    return sum(1 for r in proxy.requests if r.method == "GET" and "list-type=2" in r.query)


async def test_a_listing_is_reused_until_this_node_writes_below_it(
    tmp_path: Path, bucket: str, proxy: S3FaultProxy
) -> None:
    settings = Settings(data_dir=tmp_path, s3=s3_settings(bucket, proxy.endpoint_url))
    async with open_cache(settings, CacheMetrics.create()) as cache:
        assert cache.shared is not None
        await cache.shared.put_bytes("crates/abc/abc-0.1.0.crate", b"from another node")
        proxy.reset_requests()
        for _ in range(5):
            assert await cache.names_below("crates/abc/") == {"abc-0.1.0.crate"}
        assert listings(proxy) == 1
        async with cache.hold("crates/abc/abc-0.2.0.crate"):
            await cache.write("crates/abc/abc-0.2.0.crate", b"written here")
        await cache.shared.put_bytes("crates/abc/abc-0.3.0.crate", b"and another node again")
        assert await cache.names_below("crates/abc/") == {
            "abc-0.1.0.crate",
            "abc-0.2.0.crate",
            "abc-0.3.0.crate",
        }
        assert listings(proxy) == 2
