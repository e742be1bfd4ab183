"""Mirrored `.crate` files: served from the disk cache, or fetched, verified, then cached.

A miss streams the upstream's body into a temporary file while hashing it;
only when its length and sha256 match (the `cksum` of the crate's index
entry) is it renamed into the cache. Unverified bytes never reach a client.
"""

from __future__ import annotations

import logging
from typing import Any

from ghostcrate.cache import CachedFile, SingleFlight, TieredCache
from ghostcrate.cargo.names import CrateName, index_prefix, is_checksum
from ghostcrate.proxy.breaker import UpstreamUnavailable
from ghostcrate.proxy.errors import ChecksumMismatch, NotFound, UpstreamError
from ghostcrate.proxy.index import MirrorIndex
from ghostcrate.proxy.keys import crate_key
from ghostcrate.proxy.metrics import ProxyMetrics
from ghostcrate.proxy.upstream import UpstreamClient

log = logging.getLogger(__name__)

_MARKERS = ("{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}")


def download_url(dl: str, name: str, version: str, cksum: str) -> str:
    """Expand a config.json `dl` template the way cargo does (registry-index.md)."""
    if not any(marker in dl for marker in _MARKERS):
        return f"{dl.rstrip('/')}/{name}/{version}/download"
    return (
        dl.replace("{crate}", name)
        .replace("{version}", version)
        .replace("{prefix}", index_prefix(name))
        .replace("{lowerprefix}", index_prefix(name.lower()))
        .replace("{sha256-checksum}", cksum)
    )


class MirrorCrates:
    def __init__(
        self,
        cache: TieredCache,
        index: MirrorIndex,
        upstream: UpstreamClient,
        metrics: ProxyMetrics,
    ) -> None:
        self._only_cached = upstream.settings.offline or upstream.settings.only_cached
        self._negative_ttl = upstream.settings.negative_ttl
        self._cache = cache
        self._index = index
        self._upstream = upstream
        self._metrics = metrics
        self._flights: SingleFlight[str, CachedFile] = SingleFlight()

    async def cached(self, name: CrateName, version: str) -> CachedFile | None:
        """The cached file, if present (everything in the cache was verified on the way in)."""
        found = await self._cache.file(crate_key(name, version))
        if found is not None:
            self._metrics.crate_results.labels("hit").inc()
        return found

    async def fetch(self, name: CrateName, version: str) -> CachedFile:
        """Fill the cache from the upstream (once, however many ask) and return the file."""
        if self._only_cached:
            raise NotFound(
                f"crate {name} {version} is not in this mirror's cache, and it serves only "
                "cached crates; ask its operator to warm it"
            )
        key = crate_key(name, version)
        return await self._flights.run(key, lambda: self._fill(key, name, version))

    async def close(self) -> None:
        await self._flights.close()

    async def _entry(self, name: CrateName, version: str) -> dict[str, Any]:
        index = await self._index.get(name, recent=True)
        if index is not None and index.entry(version) is None:
            # Perhaps published since the upstream confirmed the file: ask it again, unless
            # that was within `negative_ttl` (each made-up version would cost a request).
            index = await self._index.get(name, max_age=self._negative_ttl, recent=True)
        if index is None:
            checked_at = self._index.missing_since(name)
            raise NotFound(f"crate '{name}' does not exist upstream", checked_at=checked_at)
        entry = index.entry(version)
        if entry is None:
            raise NotFound(
                f"crate '{name}' has no version {version} upstream", checked_at=index.checked_at
            )
        return entry

    async def _fill(self, key: str, name: CrateName, version: str) -> CachedFile:
        self._metrics.crate_results.labels("miss").inc()
        try:  # resolved before taking the crate's lock: holding two locks could deadlock
            url, real_name, cksum = await self._source(name, version)
        except UpstreamUnavailable as error:  # a cached file would have been served stale
            why = f"it needs {error.what}, which is not cached; {error.why}"
            raise UpstreamUnavailable(f"crate {name} {version}", why) from None
        async with self._cache.hold(key):  # one fill across worker processes too
            # Another worker may have filled it while we waited; else the shared tier
            # may have it (re-verified against the checksum).
            found = await self._cache.file(key, sha256=cksum)
            if found is not None:
                return found
            return await self._from_upstream(key, url, real_name, version, cksum)

    async def _source(self, name: CrateName, version: str) -> tuple[str, str, str]:
        """The download URL, the crate's name as published, and its sha256."""
        entry = await self._entry(name, version)
        cksum = entry.get("cksum")
        real_name = entry.get("name")
        if not (isinstance(cksum, str) and is_checksum(cksum) and isinstance(real_name, str)):
            raise UpstreamError(f"the upstream's index entry for {name} {version} is malformed")
        dl = (await self._index.upstream_config())["dl"]
        return download_url(dl, real_name, version, cksum), real_name, cksum

    async def _from_upstream(
        self, key: str, url: str, name: str, version: str, cksum: str
    ) -> CachedFile:
        try:
            found = await self._download(key, url, name, version, cksum)
        except UpstreamError:
            self._metrics.upstream_requests.labels("download", "error").inc()
            raise
        self._metrics.upstream_requests.labels("download", "ok").inc()
        return found

    async def _download(
        self, key: str, url: str, name: str, version: str, cksum: str
    ) -> CachedFile:
        what = f"crate {name} {version}"
        async with self._upstream.stream(url, what) as response, self._cache.pending(key) as file:
            async for chunk in response.chunks():
                await file.write(chunk)
            expected_length = response.content_length
            if expected_length is not None and file.size != expected_length:
                raise UpstreamError(
                    f"fetching {what} from the upstream failed: got {file.size} of "
                    f"{expected_length} bytes"
                )
            if file.sha256() != cksum:
                self._metrics.checksum_mismatches.inc()
                log.error(
                    "checksum mismatch",
                    extra={
                        "crate": name,
                        "version": version,
                        "expected": cksum,
                        "got": file.sha256(),
                    },
                )
                raise ChecksumMismatch(name, version, cksum, file.sha256())
            await self._cache.commit(key, file)
        log.info("cached crate", extra={"crate": name, "version": version, "bytes": file.size})
        return CachedFile(file.final, file.size)
