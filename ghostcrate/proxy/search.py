"""`cargo search` against the upstream's web API, for the names the mirror serves.

The upstream's `config.json` says where its API is (`api`); crates.io's is
`https://crates.io`. A search that has not answered within its time, or that
fails, gives no upstream results rather than an error: private results are
still worth showing.
"""

from __future__ import annotations

import asyncio
import json
import logging

from yarl import URL

from ghostcrate.proxy.errors import ProxyError
from ghostcrate.proxy.index import MirrorIndex
from ghostcrate.proxy.upstream import UpstreamClient, read_bounded

log = logging.getLogger(__name__)

#: Largest search answer read from the upstream.
MAX_SEARCH_BYTES = 1 << 20


class UpstreamSearch:
    def __init__(self, index: MirrorIndex, upstream: UpstreamClient) -> None:
        self._index = index
        self._upstream = upstream

    async def search(
        self, query: str, per_page: int, within: float
    ) -> tuple[list[dict[str, str]], int] | None:
        """The upstream's hits (name, max_version, description) and total, or None.

        None also when the upstream has not answered `within` seconds.
        """
        if self._upstream.settings.offline:
            return None
        try:
            async with asyncio.timeout(within):
                config = await self._index.upstream_config()
                api = config.get("api")
                if not isinstance(api, str) or not api.startswith(("http://", "https://")):
                    return None
                url = URL(api.rstrip("/") + "/api/v1/crates").with_query(
                    q=query, per_page=str(per_page)
                )
                async with self._upstream.stream(str(url), "search") as response:
                    body = await read_bounded(response, MAX_SEARCH_BYTES, "search")
            return _hits(json.loads(body))
        except (ProxyError, TimeoutError, ValueError, TypeError) as error:
            log.warning("upstream search gave no results", extra={"error": str(error)})
            return None


def _hits(document: object) -> tuple[list[dict[str, str]], int]:
    if not isinstance(document, dict) or not isinstance(document.get("crates"), list):
        raise TypeError("the upstream's search answer has no 'crates' list")
    hits = []
    for crate in document["crates"]:
        if isinstance(crate, dict) and isinstance(crate.get("name"), str):
            hits.append(
                {
                    "name": crate["name"],
                    "max_version": str(crate.get("max_version") or "0.0.0"),
                    "description": str(crate.get("description") or ""),
                }
            )
    meta = document.get("meta")
    total = meta.get("total") if isinstance(meta, dict) else None
    return hits, total if isinstance(total, int) else len(hits)
