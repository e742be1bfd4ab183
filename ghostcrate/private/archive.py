"""The `.crate` half of a publish: a gzip'd tar, opened without trusting it.

Like crates.io's `crates_io_tarball`, every member must lie under `{name}-{version}/`
and links are refused; here only regular files and directories pass at all. The
gzip stream is inflated in bounded chunks and counted as it goes, so a bomb is
stopped at the limit, never inflated first. Cargo.toml is read from the archive
and must agree with the publish metadata.
"""

from __future__ import annotations

import io
import tarfile
import tomllib
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ghostcrate.private.errors import PublishRejected
from ghostcrate.private.metadata import PublishMeta
from ghostcrate.private.upload import human_size

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
MAX_MANIFEST = 4 << 20
# The ratio limit applies above this size: a tiny crate is mostly tar padding and headers,
# which compress better than 200:1 (a 10 kB empty tar gzips to 45 bytes).
RATIO_FLOOR = 1 << 20
MAX_TAR_HEADER = 64 * 1024  # a pax or GNU long-name header; real ones are a few hundred bytes
_EXTENDED_HEADERS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
_REFUSED_TYPES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a device",
    tarfile.BLKTYPE: "a device",
    tarfile.FIFOTYPE: "a FIFO",
}
_DEPENDENCY_TABLES = ("dependencies", "dev-dependencies", "build-dependencies")


@dataclass(frozen=True)
class Manifest:
    """What the archive's Cargo.toml says about the package."""

    name: str
    version: str
    links: str | None
    rust_version: str | None
    dependencies: tuple[str, ...]  # every dependency key (the alias when renamed), sorted


def check_archive(
    data: bytes,
    meta: PublishMeta,
    *,
    max_unpacked: int = 512 * 2**20,
    max_members: int = 10_000,
    max_ratio: int = 200,
) -> Manifest:
    """Check a `.crate` against its publish metadata and return its Cargo.toml's facts."""
    if not data.startswith(_GZIP_MAGIC):
        raise PublishRejected("the .crate file is not gzip-compressed; make it with cargo package")
    limit = min(max_unpacked, max(max_ratio * len(data), RATIO_FLOOR))
    inflater = _Inflater(data, limit, ratio_bound=limit < max_unpacked, max_ratio=max_ratio)
    top = f"{meta.name}-{meta.vers}"
    try:
        manifest_text = _walk(io.BufferedReader(inflater, _CHUNK), top, max_members)
        inflater.finish()
    except (tarfile.TarError, EOFError, ValueError, OverflowError) as error:
        raise PublishRejected(
            f"the .crate file is not a valid tar archive ({error}); run cargo package again"
        ) from None
    if manifest_text is None:
        raise PublishRejected(f"the .crate file has no {top}/Cargo.toml")
    manifest = _parse_manifest(manifest_text)
    _check_agreement(manifest, meta)
    return manifest


def _not_gzip() -> PublishRejected:
    return PublishRejected(
        "the .crate file is not a valid gzip stream (damaged or truncated); run cargo package again"
    )


