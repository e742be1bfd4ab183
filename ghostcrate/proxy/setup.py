"""Assemble the mirror (upstream client, index, crates) on a cache, for the server and commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ghostcrate.cache import TieredCache
from ghostcrate.config import UpstreamSettings
from ghostcrate.proxy.crates import MirrorCrates
from ghostcrate.proxy.index import MirrorIndex
from ghostcrate.proxy.metrics import ProxyMetrics
from ghostcrate.proxy.search import UpstreamSearch
from ghostcrate.proxy.upstream import UpstreamClient


@dataclass(frozen=True)
class Mirror:
    index: MirrorIndex
    crates: MirrorCrates
    search: UpstreamSearch
    upstream: UpstreamClient


@asynccontextmanager
async def open_mirror(
    settings: UpstreamSettings, cache: TieredCache, metrics: ProxyMetrics
) -> AsyncIterator[Mirror]:
    async with UpstreamClient.open(settings, metrics) as upstream:
        index = MirrorIndex(cache, upstream, settings, metrics)
        crates = MirrorCrates(cache, index, upstream, metrics)
        try:
            yield Mirror(index, crates, UpstreamSearch(index, upstream), upstream)
        finally:
            await crates.close()
            await index.close()
