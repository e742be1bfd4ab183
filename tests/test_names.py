"""Crate names and sparse-index paths (Cargo Book, registry-index.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostcrate.cargo.names import (
    CrateName,
    InvalidName,
    index_path,
    is_version,
    parse_index_path,
)
from ghostcrate.proxy.crates import download_url
from ghostcrate.proxy.keys import crate_key, is_index_key, parse_crate_key

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,63}", fullmatch=True)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("z", "1/z"),
        ("ab", "2/ab"),
        ("abc", "3/a/abc"),
        ("serde", "se/rd/serde"),
        ("MixedCase", "mi/xe/mixedcase"),
        ("cargo-ok_x", "ca/rg/cargo-ok_x"),
    ],
)
def test_index_paths_follow_cargo(name: str, path: str) -> None:
    assert index_path(CrateName(name)) == path
    assert parse_index_path(path) == CrateName(name)


@given(names)
def test_every_name_round_trips_through_its_path(name: str) -> None:
    crate = CrateName(name)
    assert parse_index_path(index_path(crate)) == crate


@given(st.text(max_size=80))
def test_arbitrary_paths_parse_or_raise_invalid_name(path: str) -> None:
    try:
        crate = parse_index_path(path)
    except InvalidName:
        return
    assert index_path(crate) == path


@pytest.mark.parametrize(
    "path",
    ["", "se/rd/Serde", "3/b/abc", "1/ab", "../../etc/passwd", "se/rd/../serde", "se/rd/serde/"],
)
def test_wrong_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidName):
        parse_index_path(path)


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a/b", "é", "a" * 65, "-a", "a.b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        CrateName(name)


def test_names_compare_case_insensitively() -> None:
    assert CrateName("Serde") == CrateName("serde")
    assert CrateName("foo-bar").canonical == CrateName("Foo_Bar").canonical


@pytest.mark.parametrize("version", ["1.0.0", "0.1.2-alpha.1", "1.0.0+build.5", "10.20.30"])
def test_versions(version: str) -> None:
    assert is_version(version)


@pytest.mark.parametrize("version", ["1.0", "01.0.0", "1.0.0/../x", "", "v1.0.0", "1.0.0-"])
def test_not_versions(version: str) -> None:
    assert not is_version(version)


def test_download_url_without_markers_appends_cargo_suffix() -> None:
    assert (
        download_url("https://static.crates.io/crates/", "Serde", "1.0.0", "ab" * 32)
        == "https://static.crates.io/crates/Serde/1.0.0/download"
    )


def test_download_url_expands_every_marker() -> None:
    template = "http://h/{prefix}/{lowerprefix}/{crate}/{version}/{sha256-checksum}"
    assert (
        download_url(template, "MixedCase", "1.2.3", "ab" * 32)
        == f"http://h/Mi/xe/mi/xe/MixedCase/1.2.3/{'ab' * 32}"
    )
    assert download_url("http://h/{prefix}/{crate}", "abc", "1.0.0", "0" * 64) == "http://h/3/a/abc"


versions = st.from_regex(
    r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})(-[a-z]+)?", fullmatch=True
)


@given(names, versions)
def test_crate_keys_round_trip(name: str, version: str) -> None:
    crate = CrateName(name)
    assert parse_crate_key(crate_key(crate, version)) == (crate, version)
    assert is_index_key("index/" + index_path(crate))


@pytest.mark.parametrize(
    "key",
    [
        "crates/z/z-0.1.0.txt",
        "crates/z/y-0.1.0.crate",
        "crates/Z/Z-0.1.0.crate",
        "crates/z/z-0.1.crate",
        "z/z-0.1.0.crate",
    ],
)
def test_keys_the_mirror_never_writes_are_not_crate_keys(key: str) -> None:
    assert parse_crate_key(key) is None
