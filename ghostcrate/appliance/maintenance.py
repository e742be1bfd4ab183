"""The maintenance commands (`verify`, `gc`, `warm`, `export`, `import`): open the
configured tiers (and the registry), run, print a summary."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from ghostcrate.appliance import exitcodes
from ghostcrate.appliance.airgap import import_private, private_part, version_files
from ghostcrate.appliance.progress import Progress
from ghostcrate.cache import CacheMetrics
from ghostcrate.cache.setup import open_cache
from ghostcrate.config import Settings
from ghostcrate.private.registry import Registry
from ghostcrate.proxy.bundle import Selection, export_bundle, stage_bundle
from ghostcrate.proxy.maintenance import gc, verification_items, verify
from ghostcrate.proxy.metrics import ProxyMetrics
from ghostcrate.proxy.setup import open_mirror
from ghostcrate.proxy.warm import Locked, Spec, Warmer, read_lockfile


async def run_verify(settings: Settings) -> int:
    async with open_cache(settings, CacheMetrics.create()) as cache:
        items = await verification_items(cache)
        progress = Progress("verify", len(items))
        report = await verify(cache, items, progress.advance)
    print(
        f"verified {report.checked} cached files: {len(report.removed)} failed and were removed, "
        f"{len(report.unverifiable)} could not be checked (no cached index entry)"
    )
    for item in report.removed:
        print(f"removed {item}")
    for item in report.unverifiable:
        print(f"unverifiable {item}", file=sys.stderr)
    return exitcodes.FOUND_BAD if report.removed else exitcodes.OK


async def run_gc(settings: Settings) -> int:
    async with open_cache(settings, CacheMetrics.create()) as cache:
        report = await gc(cache)
        usage = cache.disk.usage
    print(
        f"gc: evicted {report.evicted_bytes} bytes, removed {report.removed_temporaries} "
        f"abandoned temporary files, {len(report.removed_orphans)} orphans and "
        f"{report.removed_directories} empty directories; the disk tier holds {usage} bytes "
        f"(limit {settings.cache.disk_max_bytes})"
    )
    for key in report.removed_orphans:
        print(f"removed orphan {key}")
    return exitcodes.OK


async def run_warm(
    settings: Settings, lockfiles: list[Path], specs: list[Spec], concurrency: int
) -> int:
    locked: list[Locked] = []
    for path in lockfiles:
        packages, others = read_lockfile(path)
        locked += packages
        print(f"{path}: {len(packages)} crates.io packages ({others} from elsewhere, skipped)")
    registry = CollectorRegistry()
    async with (
        open_cache(settings, CacheMetrics.create(registry)) as cache,
        open_mirror(settings.upstream, cache, ProxyMetrics.create(registry)) as mirror,
        Registry.open(settings) as private,
    ):
        progress = Progress("warm", 0)
        # Private and reserved names are never asked of the upstream, warm or not.
        warmer = Warmer(mirror, concurrency, progress.update, never_upstream=private.reserved)
        report = await warmer.run(locked, specs)
    skipped = f", {len(report.skipped)} private left alone" if report.skipped else ""
    print(
        f"warm: {len(report.fetched)} fetched, {len(report.already_cached)} already cached, "
        f"{len(report.failed)} failed{skipped}"
    )
    for item, reason in report.failed:
        print(f"failed {item}: {reason}")
    return exitcodes.FAILED if report.failed else exitcodes.OK


async def run_export(
    settings: Settings, output: Path, selection: Selection, *, private: bool = False
) -> int:
    since = selection.since_label
    async with (
        open_cache(settings, CacheMetrics.create()) as cache,
        Registry.open(settings, cache.shared) as registry,
    ):
        locked = selection.locked
        if locked is not None:  # a private (or reserved) name is never in the mirror's cache
            locked = [p for p in locked if not registry.reserved(p.name)]
        carried, private_left_out = await private_part(registry, selection) if private else ([], 0)
        checked, written = Progress("export: hashed", 0), Progress("export: written", 0)
        report = await export_bundle(
            cache,
            output,
            since_manifest=selection.since_manifest,
            since_time=selection.since_time,
            locked=locked,
            carried=[file for version in carried for file in version_files(*version)],
            upstream=settings.upstream.index,
            on_checked=checked.update,
            on_written=written.update,
        )
        unexported = sum(registry.owns(p.name) for p in selection.locked_anywhere or ())
    print(
        f"exported {report.files} files ({report.bytes} bytes) to {output}; "
        f"{report.skipped_unchanged} unchanged since {since} left out"
        if since
        else f"exported {report.files} files ({report.bytes} bytes) to {output}"
    )
    if private:
        print(
            f"private crates: {len(carried)} versions carried"
            + (f"; {private_left_out} carried by {since} left out" if since else "")
        )
    elif unexported:
        print(
            f"note: {unexported} locked packages are private crates, left out (add --private "
            "to carry them)",
            file=sys.stderr,
        )
    return exitcodes.OK


async def run_import(settings: Settings, bundle: Path) -> int:
    async with open_cache(settings, CacheMetrics.create()) as cache:
        progress = Progress("import", 0)
        async with stage_bundle(
            cache, bundle, settings.data_dir / "staging", on_progress=progress.update
        ) as staged:
            if not staged.carried:
                report, private = await staged.publish(), None
            else:
                async with Registry.open(settings, cache.shared) as registry:
                    report, private = await import_private(registry, staged, bundle)
    print(
        f"imported {bundle}: {len(report.added)} files added, {report.already_present} already "
        f"present, {len(report.kept_newer_index)} newer cached index files kept"
    )
    for key in report.added:
        print(f"added {key}")
    if private is not None:
        registered, already_here = private
        print(f"private crates: {len(registered)} versions registered, {already_here} already here")
        for version in registered:
            print(f"registered {version}")
    return exitcodes.OK
