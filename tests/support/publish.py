"""What `cargo publish` sends for a test crate: its metadata JSON and the framed body.

Field for field as cargo's `NewCrate` (cargo's `crates-io` crate): a renamed dependency
carries the real package in `name` and the alias in `explicit_name_in_toml`, and
requirements are normalised (`0.1` becomes `^0.1`).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable

from tests.support.crates import CrateSpec, Dep, normalize_req


def dep_metadata(dep: Dep) -> dict[str, object]:
    """One entry of `deps` in the publish metadata."""
    return {
        "optional": dep.optional,
        "default_features": dep.default_features,
        "name": dep.real_name,
        "features": list(dep.features),
        "version_req": normalize_req(dep.req),
        "target": dep.target,
        "kind": dep.kind,
        "registry": None,
        "explicit_name_in_toml": dep.name if dep.package is not None else None,
    }


def publish_metadata(spec: CrateSpec) -> dict[str, object]:
    """The JSON object cargo sends for `spec`."""
    return {
        "name": spec.name,
        "vers": spec.version,
        "deps": [dep_metadata(d) for d in spec.deps],
        "features": spec.features,
        "authors": [],
        "description": "GhostCrate test crate",
        "documentation": None,
        "homepage": None,
        "readme": None,
        "readme_file": None,
        "keywords": [],
        "categories": [],
        "license": "MIT",
        "license_file": None,
        "repository": None,
        "badges": {},
        "links": spec.links,
        "rust_version": spec.rust_version,
    }


def publish_body(metadata: bytes, crate: bytes) -> bytes:
    """cargo's framing: u32 LE length + JSON, u32 LE length + `.crate`."""
    return b"".join(
        [len(metadata).to_bytes(4, "little"), metadata, len(crate).to_bytes(4, "little"), crate]
    )


def metadata_bytes(spec: CrateSpec) -> bytes:
    """The metadata JSON as cargo serialises it."""
    return json.dumps(publish_metadata(spec)).encode()


def gzip_bytes(data: bytes) -> bytes:
    """`data` gzip-compressed, deterministically."""
    return gzip.compress(data, mtime=0)


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An uncompressed tar of `members` (content ignored for non-regular members)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, content in members:
            if info.isreg():
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.addfile(info)
    return raw.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "") -> tarfile.TarInfo:
    """A tar header for `name` of type `kind`."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info
