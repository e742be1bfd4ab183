"""The mirror's sparse index: cached index files, revalidated after `index_ttl`.

A fresh cached file is served as is. A stale one is revalidated with a
conditional GET; when the upstream fails, or has not answered within
`stale_after`, the stale copy is served and counted (stale beats down, and
slow), and a late revalidation finishes in the background. "No such crate"
answers are remembered for `negative_ttl`. Concurrent misses and
revalidations of one file share one upstream request.

A new or revalidated file is answered as soon as it is checked, and stored
(written, or its date touched) afterwards, still under the key's lock: the
other workers wait for the stored file, this one reads it from memory until
then. Under a burst of misses the disk's flushes queue behind each other;
nobody waits for them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ghostcrate.cache import ExpiringSet, SingleFlight, TieredCache
from ghostcrate.cargo.names import CrateName, index_path
from ghostcrate.config import UpstreamSettings
from ghostcrate.proxy.errors import ProxyError, UpstreamError
from ghostcrate.proxy.indexfile import (
    IndexFile,
    body_etag,
    check_index_body,
    parse_upstream_config,
)
from ghostcrate.proxy.keys import CONFIG_PATH, crate_dir, crate_key, index_key
from ghostcrate.proxy.metrics import ProxyMetrics
from ghostcrate.proxy.upstream import Missing, Modified, NotModified, UpstreamClient

log = logging.getLogger(__name__)

#: Seconds a decoded index file is used again without reading the disk: long enough for
#: the downloads cargo sends right after reading it, short enough that a file another
#: worker or an import replaced is seen almost at once.
RECENT_SECONDS = 5.0
#: Bytes of index file bodies kept decoded that way.
RECENT_MAX_BYTES = 16 * 2**20


@dataclass
class _Overdue:
    """When the requests waiting for a revalidation get the cached copy instead."""

    flight: asyncio.Task[IndexFile | None]
    #: Event-loop time: `stale_after` after the first request began waiting.
    at: float
    #: Whether a request got the cached copy (and the line saying so was logged).
    served: bool = False


#: How a lookup was answered (see `MirrorIndex._get`).
Outcome = Literal["hit", "miss", "stale"]


@dataclass(frozen=True)
class Offer:
    """An index file as served: body and validators."""

    body: bytes
    etag: str
    last_modified: str | None
    #: When the upstream last confirmed it (epoch seconds); None for an offline view.
    checked_at: float | None = None


class MirrorIndex:
    def __init__(
        self,
        cache: TieredCache,
        upstream: UpstreamClient,
        settings: UpstreamSettings,
        metrics: ProxyMetrics,
    ) -> None:
        self._cache = cache
        self._upstream = upstream
        self._settings = settings
        self._metrics = metrics
        self._flights: SingleFlight[str, IndexFile | None] = SingleFlight()
        #: Revalidations with a cached copy to fall back on, by key.
        self._overdue: dict[str, _Overdue] = {}
        self._missing = ExpiringSet()
        #: Files answered and still being stored, by key: what the disk will say.
        self._storing: dict[str, IndexFile] = {}
        self._stores: set[asyncio.Task[None]] = set()
        #: Files read or fetched in the last `RECENT_SECONDS`, decoded: (file, until when).
        self._recent: OrderedDict[str, tuple[IndexFile, float]] = OrderedDict()
        self._recent_bytes = 0
        self._config_prefetched = False

    async def get(
        self,
        name: CrateName,
        *,
        max_age: float | None = None,
        recent: bool = False,
        background: bool = False,
    ) -> IndexFile | None:
        """The index file of a crate, or None if the upstream has no such crate.

        `recent`: a copy decoded in the last `RECENT_SECONDS` will do (a download
        looking up its checksum), instead of what the disk says now. `background`:
        nobody is waiting (a renewal ahead of expiry), so a revalidation is waited
        for however long it takes, not just `stale_after`.
        """
        check = functools.partial(check_index_body, name)
        path = index_path(name)
        index, _ = await self._get(path, max_age, check, recent=recent, background=background)
        return index

    async def offered(
        self, name: CrateName, *, max_age: float | None = None, background: bool = False
    ) -> tuple[Offer | None, Outcome]:
        """The index file as clients see it (None for "no such crate"), and how it was found.

        Offline or with `only_cached`, only versions whose .crate is in the cache
        are offered, so cargo resolves to what it can download; such a view has
        its own ETag and no Last-Modified (adding a crate changes it).
        """
        check = functools.partial(check_index_body, name)
        index, outcome = await self._get(
            index_path(name), max_age, check, recent=False, background=background
        )
        if index is None:
            return None, outcome
        if not (self._settings.offline or self._settings.only_cached):
            return Offer(index.body, index.etag, index.last_modified, index.checked_at), outcome
        present = await self._cache.names_below(crate_dir(name))
        cached = {v for v in index.versions() if crate_key(name, v).rpartition("/")[2] in present}
        body = index.restricted_to(cached)
        return (Offer(body, body_etag(body), None) if body else None), outcome

    def missing_since(self, name: CrateName) -> float | None:
        """When the upstream said it has no such crate (epoch seconds), while remembered."""
        return self._missing.since(index_key(index_path(name)))

    async def upstream_config(self) -> dict[str, Any]:
        """The upstream's config.json (it gives the download URL)."""
        config, _ = await self._get(CONFIG_PATH, None, parse_upstream_config, recent=True)
        if config is None:
            raise UpstreamError("the upstream has no config.json; is [upstream] index right?")
        return parse_upstream_config(config.body)

    async def close(self) -> None:
        await self._flights.close()
        await asyncio.gather(*self._stores, return_exceptions=True)

    async def _get(
        self,
        path: str,
        max_age: float | None,
        check: Callable[[bytes], object],
        *,
        recent: bool,
        background: bool = False,
    ) -> tuple[IndexFile | None, Outcome]:
        """The file (None: the upstream has none) and how it was found: from the cache
        (`hit`, a remembered "none" too), from the upstream now (`miss`), or a copy
        older than its `ttl` because the upstream failed or was late (`stale`)."""
        ttl = self._settings.index_ttl if max_age is None else max_age
        key = index_key(path)
        cached = await self._read(key, recent=recent)
        if self._settings.offline:  # whatever is cached is what there is
            return cached, "hit"
        now = time.time()
        if cached is not None and now - cached.checked_at < ttl:
            self._metrics.index_results.labels("hit").inc()
            return cached, "hit"
        if cached is None and key in self._missing:
            self._metrics.index_results.labels("not_found").inc()
            return None, "hit"
        if path != CONFIG_PATH:
            self._prefetch_upstream_config()
        flight = self._flights.start(key, lambda: self._refresh(key, path, ttl, check))
        if cached is None or background:
            index = await asyncio.shield(flight)
        else:
            index = await self._within_stale_after(key, flight, cached)
        stale = index is not None and time.time() - index.checked_at >= ttl
        return index, "stale" if stale else "miss"

    async def _within_stale_after(
        self, key: str, flight: asyncio.Task[IndexFile | None], cached: IndexFile
    ) -> IndexFile | None:
        """The revalidation's answer if it comes within `stale_after`, else `cached`.

        `stale_after` counts from the first request that waits for this revalidation:
        the requests that come after that get the cached copy at once, and the
        revalidation finishes in the background (it stores what it learns).
        """
        loop = asyncio.get_running_loop()
        overdue = self._overdue.get(key)
        if overdue is None or overdue.flight is not flight:
            overdue = _Overdue(flight, loop.time() + self._settings.stale_after)
            self._overdue[key] = overdue
            flight.add_done_callback(functools.partial(self._revalidated, key, overdue))
        left = overdue.at - loop.time()
        if left > 0 and not flight.done():
            await asyncio.wait((flight,), timeout=left)
        if flight.done():
            return flight.result()
        if not overdue.served:  # counted once per revalidation, as a failed one is
            overdue.served = True
            self._metrics.index_results.labels("stale").inc()
            self._metrics.stale_served.inc()
            log.warning(
                "the upstream has not answered within stale_after; serving the cached "
                "index file while it is revalidated in the background",
                extra={"key": key, "stale_after_s": self._settings.stale_after},
            )
        return cached

    def _revalidated(
        self, key: str, overdue: _Overdue, flight: asyncio.Task[IndexFile | None]
    ) -> None:
        """A revalidation ended; one that failed after a request stopped waiting is logged."""
        if self._overdue.get(key) is overdue:
            del self._overdue[key]
        if flight.cancelled():
            return
        error = flight.exception()  # retrieved here, whoever else did
        if error is not None and overdue.served:
            log.warning(
                "revalidating an index file in the background failed: %s",
                error,
                extra={"key": key},
            )

    def _prefetch_upstream_config(self) -> None:
        """Fetch the upstream's config.json alongside the first index file from upstream.

        Every download needs its `dl`, and cargo asks for crates right after their
        index files: fetched only by the first download, it held that whole burst of
        downloads back by one more round trip to the upstream.
        """
        if self._config_prefetched:
            return
        self._config_prefetched = True
        task = asyncio.ensure_future(self._fetch_upstream_config())
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    async def _fetch_upstream_config(self) -> None:
        try:
            await self.upstream_config()
        except ProxyError as error:  # the first download reports it, and tries again
            log.debug("prefetching the upstream's config.json failed: %s", error)

    async def _read(self, key: str, *, recent: bool) -> IndexFile | None:
        """The cached file; `recent=False` reads what the disk says now (other workers)."""
        storing = self._storing.get(key)
        if storing is not None:
            return storing
        if recent:
            remembered = self._recall(key)
            if remembered is not None:
                return remembered
        found = await self._cache.read(key)
        if found is None:
            self._forget(key)
            return None
        try:
            index = IndexFile.decode(found.data, found.mtime)
        except (ValueError, KeyError):
            log.warning("discarding unreadable cached index file", extra={"key": key})
            await self._cache.delete(key)
            return None
        self._remember(key, index)
        return index

    def _recall(self, key: str) -> IndexFile | None:
        item = self._recent.get(key)
        if item is None:
            return None
        if item[1] < time.monotonic():
            self._forget(key)
            return None
        return item[0]

    def _remember(self, key: str, index: IndexFile) -> None:
        """Keep a decoded file for a few seconds: cargo downloads right after reading it."""
        self._forget(key)
        size = len(index.body)
        if size > RECENT_MAX_BYTES // 16:
            return
        self._recent[key] = (index, time.monotonic() + RECENT_SECONDS)
        self._recent_bytes += size
        while self._recent_bytes > RECENT_MAX_BYTES:
            _, (evicted, _) = self._recent.popitem(last=False)
            self._recent_bytes -= len(evicted.body)

    def _forget(self, key: str) -> None:
        item = self._recent.pop(key, None)
        if item is not None:
            self._recent_bytes -= len(item[0].body)

    async def _refresh(
        self, key: str, path: str, ttl: float, check: Callable[[bytes], object]
    ) -> IndexFile | None:
        answer: asyncio.Future[IndexFile | None] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._refresh_holding(key, path, ttl, check, answer))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            # Only `close` cancels a flight: stop waiting for the upstream (nobody may be
            # waiting for the answer); storing an answer already given is let finish.
            if not answer.done():
                task.cancel()
            raise

    async def _refresh_holding(
        self,
        key: str,
        path: str,
        ttl: float,
        check: Callable[[bytes], object],
        answer: asyncio.Future[IndexFile | None],
    ) -> None:
        """Revalidate under the key's lock, `answer`, then store what changed and unlock."""
        try:
            async with self._cache.hold(key):
                # Another worker may have refreshed it while we waited for the lock.
                cached = await self._read(key, recent=False)
                if cached is not None and time.time() - cached.checked_at < ttl:
                    answer.set_result(cached)
                    return
                index, store = await self._revalidate(key, path, cached, check)
                if index is None:
                    self._forget(key)
                else:
                    self._remember(key, index)
                answer.set_result(index)
                if store is not None and index is not None:
                    self._storing[key] = index
                    try:
                        await store()
                    finally:
                        if self._storing.get(key) is index:
                            del self._storing[key]
        except Exception as error:
            if not answer.done():
                answer.set_exception(error)
            else:  # answered already: the next request revalidates again
                log.exception("storing an index file failed", extra={"key": key})
        except BaseException:
            if not answer.done():
                answer.cancel()
            raise

    async def _revalidate(
        self, key: str, path: str, cached: IndexFile | None, check: Callable[[bytes], object]
    ) -> tuple[IndexFile | None, Callable[[], Awaitable[object]] | None]:
        """The index file now, and how to store it (None: nothing to store)."""
        try:
            answer = await self._upstream.get_index(
                path,
                cached.upstream_etag if cached else None,
                cached.upstream_last_modified if cached else None,
            )
            if isinstance(answer, Modified):
                check(answer.body)
            self._metrics.upstream_requests.labels("index", type(answer).__name__.lower()).inc()
        except UpstreamError as error:
            self._metrics.upstream_requests.labels("index", "error").inc()
            if cached is None:
                raise
            overdue = self._overdue.get(key)
            if overdue is not None and overdue.served:  # served stale, and counted, already
                log.warning(
                    "revalidating an index file in the background failed: %s",
                    error,
                    extra={"key": key},
                )
            else:
                self._metrics.index_results.labels("stale").inc()
                self._metrics.stale_served.inc()
                log.warning("serving a stale index file: %s", error, extra={"key": key})
            return cached, None
        now = time.time()
        match answer:
            case NotModified() if cached is not None:
                self._metrics.index_results.labels("revalidated").inc()
                return cached.checked(now), functools.partial(self._cache.touch, key)
            case NotModified():
                raise UpstreamError(f"the upstream answered 304 for {path} to an unconditional GET")
            case Missing():
                await self._cache.delete(key)
                self._missing.add(key, self._settings.negative_ttl)
                self._metrics.index_results.labels("not_found").inc()
                return None, None
            case Modified(body, etag, last_modified):
                fresh = IndexFile.from_upstream(body, now, etag, last_modified, cached)
                self._missing.discard(key)
                self._metrics.index_results.labels("miss" if cached is None else "updated").inc()
                # Not flushed: a file a crash damaged fails its check when read (decode).
                store = functools.partial(self._cache.write, key, fresh.encode(), durable=False)
                return fresh, store
