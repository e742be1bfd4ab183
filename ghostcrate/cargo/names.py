"""Crate names, versions and sparse-index paths, validated at the edge.

Rules follow the Cargo Book (registry-index.md, "Index files") and crates.io's
name rules: ASCII alphanumerics, `-` and `_`, starting with a letter, at most
64 characters; the index path uses the lowercased name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# SemVer 2.0.0 (semver.org's suggested expression, without named groups).
_VERSION = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_CHECKSUM = re.compile(r"[0-9a-f]{64}")


class InvalidName(ValueError):
    """Not a crate name cargo could ask for."""


@dataclass(frozen=True)
class CrateName:
    """A crate name as written; equality and hashing use the lowercase form."""

    value: str

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.value):
            raise InvalidName(
                f"invalid crate name {self.value!r}: use ASCII letters, digits, '-' and '_', "
                f"starting with a letter, at most {MAX_NAME_LENGTH} characters"
            )

    @property
    def lower(self) -> str:
        """The form used in index paths and cache keys."""
        return self.value.lower()

    @property
    def canonical(self) -> str:
        """The collision key: lowercase, `-` equal to `_`."""
        return self.value.lower().replace("-", "_")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CrateName) and other.lower == self.lower

    def __hash__(self) -> int:
        return hash(self.lower)

    def __str__(self) -> str:
        return self.value


def index_prefix(name: str) -> str:
    """The directory part of an index path, in the case given (cargo's `{prefix}`)."""
    if len(name) <= 2:
        return str(len(name))
    if len(name) == 3:
        return f"3/{name[0]}"
    return f"{name[:2]}/{name[2:4]}"


def index_path(name: CrateName) -> str:
    """The sparse-index path of a crate, relative to the index root."""
    return f"{index_prefix(name.lower)}/{name.lower}"


def parse_index_path(path: str) -> CrateName:
    """The crate an index path names; `InvalidName` unless it is exactly that crate's path."""
    name = CrateName(path.rpartition("/")[2])
    if index_path(name) != path:
        raise InvalidName(f"{path!r} is not a sparse-index path")
    return name


def is_version(text: str) -> bool:
    """Whether `text` is a SemVer 2.0.0 version, as every crate version is."""
    return _VERSION.fullmatch(text) is not None


def is_checksum(text: str) -> bool:
    """Whether `text` is a lowercase hex sha256, as an index entry's `cksum` is."""
    return _CHECKSUM.fullmatch(text) is not None
