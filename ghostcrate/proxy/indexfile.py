"""An index file as the mirror stores it: the upstream's bytes plus what we know about them.

On disk it is one file, a JSON header line then the body, so the body and its
validators are always replaced together by one atomic rename. The file's
modification time is when the upstream last confirmed it. The header's ETag
is the body's hash, so a file a crash left short or empty fails to decode
(and is fetched again) instead of being served: index files are written
without waiting for the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Any

from ghostcrate.cargo.names import CrateName, is_checksum, is_version
from ghostcrate.proxy.errors import UpstreamError


@dataclass(frozen=True)
class IndexFile:
    body: bytes
    #: When the upstream last confirmed this body (epoch seconds).
    checked_at: float
    #: Our validators, given to clients.
    etag: str
    last_modified: str
    #: The upstream's validators, sent back on revalidation.
    upstream_etag: str | None = None
    upstream_last_modified: str | None = None
    _entries: dict[str, dict[str, Any]] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_upstream(
        cls,
        body: bytes,
        now: float,
        upstream_etag: str | None,
        upstream_last_modified: str | None,
        previous: IndexFile | None = None,
    ) -> IndexFile:
        etag = body_etag(body)
        if previous is not None and previous.etag == etag:
            last_modified = previous.last_modified
        else:
            last_modified = upstream_last_modified or formatdate(now, usegmt=True)
        return cls(body, now, etag, last_modified, upstream_etag, upstream_last_modified)

    def checked(self, now: float) -> IndexFile:
        return replace(self, checked_at=now)

    def encode(self) -> bytes:
        header = {
            "etag": self.etag,
            "last_modified": self.last_modified,
            "upstream_etag": self.upstream_etag,
            "upstream_last_modified": self.upstream_last_modified,
        }
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes, mtime: float) -> IndexFile:
        header_line, _, body = data.partition(b"\n")
        header = json.loads(header_line)
        if header["etag"] != body_etag(body):
            raise ValueError("the body does not match its ETag: damaged")
        return cls(
            body,
            mtime,
            header["etag"],
            header["last_modified"],
            header.get("upstream_etag"),
            header.get("upstream_last_modified"),
        )

    def restricted_to(self, versions: set[str]) -> bytes:
        """The body with only the lines of `versions`, byte for byte."""
        kept = []
        for line in self.body.splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("vers") in versions:
                kept.append(line)
        return b"".join(kept)

    def versions(self) -> set[str]:
        return set(self._parsed())

    def entries(self) -> Mapping[str, dict[str, Any]]:
        """Every readable entry, by version."""
        return self._parsed()

    def entry(self, version: str) -> dict[str, Any] | None:
        """The index entry of one version, or None.

        Only lines that contain the version in quotes are parsed (a download looks
        up one version of a file that may list hundreds); the whole file only if
        none of them is the entry.
        """
        if self._entries is None:
            needle = json.dumps(version).encode()
            found = None
            for line in self.body.splitlines():
                if needle in line:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if isinstance(record, dict) and record.get("vers") == version:
                            found = record  # the last line for a version wins, as in _parsed
            if found is not None:
                return found
        return self._parsed().get(version)

    def _parsed(self) -> dict[str, dict[str, Any]]:
        """Entries by version, parsed once per object."""
        if self._entries is None:
            entries = {}
            for line in _lines(self.body):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # cargo skips lines it cannot read; so do we
                if isinstance(record, dict) and isinstance(record.get("vers"), str):
                    entries[record["vers"]] = record
            object.__setattr__(self, "_entries", entries)
        assert self._entries is not None
        return self._entries


def check_index_body(name: CrateName, body: bytes) -> None:
    """Refuse an index file that cannot be what the upstream meant to send.

    Every line must be a JSON object naming this crate with a SemVer `vers`
    and a sha256 `cksum`: a body damaged in transit or by a broken upstream
    is refused here rather than cached and handed to every client.
    """
    for number, line in enumerate(_lines(body), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("name"), str)
            or record["name"].lower() != name.lower
            or not isinstance(record.get("vers"), str)
            or not is_version(record["vers"])
            or not isinstance(record.get("cksum"), str)
            or not is_checksum(record["cksum"])
        ):
            raise UpstreamError(
                f"the upstream sent a damaged index file for {name}: "
                f"line {number} is not an index entry of this crate"
            )


def _lines(body: bytes) -> Sequence[str | bytes]:
    """The lines of an index file, as cargo splits them (at `\\n`).

    Decoded once as a whole: `json.loads` of a `str` line takes half the time of
    the same line as `bytes`, which it would decode itself. A body that is not
    UTF-8 is split as bytes, so that only its bad lines fail.
    """
    try:
        return body.decode().split("\n")
    except UnicodeDecodeError:
        return body.split(b"\n")


def parse_upstream_config(body: bytes) -> dict[str, Any]:
    """The upstream's config.json, which must at least say where crates are downloaded."""
    try:
        config = json.loads(body)
    except ValueError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("dl"), str):
        raise UpstreamError("the upstream's config.json has no download URL ('dl')")
    return config


def body_etag(body: bytes) -> str:
    """A strong ETag derived from the content, the same on every node."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
