"""One namespace over the private registry and the mirror: private names are answered first.

This is the one place that decides whose a name is. A name that is private, or
that matches `[private] reserved`, is answered from the registry and never asked
of the upstream; every other name goes to the mirror. Both halves give `Reply`s,
so the fast lane, the HTTP/2 lane and aiohttp serve them alike.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import replace
from email.utils import formatdate

from ghostcrate.appliance.replies import (
    CRATE_CONTENT_TYPE,
    DOWNLOAD_ROUTE,
    IMMUTABLE,
    INDEX_CONTENT_TYPE,
    INDEX_ROUTE,
    REVALIDATE,
    MirrorReplies,
    Reply,
    error_reply,
    missing_crate,
    missing_index,
)
from ghostcrate.cargo.names import CrateName, InvalidName, index_path, parse_index_path
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.registry import Registry
from ghostcrate.proxy.indexfile import body_etag
from ghostcrate.proxy.search import UpstreamSearch

#: Seconds `cargo search` waits for the upstream's results before showing private ones only.
SEARCH_TIMEOUT = 3.0


class MergedReplies:
    """The index and download routes of the appliance: the registry's names, then the mirror's."""

    def __init__(
        self,
        mirror: MirrorReplies,
        registry: Registry,
        upstream_search: UpstreamSearch,
        *,
        auth_required: bool = False,
    ) -> None:
        self.mirror = mirror
        self.registry = registry
        self.config = mirror.config
        if auth_required:  # cargo then sends its token with every request
            config = json.loads(mirror.config.body) | {"auth-required": True}
            body = json.dumps(config).encode()
            self.config = replace(mirror.config, body=body, etag=body_etag(body))
        self._upstream_search = upstream_search

    def absent(self, route: str, target: str) -> Reply:
        """What a private crate's route answers a reader who may not see it: what it would
        answer if the crate did not exist (a reserved name's, or the mirror's words)."""
        parts = target.split("/")
        if route == INDEX_ROUTE:
            name = parts[-1]
            if self.registry.reserved_by_pattern(name):
                return _unpublished(name)
            return missing_index(name)
        name, version = parts[4], parts[5]
        if self.registry.reserved_by_pattern(name):
            return _not_published(name, version)
        return missing_crate(name)

    def is_private(self, route: str, target: str) -> bool | None:
        """Whether a request for an index file or download is about a private name.

        None for config.json, which is neither.
        """
        if route == INDEX_ROUTE:
            name = target.rpartition("/")[2]
        elif route == DOWNLOAD_ROUTE:
            name = target.split("/")[4]
        else:
            return None
        return self.registry.reserved(name)

    async def search(
        self, query: str, per_page: int, *, include_private: bool = True
    ) -> dict[str, object]:
        """`cargo search`: private hits first, then the upstream's that are not private names.

        The upstream is given `SEARCH_TIMEOUT` seconds; without its answer (or offline),
        only private hits are shown.
        """
        await self.registry.sync()
        hits: list[dict[str, str]] = []
        total = 0
        if include_private:
            hits, total = await self.registry.crates.search(query, per_page)
        if len(hits) < per_page:
            found = await self._upstream_search.search(query, per_page, SEARCH_TIMEOUT)
            if found is not None:
                public = [hit for hit in found[0] if not self.registry.reserved(hit["name"])]
                hits += public[: per_page - len(hits)]
                total += found[1]
        return {"crates": hits, "meta": {"total": total}}

    async def index_file(self, path: str, *, renew_ahead: bool = False) -> Reply:
        registry = self.registry
        await registry.sync()
        try:
            name = parse_index_path(path)
        except InvalidName:
            return await self.mirror.index_file(path)  # its 404, worded as the mirror words it
        if not registry.reserved(name.value):
            return await self.mirror.index_file(path, renew_ahead=renew_ahead)
        found = await registry.crates.index_body(name.value)
        if found is None:
            return _unpublished(name.value)
        return Reply(
            200,
            INDEX_CONTENT_TYPE,
            found.body,
            etag=body_etag(found.body),
            last_modified=formatdate(found.changed_at, usegmt=True),
            cache_control=REVALIDATE,
            # Kept until a change to this crate makes every worker forget it.
            keep_for=math.inf,
            private=True,
        )

    async def download(self, name: str, version: str) -> Reply:
        registry = self.registry
        await registry.sync()
        if not registry.reserved(name):
            return await self.mirror.download(name, version)
        path = await registry.crate_file(name, version)
        if path is None:
            return _not_published(name, version)
        return Reply(
            200,
            CRATE_CONTENT_TYPE,
            file=path,
            file_size=await asyncio.get_running_loop().run_in_executor(None, os.path.getsize, path),
            cache_control=IMMUTABLE,
            keep_for=math.inf,
            private=True,
        )

    async def upstream_versions(self, name: str) -> list[tuple[str, bool]] | None:
        """(version, yanked) that the mirror offers for `name`; None if the upstream has none."""
        try:
            path = index_path(CrateName(name))
        except InvalidName:
            return None
        reply = await self.mirror.index_file(path)
        if reply.status in (404, 410, 451):
            return None
        if reply.status != 200:
            raise RegistryError(
                f"cannot check the upstream for crate `{name}` now ({reply.status}); "
                "try again when it answers",
                status=503,
            )
        versions = []
        for line in reply.body.splitlines():
            if line.strip():
                entry = json.loads(line)
                versions.append((str(entry["vers"]), bool(entry.get("yanked", False))))
        return versions


def _not_published(name: str, version: str) -> Reply:
    missing = error_reply(404, f"crate {name}@{version} is not published here")
    return replace(missing, keep_for=math.inf, private=True)


def _unpublished(name: str) -> Reply:
    missing = error_reply(
        404, f"crate '{name}' does not exist: the name is private to this registry"
    )
    return replace(missing, keep_for=math.inf, private=True)