class _Inflater(io.RawIOBase):
    """The gzip stream's output, produced in bounded chunks and refused past `limit` bytes."""

    def __init__(self, data: bytes, limit: int, *, ratio_bound: bool, max_ratio: int) -> None:
        super().__init__()
        self._input = memoryview(data)
        self._taken = 0
        self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._limit = limit
        self._ratio_bound = ratio_bound
        self._max_ratio = max_ratio
        self._produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._inflate(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def _inflate(self, size: int) -> bytes:
        while not self._zlib.eof:
            pending: bytes | memoryview = self._zlib.unconsumed_tail
            if not pending:
                pending = self._input[self._taken : self._taken + _CHUNK]
                self._taken += len(pending)
            try:
                chunk = self._zlib.decompress(pending, min(size, _CHUNK))
            except zlib.error:
                raise _not_gzip() from None
            self._count(len(chunk))
            if chunk:
                return chunk
            if not pending:
                raise _not_gzip()
        return b""

    def _count(self, size: int) -> None:
        self._produced += size
        if self._produced <= self._limit:
            return
        if self._ratio_bound:
            reason = f"more than {self._max_ratio} times its compressed size"
        else:
            reason = f"more than this registry's limit of {human_size(self._limit)}"
        raise PublishRejected(
            f"the .crate file unpacks to {reason}; leave large or generated files out of the "
            "package (`exclude` or `include` in Cargo.toml)",
            status=413,
        )

    def finish(self) -> None:
        """Inflate what the tar reader left (padding), then require a clean end of stream."""
        while self._inflate(_CHUNK):
            pass
        if self._zlib.unused_data or self._taken < len(self._input):
            raise PublishRejected(
                "the .crate file has data after its gzip stream; run cargo package again"
            )


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses an oversized pax or long-name header before tarfile reads it into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _BoundedTarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED_HEADERS and info.size > MAX_TAR_HEADER:
            raise PublishRejected(
                f"the .crate file has a {human_size(info.size)} tar extension header; "
                "run cargo package again"
            )
        return info


def _walk(stream: io.BufferedReader, top: str, max_members: int) -> str | None:
    """Check every member's path and type; the text of `{top}/Cargo.toml`, if there is one."""
    seen: set[str] = set()
    manifest: str | None = None
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as tar:
        for member in tar:
            if len(seen) >= max_members:
                raise PublishRejected(
                    f"the .crate file has more than {max_members} entries; "
                    "leave generated files out of the package",
                    status=413,
                )
            _check_member(member, top)
            if member.name in seen:
                raise PublishRejected(f"the .crate file lists {member.name!r} twice")
            seen.add(member.name)
            if member.name == f"{top}/Cargo.toml" and member.isfile():
                manifest = _read_manifest(tar, member)
    return manifest


def _check_member(member: tarfile.TarInfo, top: str) -> None:
    path = member.name
    if member.type in _REFUSED_TYPES:
        raise PublishRejected(
            f"the .crate file entry {path!r} is {_REFUSED_TYPES[member.type]}; "
            "packages may hold only regular files and directories"
        )
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE) or member.sparse:
        raise PublishRejected(
            f"the .crate file entry {path!r} has an unsupported tar type; "
            "packages may hold only regular files and directories"
        )
    if path.startswith("/"):
        raise PublishRejected(f"the .crate file entry {path!r} is an absolute path")
    parts = path.split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts):
        raise PublishRejected(
            f"the .crate file entry {path!r} has an empty, '.', '..' or backslash path component"
        )
    if parts[0] != top or (len(parts) == 1 and not member.isdir()):
        raise PublishRejected(
            f"the .crate file entry {path!r} is outside {top}/; every file must lie under "
            "the directory named after the crate and version (case included)"
        )
    if len(parts) == 2 and parts[1].lower() == "cargo.toml" and parts[1] != "Cargo.toml":
        raise PublishRejected(
            f"the .crate file holds {path!r}; the manifest must be named exactly Cargo.toml"
        )


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    if member.size > MAX_MANIFEST:
        raise PublishRejected(
            f"Cargo.toml is {human_size(member.size)}; this registry reads at most "
            f"{human_size(MAX_MANIFEST)}",
            status=413,
        )
    handle = tar.extractfile(member)
    content = handle.read() if handle is not None else b""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishRejected("Cargo.toml in the .crate file is not UTF-8") from None


def _parse_manifest(text: str) -> Manifest:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PublishRejected(f"Cargo.toml in the .crate file is not valid TOML: {error}") from None
    except RecursionError:
        raise PublishRejected("Cargo.toml in the .crate file is nested too deeply") from None
    package = document.get("package", document.get("project"))
    if not isinstance(package, dict):
        raise PublishRejected("Cargo.toml in the .crate file has no [package] table")
    name, version = package.get("name"), package.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise PublishRejected(
            "Cargo.toml in the .crate file must give package.name and package.version as strings"
        )
    links, rust_version = package.get("links"), package.get("rust-version")
    if not isinstance(links, str | None) or not isinstance(rust_version, str | None):
        raise PublishRejected(
            "Cargo.toml in the .crate file must give package.links and package.rust-version "
            "as strings"
        )
    return Manifest(name, version, links, rust_version, _dependency_names(document))


def _dependency_names(document: dict[str, object]) -> tuple[str, ...]:
    tables = [document]
    targets = document.get("target")
    if isinstance(targets, dict):
        tables += [t for t in targets.values() if isinstance(t, dict)]
    names: set[str] = set()
    for table in tables:
        for key in _DEPENDENCY_TABLES:
            deps = table.get(key, table.get(key.replace("-", "_")))
            if isinstance(deps, dict):
                names.update(deps)
    return tuple(sorted(names))


def _check_agreement(manifest: Manifest, meta: PublishMeta) -> None:
    """Cargo.toml is what cargo builds with, so the index must not say otherwise."""
    disagreements = [
        f"{what} is {theirs!r} in Cargo.toml but {ours!r} in the publish metadata"
        for what, theirs, ours in (
            ("name", manifest.name, meta.name),
            ("version", manifest.version, meta.vers),
            ("links", manifest.links, meta.links),
        )
        if theirs != ours
    ]
    if (
        manifest.rust_version is not None
        and meta.rust_version is not None
        and manifest.rust_version != meta.rust_version
    ):
        disagreements.append(
            f"rust-version is {manifest.rust_version!r} in Cargo.toml "
            f"but {meta.rust_version!r} in the publish metadata"
        )
    if disagreements:
        raise PublishRejected(
            "the .crate file does not match its publish metadata: "
            + "; ".join(disagreements)
            + "; publish with cargo publish"
        )
