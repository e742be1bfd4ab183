"""Publish metadata: strict parsing, crates.io's name rules, and the index line it becomes."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import cast

import pytest

from ghostcrate.private.errors import PublishRejected
from ghostcrate.private.metadata import (
    MAX_DEPS,
    MAX_FEATURES,
    DepMeta,
    index_entry,
    index_line,
    parse_metadata,
)
from tests.support.crates import CrateSpec, Dep, built, corpus, dumps_line
from tests.support.publish import metadata_bytes, publish_metadata

CKSUM = "0" * 64
SPEC = CrateSpec("bounded", "1.0.0")

# Crates that exercise every index field crates.io writes.
ORACLE_SPECS = [
    *(replace(spec, yanked=False) for spec in corpus()),
    CrateSpec(
        "everything",
        "2.0.0-rc.1+build.5",
        deps=(
            Dep("short", "0.2", package="under_score", optional=True, features=("x",)),
            Dep("z", "0.1", kind="dev"),
            Dep("z", "0.1", kind="build"),
            Dep("z", "=0.1.1", default_features=False),
            Dep("winonly", "0.1", target="cfg(windows)", optional=True),
            Dep("unixonly", "0.1", target="x86_64-unknown-linux-gnu"),
            Dep("A-Upper", "*"),
        ),
        features={
            "default": ["std"],
            "std": [],
            "win": ["dep:winonly"],
            "weak": ["short?/x"],
            "chain": ["weak"],
            "chain2": ["chain", "std"],
            "plain": ["short/x", "z/serde"],
        },
        links="native-lib",
        rust_version="1.70.0",
    ),
]


def deps_of(entry: dict[str, object]) -> list[dict[str, object]]:
    """The `deps` of an index entry."""
    return cast(list[dict[str, object]], entry["deps"])


def meta_json(**changes: object) -> bytes:
    """The metadata of a small valid crate, with top-level fields replaced."""
    obj = publish_metadata(CrateSpec("demo", "1.0.0", deps=(Dep("z", "0.1"),)))
    obj.update(changes)
    return json.dumps(obj).encode()


def dep_json(**changes: object) -> bytes:
    """Like `meta_json`, with fields of its one dependency replaced."""
    obj = publish_metadata(CrateSpec("demo", "1.0.0", deps=(Dep("z", "0.1"),)))
    deps = obj["deps"]
    assert isinstance(deps, list)
    deps[0].update(changes)
    return json.dumps(obj).encode()


def refused(raw: bytes, match: str) -> PublishRejected:
    with pytest.raises(PublishRejected, match=match) as caught:
        parse_metadata(raw)
    assert caught.value.status == 400
    return caught.value


# --- the index line against the oracle -------------------------------------


@pytest.mark.parametrize("spec", ORACLE_SPECS, ids=lambda s: f"{s.name}-{s.version}")
def test_index_entry_matches_crates_io_key_for_key(spec: CrateSpec) -> None:
    crate = built(spec)
    entry = index_entry(parse_metadata(metadata_bytes(spec)), crate.cksum)
    expected = crate.index_line()
    assert entry == expected
    assert list(entry) == list(expected)
    for ours, theirs in zip(deps_of(entry), deps_of(expected), strict=True):
        assert list(ours) == list(theirs)
    assert index_line(entry) == dumps_line(expected).encode()


def test_renamed_dependency_is_indexed_under_its_alias() -> None:
    spec = CrateSpec("renamer", "0.1.0", deps=(Dep("short", "0.2", package="under_score"),))
    meta = parse_metadata(metadata_bytes(spec))
    assert meta.deps == (DepMeta("under_score", "^0.2", explicit_name_in_toml="short"),)
    (dep,) = deps_of(index_entry(meta, CKSUM))
    assert (dep["name"], dep["package"]) == ("short", "under_score")


def test_features2_and_v2_only_with_new_syntax() -> None:
    plain = index_entry(parse_metadata(meta_json(features={"a": ["z/serde"]})), CKSUM)
    assert "features2" not in plain
    assert "v" not in plain
    new = index_entry(parse_metadata(meta_json(features={"a": ["dep:z"], "b": ["a"]})), CKSUM)
    assert new["features"] == {}
    assert new["features2"] == {"a": ["dep:z"], "b": ["a"]}
    assert new["v"] == 2


def test_registry_is_kept_as_cargo_sent_it() -> None:
    other = "https://github.com/rust-lang/crates.io-index"
    entry = index_entry(parse_metadata(dep_json(registry=other)), CKSUM)
    (dep,) = deps_of(entry)
    assert dep["registry"] == other
    assert list(dep)[-1] == "registry"
    (same,) = deps_of(index_entry(parse_metadata(dep_json(registry=None)), CKSUM))
    assert "registry" not in same


def test_index_line_is_compact_utf8_without_newline() -> None:
    meta = parse_metadata(meta_json())
    line = index_line(index_entry(meta, CKSUM))
    assert b" " not in line
    assert not line.endswith(b"\n")
    assert json.loads(line)["name"] == "demo"


def test_non_ascii_text_is_accepted_and_written_raw() -> None:
    meta = parse_metadata(meta_json(description="Crème brûlée ☕", authors=["Zoë"]))
    assert meta.description == "Crème brûlée ☕"
    assert meta.authors == ("Zoë",)


def test_unknown_fields_are_ignored_and_missing_lists_are_empty() -> None:
    meta = parse_metadata(b'{"name": "demo", "vers": "1.0.0", "surprise": [1, {"x": null}]}')
    assert (meta.deps, meta.features, meta.keywords) == ((), {}, ())


def test_dependency_defaults() -> None:
    raw = b'{"name":"demo","vers":"1.0.0","deps":[{"name":"z","version_req":"*"}]}'
    (dep,) = parse_metadata(raw).deps
    assert dep == DepMeta("z", "*")


# --- refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\xff{}", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"name": "a", "name": "b", "vers": "1.0.0"}', "duplicate key 'name'"),
        (b'{"name": "demo", "vers": "1.0.0", "x": NaN}', "not valid JSON"),
        (b"{" + b'"a":' * 40 + b"1" + b"}" * 40, "not valid JSON"),
    ],
)
def test_bad_json_is_refused(raw: bytes, match: str) -> None:
    refused(raw, match)


def test_deep_nesting_is_refused_before_parsing() -> None:
    refused(b'{"name":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than 32 levels")


def test_brackets_inside_strings_do_not_count() -> None:
    meta = parse_metadata(meta_json(description="[" * 100 + '{"\\"' * 50))
    assert meta.description is not None


def test_unpaired_surrogate_is_refused() -> None:
    refused(meta_json(description="\ud800"), "surrogate")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("name", True, "`name` in the publish metadata must be a non-empty string, not true/false"),
        ("name", None, "`name` .* not null"),
        ("vers", 1, "`vers` .* not a number"),
        ("deps", {}, "`deps` .* must be a list, not an object"),
        ("features", [], "`features` .* must be an object, not a list"),
        ("links", False, "`links` .* must be a string or null, not true/false"),
        ("description", ["x"], "`description` .* not a list"),
        ("keywords", "x", "`keywords` .* must be a list"),
        ("authors", [1], r"`authors\[0\]` .* must be a string, not a number"),
        ("rust_version", 1.7, "`rust_version` .* not a number"),
    ],
)
def test_wrong_types_name_the_field(field: str, value: object, match: str) -> None:
    refused(meta_json(**{field: value}), match)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("optional", "yes", "`optional` in deps\\[0\\] must be true or false, not a string"),
        ("default_features", None, "`default_features` .* not null"),
        ("name", 3, "`name` in deps\\[0\\]"),
        ("version_req", None, "`version_req` in deps\\[0\\]"),
        ("features", "x", "`features` in deps\\[0\\] must be a list"),
        ("target", 7, "`target` in deps\\[0\\]"),
        ("kind", "runtime", "kind 'runtime'; expected normal, build or dev"),
        ("registry", True, "`registry` in deps\\[0\\]"),
    ],
)
def test_wrong_dependency_fields_are_refused(field: str, value: object, match: str) -> None:
    refused(dep_json(**{field: value}), match)


def test_a_dependency_must_be_an_object() -> None:
    refused(meta_json(deps=["serde"]), r"deps\[0\] must be a JSON object, not a string")


@pytest.mark.parametrize("name", ["", "1abc", "_x", "-x", "a b", "ünï", "a" * 65, "a.b"])
def test_invalid_crate_names_are_refused(name: str) -> None:
    refused(meta_json(name=name), "name")


@pytest.mark.parametrize(
    "name",
    [
        *["std", "core", "alloc", "proc_macro", "proc-macro", "test", "Std", "compiler-builtins"],
        *["nul", "CON", "prn", "aux", "com1", "com9", "lpt1", "LPT9"],
    ],
)
def test_reserved_names_are_refused(name: str) -> None:
    refused(meta_json(name=name), "reserved")


@pytest.mark.parametrize("name", ["com10", "lpt", "standard", "tests", "console"])
def test_names_near_reserved_ones_are_fine(name: str) -> None:
    assert parse_metadata(meta_json(name=name)).name == name


@pytest.mark.parametrize("vers", ["1.0", "v1.0.0", "01.0.0", "1.0.0-01", " 1.0.0", "1.0.0-", ""])
def test_invalid_versions_are_refused(vers: str) -> None:
    refused(meta_json(vers=vers), "vers|SemVer")


@pytest.mark.parametrize("req", ["^1.0", "*", ">=1, <2", "~0.3.1", "=1.2.3-beta", "1.*"])
def test_version_requirements_are_accepted(req: str) -> None:
    assert parse_metadata(dep_json(version_req=req)).deps[0].version_req == req


@pytest.mark.parametrize("req", ["", "   ", "latest", "^", ">= x", "1.2.3.4", "9" * 5000])
def test_invalid_version_requirements_are_refused(req: str) -> None:
    refused(dep_json(version_req=req), "version_req|version requirement")


@pytest.mark.parametrize("name", ["1serde", "se rde", "-x", "a" * 65, "dep:x"])
def test_invalid_dependency_names_are_refused(name: str) -> None:
    refused(dep_json(name=name), "dependency name")


def test_dependency_names_may_start_with_underscore() -> None:
    assert (
        parse_metadata(dep_json(explicit_name_in_toml="_z")).deps[0].explicit_name_in_toml == "_z"
    )


def test_invalid_rename_is_refused() -> None:
    refused(dep_json(explicit_name_in_toml="9lives"), "dependency rename")


@pytest.mark.parametrize("feature", ["c++20", "_x", "1st", "a.b", "x-y"])
def test_feature_names_follow_crates_io(feature: str) -> None:
    assert feature in parse_metadata(meta_json(features={feature: []})).features


@pytest.mark.parametrize("feature", ["", "-x", "+x", ".x", "a/b", "dep:x", "a b", "é"])
def test_invalid_feature_names_are_refused(feature: str) -> None:
    refused(meta_json(features={feature: []}), "invalid feature name")


@pytest.mark.parametrize("value", ["dep:z", "z/serde", "z?/serde", "other", "z/c++20"])
def test_feature_values_follow_crates_io(value: str) -> None:
    assert parse_metadata(meta_json(features={"f": [value]})).features == {"f": [value]}


@pytest.mark.parametrize("value", ["dep:", "dep:1x", "z/", "/x", "z?/", "z//x", "a?b", "c++/x"])
def test_invalid_feature_values_are_refused(value: str) -> None:
    refused(meta_json(features={"f": [value]}), "invalid")


def test_feature_values_must_be_strings() -> None:
    refused(meta_json(features={"f": "std"}), "feature 'f' must be a list, not a string")
    refused(meta_json(features={"f": [None]}), r"`values\[0\]` in feature 'f' must be a string")


def test_dependency_features_are_checked() -> None:
    refused(dep_json(features=["no spaces"]), "invalid feature name")


def test_too_many_dependencies_are_refused() -> None:
    deps = [{"name": f"d{i}", "version_req": "1"} for i in range(MAX_DEPS + 1)]
    refused(meta_json(deps=deps), f"at most {MAX_DEPS}")


def test_too_many_features_are_refused() -> None:
    refused(meta_json(features={f"f{i}": [] for i in range(MAX_FEATURES + 1)}), "at most 300")


@pytest.mark.parametrize("rust_version", ["1", "1.70", "1.70.1"])
def test_rust_version_is_a_bare_version(rust_version: str) -> None:
    assert parse_metadata(meta_json(rust_version=rust_version)).rust_version == rust_version


@pytest.mark.parametrize("rust_version", ["^1.70", "1.70.0-nightly", "1.x", "", "1.2.3.4"])
def test_bad_rust_versions_are_refused(rust_version: str) -> None:
    refused(meta_json(rust_version=rust_version), "rust-version")


def test_deep_nesting_scan_is_linear_on_unterminated_strings() -> None:
    started = time.monotonic()
    with pytest.raises(PublishRejected, match="not valid JSON"):
        parse_metadata(b'{"name":"' + b'\\"' * 500_000)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("keywords", ["k"] * 6, "at most 5"),
        ("keywords", ["x" * 21], "invalid keyword"),
        ("keywords", ["-lead"], "invalid keyword"),
        ("categories", ["c"] * 6, "at most 5"),
        ("authors", ["a"] * 101, "at most 100"),
        ("description", "d" * 1001, "at most 1000"),
        ("repository", "https://x/" + "r" * 1100, "at most 1024"),
    ],
)
def test_crates_io_bounds(field: str, value: object, match: str) -> None:
    with pytest.raises(PublishRejected, match=match):
        parse_metadata(json.dumps(publish_metadata(SPEC) | {field: value}).encode())


def test_keywords_as_crates_io_takes_them() -> None:
    raw = json.dumps(publish_metadata(SPEC) | {"keywords": ["c++", "1password", "a_b-c"]})
    assert parse_metadata(raw.encode()).keywords == ("c++", "1password", "a_b-c")


@pytest.mark.parametrize("name", ["acmé", "\u0430cme", "tok\u0131o"])
def test_non_ascii_names_are_refused_naming_the_character(name: str) -> None:
    with pytest.raises(PublishRejected, match=r"U\+0.*ASCII only"):
        parse_metadata(json.dumps(publish_metadata(SPEC) | {"name": name}).encode())
