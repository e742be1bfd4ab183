"""Private crates across an air gap: the files a bundle carries for each version.

Each version travels as two files below `private/crates/NAME/`: its `.crate`
and a record (`NAME-VERSION.json`) with what the far side needs to register
it: the index entry as stored, checksum, size, yanked state, owners and
publisher by user name (never a token), and the crate's description. The
bundle checks both against its manifest; `read_carried` then checks that they
agree with each other before the registry is asked to add anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostcrate.cargo.names import CrateName, InvalidName, is_version
from ghostcrate.private.errors import RegistryError

PREFIX = "private/crates/"
_CRATE = ".crate"
_RECORD = ".json"
_ABOUT = ("description", "repository", "homepage", "documentation")


class CarryError(RegistryError):
    """A carried private version that cannot be registered; the message names it."""


@dataclass(frozen=True, slots=True)
class CarriedVersion:
    """One private version as a bundle carries it."""

    name: str
    vers: str
    cksum: str
    size: int
    #: The index entry as stored (JSON text; its `yanked` is not the truth, `yanked` is).
    entry: str
    yanked: bool
    owners: tuple[str, ...]
    published_by: str | None
    published_at: float
    license: str | None
    #: The crate's description, repository, homepage, documentation, and keywords.
    about: dict[str, str | None]
    keywords: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}@{self.vers}"

    @property
    def crate_key(self) -> str:
        return f"{PREFIX}{self.name}/{self.name}-{self.vers}{_CRATE}"

    @property
    def record_key(self) -> str:
        return f"{PREFIX}{self.name}/{self.name}-{self.vers}{_RECORD}"

    def record(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "vers": self.vers,
                "cksum": self.cksum,
                "size": self.size,
                "entry": self.entry,
                "yanked": self.yanked,
                "owners": list(self.owners),
                "published_by": self.published_by,
                "published_at": self.published_at,
                "license": self.license,
                "about": self.about,
                "keywords": list(self.keywords),
            },
            indent=1,
        ).encode()

    @classmethod
    def parse(cls, key: str, data: bytes) -> CarriedVersion:
        """The version a record describes, checked for sense (raises `CarryError`)."""
        try:
            raw = json.loads(data)
            carried = cls(
                name=_text(raw["name"]),
                vers=_text(raw["vers"]),
                cksum=_text(raw["cksum"]),
                size=int(raw["size"]),
                entry=_text(raw["entry"]),
                yanked=bool(raw["yanked"]),
                owners=tuple(_text(owner) for owner in raw["owners"]),
                published_by=None if raw["published_by"] is None else _text(raw["published_by"]),
                published_at=float(raw["published_at"]),
                license=None if raw["license"] is None else _text(raw["license"]),
                about={field: _optional_text(raw["about"].get(field)) for field in _ABOUT},
                keywords=tuple(_text(word) for word in raw["keywords"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CarryError(f"{key} is not a private version's record ({error})") from None
        try:
            CrateName(carried.name)
        except InvalidName as error:
            raise CarryError(f"{key}: {error}") from None
        if not is_version(carried.vers) or carried.record_key != key:
            raise CarryError(f"{key} describes {carried}, which does not belong under that name")
        carried.check_entry()
        return carried

    def check_entry(self) -> None:
        """The index entry must be a JSON object naming this version and its checksum."""
        try:
            entry: Any = json.loads(self.entry)
        except ValueError as error:
            raise CarryError(
                f"private crate {self}: its index entry is not JSON ({error})"
            ) from None
        if not isinstance(entry, dict):
            raise CarryError(f"private crate {self}: its index entry is not a JSON object")
        said = (entry.get("name"), entry.get("vers"), entry.get("cksum"))
        if said != (self.name, self.vers, self.cksum):
            raise CarryError(
                f"private crate {self}: its index entry says {said[0]}@{said[1]} with "
                f"checksum {said[2]}, the record {self} with checksum {self.cksum}"
            )


def read_carried(files: dict[str, Path]) -> list[tuple[CarriedVersion, Path]]:
    """Each carried version with its staged `.crate` (blocking: reads and hashes them).

    Raises `CarryError` unless every record has its crate and every crate its record,
    and each crate's sha256 is its record's and its index entry's checksum.
    """
    found: list[tuple[CarriedVersion, Path]] = []
    crates = {key for key in files if key.endswith(_CRATE)}
    for key in sorted(files):
        if not key.startswith(PREFIX) or not key.endswith((_CRATE, _RECORD)):
            raise CarryError(f"{key} is not a private crate file this GhostCrate knows")
        if key in crates:
            if key.removesuffix(_CRATE) + _RECORD not in files:
                raise CarryError(f"{key} comes without its record")
            continue
        carried = CarriedVersion.parse(key, files[key].read_bytes())
        crate = files.get(carried.crate_key)
        if crate is None:
            raise CarryError(f"private crate {carried} comes without its .crate file")
        with crate.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != carried.cksum or crate.stat().st_size != carried.size:
            raise CarryError(
                f"private crate {carried} differs from its index entry (sha256 {digest}, "
                f"the entry says {carried.cksum})"
            )
        found.append((carried, crate))
    return sorted(found, key=lambda pair: pair[0].published_at)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)
