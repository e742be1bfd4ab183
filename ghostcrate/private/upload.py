"""The framing of `cargo publish`'s request body (registry-web-api.md, "Publish").

The body is a u32 little-endian length, that many bytes of JSON metadata, another
u32 little-endian length, and that many bytes of `.crate`. Nothing here parses
the JSON or opens the archive; it only checks that the lengths tell the truth.
"""

from __future__ import annotations

from ghostcrate.private.errors import PublishRejected

_LENGTH = 4
MIB = 1 << 20
KIB = 1 << 10


def split_body(body: bytes, *, max_metadata: int = 10 * MIB, max_crate: int) -> tuple[bytes, bytes]:
    """The metadata JSON and the `.crate` bytes of a publish body, each within its limit."""
    metadata_length = _length_at(body, 0, "metadata")
    if metadata_length > max_metadata:
        raise PublishRejected(
            f"the publish metadata is {human_size(metadata_length)}, more than this registry's "
            f"limit of {human_size(max_metadata)} ([private] max_metadata); shorten the "
            "package description or README",
            status=413,
        )
    crate_at = _LENGTH + metadata_length
    if crate_at > len(body):
        raise PublishRejected(
            f"the publish request is truncated: it announces {metadata_length} bytes of metadata "
            f"but only {len(body) - _LENGTH} bytes follow; retry the upload"
        )
    crate_length = _length_at(body, crate_at, ".crate")
    if crate_length > max_crate:
        raise PublishRejected(
            f"the .crate file is {human_size(crate_length)}, more than this registry's limit of "
            f"{human_size(max_crate)}; leave large files out of the package "
            "(`exclude` or `include` in Cargo.toml)",
            status=413,
        )
    if crate_length == 0:
        raise PublishRejected("the publish request holds an empty .crate file; run cargo publish")
    end = crate_at + _LENGTH + crate_length
    if end > len(body):
        raise PublishRejected(
            f"the publish request is truncated: it announces a {crate_length}-byte .crate but "
            f"only {len(body) - crate_at - _LENGTH} bytes follow; retry the upload"
        )
    if end < len(body):
        raise PublishRejected(
            f"the publish request has {len(body) - end} bytes after its .crate file; "
            "it was not made by cargo publish"
        )
    return body[_LENGTH:crate_at], body[crate_at + _LENGTH : end]


def _length_at(body: bytes, offset: int, what: str) -> int:
    if len(body) < offset + _LENGTH:
        raise PublishRejected(
            f"the publish request is truncated before the length of its {what}; retry the upload"
        )
    return int.from_bytes(body[offset : offset + _LENGTH], "little")


def human_size(size: int) -> str:
    """`size` as a person reads it: `10 MB`, `1.5 MB`, `512 kB`, `300 bytes` (binary units)."""
    for unit, scale in (("MB", MIB), ("kB", KIB)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
