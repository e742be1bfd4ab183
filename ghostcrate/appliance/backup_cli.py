"""`ghostcrate backup` and `ghostcrate restore` as a person or a timer runs them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ghostcrate.appliance import exitcodes
from ghostcrate.appliance.backup import BackupError, create_backup, prune
from ghostcrate.appliance.restore import restore_backup, verify_backup
from ghostcrate.config import Settings


def run_backup(settings: Settings, args: argparse.Namespace, config_file: Path | None) -> int:
    if args.verify is not None:
        return _verify(args.verify)
    if args.keep is not None and not args.output.is_dir():
        print("ghostcrate backup: --keep needs --output to be a directory", file=sys.stderr)
        return exitcodes.USAGE
    try:
        written, manifest = create_backup(
            settings, args.output, config_file, with_cache=args.with_cache
        )
    except (BackupError, OSError) as error:
        print(f"ghostcrate backup: {error}", file=sys.stderr)
        return exitcodes.FAILED
    print(
        f"backed up {manifest.crates} private crates ({manifest.versions} versions), "
        f"{len(manifest.files)} files, to {written}",
        file=sys.stderr,
    )
    print(written)
    if args.keep is not None:
        for removed in prune(args.output, args.keep):
            print(f"removed the older backup {removed}", file=sys.stderr)
    return exitcodes.OK


def run_restore(settings: Settings, backup: Path) -> int:
    try:
        verified = restore_backup(backup, settings)
    except BackupError as error:
        print(f"ghostcrate restore: {error}", file=sys.stderr)
        return exitcodes.FAILED
    manifest = verified.manifest
    print(
        f"restored the backup of {manifest['created_at']} ({manifest['crates']} private "
        f"crates, {manifest['versions']} versions, {verified.files} files) into "
        f"{settings.data_dir}",
        file=sys.stderr,
    )
    if any(name.startswith("config/") for name in manifest["files"]):
        print(
            f"the backed-up configuration is in {settings.data_dir / 'restored-config'}",
            file=sys.stderr,
        )
    return exitcodes.OK


def _verify(path: Path) -> int:
    try:
        verified = verify_backup(path)
    except BackupError as error:
        print(f"ghostcrate backup: {path} failed verification: {error}", file=sys.stderr)
        return exitcodes.FAILED
    manifest = verified.manifest
    print(
        f"{path}: a good backup of {manifest['created_at']}: {manifest['crates']} private "
        f"crates, {manifest['versions']} versions, {verified.files} files, "
        f"{verified.bytes} bytes",
        file=sys.stderr,
    )
    return exitcodes.OK
