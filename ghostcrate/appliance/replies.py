"""What the mirror's routes answer, independent of the HTTP server that sends it.

Both front ends use these: the fast lane (`ghostcrate.appliance.fastlane`),
which serves almost every index and download request, and the aiohttp views,
which serve the requests the fast lane hands over. A `Reply` also says how
long the fast lane may answer the same URL with it without asking again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path

from ghostcrate.cargo.names import CrateName, InvalidName, is_version, parse_index_path
from ghostcrate.config import Settings
from ghostcrate.proxy import MirrorCrates, MirrorIndex, NotFound, ProxyError, UpstreamError
from ghostcrate.proxy.indexfile import body_etag

CRATE_CONTENT_TYPE = "application/gzip"
INDEX_CONTENT_TYPE = "text/plain"
JSON_CONTENT_TYPE = "application/json"
#: Crates never change once published: clients and caches may keep them for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Index files change: clients revalidate every time (cargo sends If-None-Match).
REVALIDATE = "no-cache"

#: The share of its freshness after which a reply still being asked for is renewed ahead:
#: a random point in this window for each reply, so files fetched together (a cold start,
#: a `cargo update`) are not all renewed in the same second.
RENEW_WINDOW = (0.7, 0.9)

#: Route names, as the metrics label them.
CONFIG_ROUTE = "/index/config.json"
INDEX_ROUTE = "/index/{path}"
DOWNLOAD_ROUTE = "/api/v1/crates/{name}/{version}/download"
#: Liveness: answered by whichever front end reads the request, never refused by `[auth]`.
HEALTHZ_ROUTE = "/healthz"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    #: The body, unless `file` is set.
    body: bytes = b""
    #: A verified cached file whose bytes are the body, and its size.
    file: Path | None = None
    file_size: int = 0
    etag: str | None = None
    last_modified: str | None = None
    cache_control: str | None = None
    #: Seconds for which the same request may get this same reply without asking the mirror.
    keep_for: float = 0.0
    #: How it was found, for `ghostcrate_requests_total`: `hit` (from the cache), `miss`
    #: (the upstream was asked), `stale` (an expired copy the upstream did not renew in
    #: time), `error` (not answered as asked: a bad request, or a failure).
    outcome: str = "hit"
    #: A private crate's (or a reserved name's): `[auth] read_private` decides who gets it.
    private: bool = False


#: `/healthz`: the process is alive and its event loop answers. Kept for ever in the hot
#: set, so that the lanes answer it as cheaply as a cache hit.
HEALTHZ = Reply(
    200,
    "application/json",
    b'{"status":"alive"}\n',
    cache_control="no-store",
    keep_for=float("inf"),
)


def error_reply(status: int, detail: str) -> Reply:
    """Cargo's error format: it prints `errors[].detail` to its user."""
    body = json.dumps({"errors": [{"detail": detail}]}).encode()
    return Reply(status, JSON_CONTENT_TYPE, body, outcome="error")


def missing_index(name: str) -> Reply:
    """The mirror's answer for the index file of a crate it does not have."""
    return error_reply(404, f"crate '{name}' does not exist (or, offline, has nothing cached)")


def missing_crate(name: str) -> Reply:
    """The mirror's answer for a download of a crate the upstream does not have
    (`MirrorCrates` words it so)."""
    return error_reply(404, f"crate '{name}' does not exist upstream")


def status_of(error: ProxyError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, UpstreamError):
        return 502
    return 500


def not_modified(reply: Reply, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Whether a 304 answers a conditional GET (RFC 9110 13.1); If-None-Match wins."""
    if reply.status != 200:
        return False
    if if_none_match is not None:
        return reply.etag is not None and etag_matches(reply.etag, if_none_match)
    if if_modified_since is not None and reply.last_modified is not None:
        try:
            return parsedate_to_datetime(reply.last_modified) <= parsedate_to_datetime(
                if_modified_since
            )
        # Any text may come: an offset too large for a C int overflows, a year out of
        # range or a zone-less date (naive, not comparable) raise, and some CPython
        # releases raised IndexError on malformed dates (gh-95087).
        except (TypeError, ValueError, OverflowError, IndexError):
            return False
    return False


def etag_matches(etag: str, if_none_match: str) -> bool:
    """Weak comparison of `etag` with an If-None-Match list (RFC 9110 13.1.2)."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


class MirrorReplies:
    """The index and download routes of the mirror."""

    def __init__(self, settings: Settings, index: MirrorIndex, crates: MirrorCrates) -> None:
        self._settings = settings.upstream
        self._index = index
        self._crates = crates
        base = settings.server.base_url
        config = json.dumps({"dl": f"{base}/api/v1/crates", "api": base}).encode()
        self.config = Reply(
            200,
            JSON_CONTENT_TYPE,
            config,
            etag=body_etag(config),
            last_modified="Thu, 01 Jan 1970 00:00:00 GMT",
            cache_control=REVALIDATE,
            keep_for=float("inf"),
        )

    async def index_file(self, path: str, *, renew_ahead: bool = False) -> Reply:
        """An index file; `renew_ahead`: revalidate it if it is in its `RENEW_WINDOW`."""
        try:
            name = parse_index_path(path)
        except InvalidName as error:
            return error_reply(404, f"no index file here: {error}")
        try:
            max_age = self._settings.index_ttl * RENEW_WINDOW[0] if renew_ahead else None
            offer, outcome = await self._index.offered(
                name, max_age=max_age, background=renew_ahead
            )
        except ProxyError as error:
            return error_reply(status_of(error), str(error))
        if offer is None:
            missing = missing_index(name.value)
            return replace(missing, keep_for=self._settings.negative_ttl, outcome=outcome)
        keep_for = self._settings.index_ttl
        if offer.checked_at is not None:  # fresh for what is left of its ttl
            keep_for = max(0.0, self._settings.index_ttl - (time.time() - offer.checked_at))
        return Reply(
            200,
            INDEX_CONTENT_TYPE,
            offer.body,
            etag=offer.etag,
            last_modified=offer.last_modified,
            cache_control=REVALIDATE,
            keep_for=keep_for,
            outcome=outcome,
        )

    async def download(self, name: str, version: str) -> Reply:
        try:
            crate = CrateName(name)
        except InvalidName as error:
            return error_reply(404, str(error))
        if not is_version(version):
            return error_reply(
                404, f"invalid version {version!r}: crate versions are SemVer, like 1.2.3"
            )
        outcome = "hit"
        try:
            found = await self._crates.cached(crate, version)
            if found is None:
                outcome = "miss"
                found = await self._crates.fetch(crate, version)
        except NotFound as error:
            kept = self._keep_not_found(error)
            return replace(error_reply(404, str(error)), keep_for=kept, outcome="miss")
        except ProxyError as error:
            return error_reply(status_of(error), str(error))
        return Reply(
            200,
            CRATE_CONTENT_TYPE,
            file=found.path,
            file_size=found.size,
            cache_control=IMMUTABLE,
            keep_for=float("inf"),
            outcome=outcome,
        )

    def _keep_not_found(self, error: NotFound) -> float:
        """How long a download's 404 may be answered again: until the mirror could learn better.

        That is `negative_ttl` after the upstream said so, but no later than a renewal
        ahead (`RENEW_WINDOW`) could bring a new version into the index file: a client
        that reads the index file first never finds a version it cannot download.
        """
        if error.checked_at is None:
            return 0.0
        settings = self._settings
        fresh_for = min(settings.negative_ttl, settings.index_ttl * RENEW_WINDOW[0])
        return max(0.0, fresh_for - (time.time() - error.checked_at))
