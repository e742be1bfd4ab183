"""`cargo publish`: from the request body to a stored, recorded version, or nothing at all.

Every check runs before anything is written. Then the `.crate` is stored
durably (and in the bucket), and only then is the version recorded in the
database, in one transaction: a crash before the commit leaves at most an
unreferenced file, which start-up removes (`Registry.recover`); a crash after
it leaves a complete version. No index entry is ever without its file.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Protocol

from ghostcrate.cargo.semver import InvalidVersion, Version, VersionReq
from ghostcrate.config.model import PrivateSettings
from ghostcrate.private.archive import check_archive
from ghostcrate.private.blobs import BlobStore
from ghostcrate.private.crates import (
    ABOUT_FIELDS,
    Crates,
    NewVersion,
    looks_like,
    same_crate,
)
from ghostcrate.private.errors import Conflict, PublishRejected, RegistryError
from ghostcrate.private.lookalikes import lookalike
from ghostcrate.private.metadata import DepMeta, PublishMeta, index_entry, parse_metadata
from ghostcrate.private.rights import PUBLISH_NEW, PUBLISH_UPDATE, decide
from ghostcrate.private.tokens import Actor, canonical, matches
from ghostcrate.private.upload import split_body

CRATES_IO_INDEX = "https://github.com/rust-lang/crates.io-index"
#: What the publish answer says when all went well (crates.io's shape).
NO_WARNINGS: dict[str, list[str]] = {"invalid_categories": [], "invalid_badges": [], "other": []}


class Upstream(Protocol):
    """What publishing asks of the mirror: which versions the upstream offers for a name."""

    async def upstream_versions(self, name: str) -> list[tuple[str, bool]] | None:
        """(version, yanked) of the upstream's crate `name`, or None if it has none.

        Raises `RegistryError` (503) when the upstream cannot tell now.
        """
        ...


class Publisher:
    def __init__(
        self,
        settings: PrivateSettings,
        crates: Crates,
        blobs: BlobStore,
        private_versions: Callable[[str], Awaitable[list[tuple[str, bool]] | None]],
        own_index: str,
    ) -> None:
        #: This registry's index URL, as cargo names it in publish metadata.
        self._own_index = _url_key(own_index)
        self._settings = settings
        self._crates = crates
        self._blobs = blobs
        self._private_versions = private_versions

    async def publish(
        self, body: bytes, actor: Actor, upstream: Upstream
    ) -> tuple[int, NewVersion]:
        """Check and store a publish; the seq of its change, and what was published."""
        settings = self._settings
        raw, data = split_body(
            body, max_metadata=settings.max_metadata, max_crate=settings.max_upload
        )
        meta = parse_metadata(raw)
        # Inflating up to `max_unpacked` is CPU work: off the event loop, other requests go on.
        await asyncio.get_running_loop().run_in_executor(
            None,
            partial(
                check_archive,
                data,
                meta,
                max_unpacked=settings.max_unpacked,
                max_members=settings.max_files,
            ),
        )
        await self._check_name(meta, actor, upstream)
        for dep in meta.deps:
            await self._check_dependency(meta, dep, upstream)
        cksum = hashlib.sha256(data).hexdigest()
        new = NewVersion(
            name=meta.name,
            version=meta.vers,
            cksum=cksum,
            size=len(data),
            entry=index_entry(one_namespace(meta, self._own_index), cksum),
            keywords=tuple(meta.keywords),
            license=meta.license,
            about={field: getattr(meta, field) for field in ABOUT_FIELDS},
        )
        await self._blobs.put(cksum, data)
        try:
            return await self._crates.add_version(new, actor), new
        except BaseException:
            # Refused at the last moment (a concurrent publish took the version or the
            # name): the file goes unless another version, with the same bytes, has it.
            if cksum not in await self._crates.cksums():
                await self._blobs.discard(cksum)
            raise

    async def _check_name(self, meta: PublishMeta, actor: Actor, upstream: Upstream) -> None:
        standing = await self._crates.standing(actor, meta.name)
        if standing.exists:
            decide(actor, PUBLISH_UPDATE, standing).require()
            crate = await self._crates.crate(meta.name)
            if crate is not None and crate["name"] != meta.name:
                raise Conflict(same_crate(meta.name, crate["name"]))
            return
        decide(actor, PUBLISH_NEW, standing).require()
        taken = lookalike(meta.name, (await self._crates.names()).values())
        if taken is not None:
            raise Conflict(looks_like(meta.name, taken))
        settings = self._settings
        if matches(settings.reserved, meta.name) or matches(settings.allow_shadowing, meta.name):
            return
        for spelling in _spellings(meta.name):
            if await upstream.upstream_versions(spelling) is not None:
                raise RegistryError(
                    f"crate `{spelling}` exists upstream, so `{meta.name}` cannot be published "
                    "here: a private crate must not shadow a public one (dependency confusion). "
                    "Choose another name, or list it in [private] allow_shadowing",
                    status=409,
                )

    async def _check_dependency(self, meta: PublishMeta, dep: DepMeta, upstream: Upstream) -> None:
        if not _in_namespace(dep, self._own_index):
            return  # another registry's crate: cargo resolves it there
        if canonical(dep.name) == canonical(meta.name):
            return  # a dev-dependency on itself (cargo allows it for doc tests)
        versions = await self._private_versions(dep.name)
        where = "this registry"
        if versions is None:
            if matches(self._settings.reserved, dep.name):
                versions = None
            else:
                versions = await upstream.upstream_versions(dep.name)
                where = "this registry or upstream"
        if versions is None:
            raise PublishRejected(
                f"dependency `{dep.name}` of {meta.name} does not exist in {where}: "
                "publish it first"
            )
        try:
            req = VersionReq.parse(dep.version_req)
        except InvalidVersion as error:
            raise PublishRejected(f"dependency `{dep.name}`: {error}") from None
        for number, yanked in versions:
            try:
                if not yanked and req.matches(Version.parse(number)):
                    return
            except InvalidVersion:
                continue
        raise PublishRejected(
            f"no version of dependency `{dep.name}` matches `{dep.version_req}` in {where}"
        )


def one_namespace(meta: PublishMeta, own_index: str) -> PublishMeta:
    """`meta` with every dependency in the merged namespace recorded as a crates.io one.

    cargo sends `registry: null` for a dependency written with `registry = "ghostcrate"`
    and the crates.io index URL for a plain one. Both are the same crate here; recorded
    as crates.io's, a dependency resolves through the replaced crates-io source whichever
    way the consumer named the crate that needs it, so a workspace that mixes the two
    styles gets one copy of it, not one per source.
    """
    deps = tuple(
        replace(dep, registry=CRATES_IO_INDEX) if _in_namespace(dep, own_index) else dep
        for dep in meta.deps
    )
    return replace(meta, deps=deps)


def _in_namespace(dep: DepMeta, own_index: str) -> bool:
    return dep.registry is None or _url_key(dep.registry) in (own_index, CRATES_IO_INDEX)


def _url_key(url: str) -> str:
    return url.removeprefix("sparse+").rstrip("/")


def _spellings(name: str) -> list[str]:
    """`name`, and the same name with all of its `-`/`_` one way and the other."""
    return list(dict.fromkeys([name, name.replace("-", "_"), name.replace("_", "-")]))
