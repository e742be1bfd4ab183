"""Private crates in bundles: which versions an export carries, and how an import
registers them. The glue between the bundle and the registry, which know nothing
of each other."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghostcrate.private.carry import CarriedVersion, read_carried
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.registry import Registry
from ghostcrate.private.tokens import canonical
from ghostcrate.proxy.bundle import BundleError, Carried, ImportReport, Selection, Staged

#: What an import did to the registry: the versions it registered, and how many were here.
PrivateImport = tuple[list[CarriedVersion], int]


async def private_part(
    registry: Registry, selection: Selection
) -> tuple[list[tuple[CarriedVersion, Path]], int]:
    """The private versions an export carries, each with its `.crate`, and how many
    `--since` left out.

    With lock files, only the versions they lock (from any registry: a private crate
    is locked as a crates.io one or as the registry's). With `--since BUNDLE`, not
    those whose `.crate` that bundle carried; with `--since DATE`, not those
    published before it.
    """
    versions = await registry.crates.carried_versions()
    if selection.locked_anywhere is not None:
        wanted = {(canonical(p.name), p.version) for p in selection.locked_anywhere}
        versions = [v for v in versions if (canonical(v.name), v.vers) in wanted]
    chosen: list[tuple[CarriedVersion, Path]] = []
    for version in versions:
        if _carried_before(version, selection):
            continue
        path = await registry.blobs.find(version.cksum)
        if path is None:
            raise BundleError(
                f"private crate {version}: its .crate file {registry.blobs.path(version.cksum)} "
                "is missing (and not in the bucket); nothing was exported"
            )
        chosen.append((version, path))
    return chosen, len(versions) - len(chosen)


def _carried_before(version: CarriedVersion, selection: Selection) -> bool:
    if selection.since_manifest is not None:
        previous = selection.since_manifest.get(version.crate_key)
        return previous is not None and previous.sha256 == version.cksum
    since = selection.since_time
    return since is not None and version.published_at < since.timestamp()


def version_files(version: CarriedVersion, crate: Path) -> list[Carried]:
    """The bundle's two files for a version: its `.crate`, and its record."""
    return [Carried(version.crate_key, crate), Carried(version.record_key, version.record())]


async def import_private(
    registry: Registry, staged: Staged, bundle: Path
) -> tuple[ImportReport, PrivateImport]:
    """Check the carried private versions against each other and the registry, then add
    the bundle's mirror files, then register the versions. Raises `BundleError`."""
    loop = asyncio.get_running_loop()
    try:
        carried = await loop.run_in_executor(None, read_carried, staged.carried)
        await registry.crates.new_of([version for version, _ in carried])
    except RegistryError as error:
        raise BundleError(f"{bundle}: {error.detail}; nothing was imported") from None
    report = await staged.publish()
    try:
        return report, await registry.add_carried(carried)
    except RegistryError as error:  # e.g. a clashing publish here since the check
        raise BundleError(
            f"{bundle}: {error.detail}; its mirror files were added, no private crate "
            "was registered"
        ) from None
