"""Cargo's version requirements (Cargo Book, "Specifying Dependencies")."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostcrate.cargo.semver import InvalidVersion, Version, VersionReq

# (requirement, lowest matching, first not matching above) from the Cargo Book's tables.
RANGES = [
    ("^1.2.3", "1.2.3", "2.0.0"),
    ("1.2.3", "1.2.3", "2.0.0"),
    ("^1.2", "1.2.0", "2.0.0"),
    ("^1", "1.0.0", "2.0.0"),
    ("^0.2.3", "0.2.3", "0.3.0"),
    ("^0.2", "0.2.0", "0.3.0"),
    ("^0.0.3", "0.0.3", "0.0.4"),
    ("^0.0", "0.0.0", "0.1.0"),
    ("^0", "0.0.0", "1.0.0"),
    ("~1.2.3", "1.2.3", "1.3.0"),
    ("~1.2", "1.2.0", "1.3.0"),
    ("~1", "1.0.0", "2.0.0"),
    ("1.*", "1.0.0", "2.0.0"),
    ("1.2.*", "1.2.0", "1.3.0"),
    ("=1.2.3", "1.2.3", "1.2.4"),
    (">= 1.2.0, < 1.5", "1.2.0", "1.5.0"),
    ("> 1.2.3, <= 1.4", "1.2.4", "1.5.0"),
]

CANDIDATES = [Version(a, b, c) for a, b, c in itertools.product(range(3), range(6), range(6))]


@pytest.mark.parametrize(("requirement", "low", "high"), RANGES)
def test_requirements_match_the_cargo_book_ranges(requirement: str, low: str, high: str) -> None:
    req = VersionReq.parse(requirement)
    lo, hi = Version.parse(low), Version.parse(high)
    for version in CANDIDATES:
        assert req.matches(version) == (lo <= version < hi), (requirement, version)


def test_star_matches_every_release() -> None:
    assert all(VersionReq.parse("*").matches(v) for v in CANDIDATES)


@pytest.mark.parametrize(
    ("requirement", "version", "expected"),
    [
        ("^1.0.0", "1.1.0-beta", False),  # no pre-release unless asked for
        ("^1.0.0-alpha", "1.0.0-beta", True),
        ("^1.0.0-alpha", "1.0.0", True),
        ("^1.0.0-alpha", "1.2.0", True),
        ("^1.0.0-alpha", "1.2.0-alpha", False),  # another major.minor.patch
        ("=1.0.0-rc.1", "1.0.0-rc.1", True),
        ("=1.0.0-rc.1", "1.0.0-rc.2", False),
        (">=1.0.0-rc.1", "1.0.0-rc.10", True),  # numeric identifiers compare as numbers
        ("*", "1.0.0-alpha", False),
    ],
)
def test_pre_releases(requirement: str, version: str, expected: bool) -> None:
    assert VersionReq.parse(requirement).matches(Version.parse(version)) is expected


def test_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
    ]
    parsed = [Version.parse(v) for v in ordered]
    assert all(a < b for a, b in itertools.pairwise(parsed))
    assert Version.parse("1.0.0+build") == Version.parse("1.0.0")


versions = st.builds(Version, st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))


@given(versions, versions)
def test_a_bare_requirement_is_a_caret_requirement(base: Version, candidate: Version) -> None:
    text = f"{base.major}.{base.minor}.{base.patch}"
    assert VersionReq.parse(text).matches(candidate) == VersionReq.parse("^" + text).matches(
        candidate
    )


def test_an_empty_requirement_means_any() -> None:
    assert VersionReq.parse("").matches(Version(1, 0, 0))


@pytest.mark.parametrize("text", ["1.2.3.4", "^*", ">1.*", "1.*.3", "abc", "1.2.3-"])
def test_invalid_requirements(text: str) -> None:
    with pytest.raises(InvalidVersion):
        VersionReq.parse(text)
