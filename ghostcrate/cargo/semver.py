"""Cargo's flavour of SemVer: versions, their order, and version requirements.

Follows the rules of the `semver` crate that cargo uses (docs.rs/semver,
"Specifying Dependencies" in the Cargo Book): a bare requirement is a caret
requirement; `~`, `=`, `<`, `<=`, `>`, `>=`, `*` and `x.*` wildcards;
comma-separated comparators must all match; and a pre-release version only
matches when some comparator names a pre-release of the same major.minor.patch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_VERSION = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_COMPARATOR = re.compile(
    r"\s*(=|>=|>|<=|<|~|\^)?\s*(\d+|\*|x|X)(?:\.(\d+|\*|x|X))?(?:\.(\d+|\*|x|X))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?\s*"
)
_WILDCARDS = frozenset({"*", "x", "X"})


class InvalidVersion(ValueError):
    pass


@total_ordering
@dataclass(frozen=True)
class Prerelease:
    """Pre-release identifiers; the empty one (a release) sorts after every pre-release."""

    text: str = ""

    def _key(self) -> tuple[int, tuple[tuple[int, int, str], ...]]:
        if not self.text:
            return (1, ())
        parts = tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part) for part in self.text.split(".")
        )
        return (0, parts)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Prerelease):
            return NotImplemented
        return self._key() < other._key()


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: Prerelease = Prerelease()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            raise InvalidVersion(f"not a SemVer version: {text!r}")
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), Prerelease(pre or ""))

    def _key(self) -> tuple[int, int, int, Prerelease]:
        return (self.major, self.minor, self.patch, self.pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


@dataclass(frozen=True)
class Comparator:
    op: str
    major: int
    minor: int | None
    patch: int | None
    pre: Prerelease

    def matches(self, v: Version) -> bool:
        if self.op in (">=", "<="):
            return self._exact(v) or _MATCHERS[self.op[0]](self, v)
        return _MATCHERS[self.op](self, v)

    def _exact(self, v: Version) -> bool:
        if v.major != self.major:
            return False
        if self.minor is not None and v.minor != self.minor:
            return False
        if self.patch is not None and v.patch != self.patch:
            return False
        return v.pre == self.pre

    def _greater(self, v: Version) -> bool:
        if v.major != self.major:
            return v.major > self.major
        if self.minor is None:
            return False
        if v.minor != self.minor:
            return v.minor > self.minor
        if self.patch is None:
            return False
        if v.patch != self.patch:
            return v.patch > self.patch
        return v.pre > self.pre

    def _less(self, v: Version) -> bool:
        if v.major != self.major:
            return v.major < self.major
        if self.minor is None:
            return False
        if v.minor != self.minor:
            return v.minor < self.minor
        if self.patch is None:
            return False
        if v.patch != self.patch:
            return v.patch < self.patch
        return v.pre < self.pre

    def _tilde(self, v: Version) -> bool:
        if v.major != self.major:
            return False
        if self.minor is not None and v.minor != self.minor:
            return False
        if self.patch is not None and v.patch != self.patch:
            return v.patch > self.patch
        return v.pre >= self.pre

    def _caret(self, v: Version) -> bool:  # noqa: PLR0911 - the semver crate's case analysis
        if v.major != self.major:
            return False
        if self.minor is None:
            return True
        if self.patch is None:
            return v.minor >= self.minor if self.major > 0 else v.minor == self.minor
        if self.major > 0:
            if v.minor != self.minor:
                return v.minor > self.minor
            if v.patch != self.patch:
                return v.patch > self.patch
        elif self.minor > 0:
            if v.minor != self.minor:
                return False
            if v.patch != self.patch:
                return v.patch > self.patch
        elif v.minor != self.minor or v.patch != self.patch:
            return False
        return v.pre >= self.pre

    def allows_prerelease_of(self, v: Version) -> bool:
        return bool(self.pre.text) and (self.major, self.minor, self.patch) == (
            v.major,
            v.minor,
            v.patch,
        )


_MATCHERS = {
    "=": Comparator._exact,
    ">": Comparator._greater,
    "<": Comparator._less,
    "~": Comparator._tilde,
    "^": Comparator._caret,
}


@dataclass(frozen=True)
class VersionReq:
    comparators: tuple[Comparator, ...]

    @classmethod
    def parse(cls, text: str) -> VersionReq:
        text = text.strip()
        if text in ("", "*", "x", "X"):
            return cls(())
        return cls(tuple(_comparator(part, text) for part in text.split(",")))

    def matches(self, v: Version) -> bool:
        if not all(c.matches(v) for c in self.comparators):
            return False
        return not v.pre.text or any(c.allows_prerelease_of(v) for c in self.comparators)


def _comparator(part: str, whole: str) -> Comparator:
    match = _COMPARATOR.fullmatch(part)
    if match is None:
        raise InvalidVersion(f"not a version requirement: {whole!r}")
    op, major, minor, patch, pre = match.groups()
    if major in _WILDCARDS:
        raise InvalidVersion(f"a wildcard needs a major version before it: {whole!r}")
    wildcard = minor in _WILDCARDS or patch in _WILDCARDS
    if minor in _WILDCARDS and patch is not None and patch not in _WILDCARDS:
        raise InvalidVersion(f"not a version requirement: {whole!r}")
    if wildcard:
        if op not in (None, "="):
            raise InvalidVersion(f"a wildcard cannot follow {op!r}: {whole!r}")
        op = "="
    return Comparator(
        op or "^",
        int(major),
        None if minor is None or minor in _WILDCARDS else int(minor),
        None if patch is None or patch in _WILDCARDS else int(patch),
        Prerelease(pre or ""),
    )
