"""Publish metadata: the JSON half of `cargo publish`, checked, and the index line it becomes.

Field names and meanings follow registry-web-api.md ("Publish"); the checks follow
crates.io (`crates_io_validation`: crate, dependency and feature names; its reserved
names), and `index_entry` writes what crates.io's `crates_io_index::Crate` serialises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

from ghostcrate.cargo.names import CrateName, InvalidName, is_version
from ghostcrate.cargo.semver import VersionReq
from ghostcrate.private.errors import PublishRejected

DepKind = Literal["normal", "dev", "build"]
_KINDS: tuple[DepKind, ...] = ("normal", "build", "dev")  # crates.io's DependencyKind order
MAX_DEPTH = 32
MAX_DEPS = 500  # crates.io's default `max_dependencies`
MAX_FEATURES = 300  # crates.io's default `max_features`
MAX_KEYWORDS = MAX_CATEGORIES = 5  # crates.io's limits
MAX_KEYWORD_LENGTH = 20  # crates.io's
MAX_DESCRIPTION = 1000  # characters, crates.io's `MAX_DESCRIPTION_LENGTH`
MAX_AUTHORS = 100
#: Characters in any other one-line field (license, URLs, a target, a category...).
MAX_FIELD = 1024
_SPLIT_FEATURES_ROUNDS = 100  # crates.io's `split_features` iteration limit

_DEP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_FEATURE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+.-]*")
_RUST_VERSION = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*)){0,2}")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")
# A JSON string (possessive, so an unterminated one cannot make the scan quadratic) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
# crates.io's `reserved_crate_names` table (toolchain crates), compared canonically.
_TOOLCHAIN_CRATES = """
    alloc arena ast builtins collections compiler_builtins compiler_rt compiletest core coretest
    debug driver flate fmt_macros grammar graphviz macro macros proc_macro rbml rust_installer
    rustbook rustc rustc_back rustc_borrowck rustc_driver rustc_llvm rustc_resolve rustc_trans
    rustc_typeck rustdoc rustllvm rustuv serialize std syntax test unicode
"""
_WINDOWS_DEVICES = [
    "nul",
    "con",
    "prn",
    "aux",
    *(f"{p}{n}" for p in ("com", "lpt") for n in range(1, 10)),
]
RESERVED_NAMES = frozenset([*_TOOLCHAIN_CRATES.split(), *_WINDOWS_DEVICES])


@dataclass(frozen=True)
class DepMeta:
    """One dependency as cargo sends it: `name` is the real package, the alias is separate."""

    name: str
    version_req: str
    features: tuple[str, ...] = ()
    optional: bool = False
    default_features: bool = True
    target: str | None = None
    kind: DepKind = "normal"
    registry: str | None = None
    explicit_name_in_toml: str | None = None


@dataclass(frozen=True)
class PublishMeta:
    """What the registry reads from publish metadata; other fields are ignored."""

    name: str
    vers: str
    deps: tuple[DepMeta, ...] = ()
    features: dict[str, list[str]] = field(default_factory=dict, hash=False)
    links: str | None = None
    rust_version: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    license: str | None = None
    license_file: str | None = None
    repository: str | None = None
    homepage: str | None = None
    documentation: str | None = None
    readme: str | None = None
    authors: tuple[str, ...] = ()


def parse_metadata(raw: bytes) -> PublishMeta:
    """Parse and check publish metadata; `PublishRejected` names the first problem."""
    fields = _Fields(_load_json(raw), "the publish metadata")
    name = fields.required_str("name")
    _check_crate_name(name)
    vers = fields.required_str("vers")
    if not is_version(vers):
        raise PublishRejected(
            f"version {vers!r} is not a SemVer version (like 1.0.0 or 1.0.0-beta.1); "
            "fix `version` in Cargo.toml"
        )
    raw_deps = fields.items("deps", list, [])
    if len(raw_deps) > MAX_DEPS:
        raise PublishRejected(
            f"{name} has {len(raw_deps)} dependencies; this registry accepts at most {MAX_DEPS}"
        )
    rust_version = fields.optional_str("rust_version")
    if rust_version is not None and not _RUST_VERSION.fullmatch(rust_version):
        raise PublishRejected(
            f"rust-version {rust_version!r} must be a bare version like 1.70 or 1.70.0; "
            "fix `rust-version` in Cargo.toml"
        )
    return PublishMeta(
        name=name,
        vers=vers,
        deps=tuple(_parse_dep(item, f"deps[{i}]") for i, item in enumerate(raw_deps)),
        features=_parse_features(fields.items("features", dict, {})),
        links=fields.optional_str("links"),
        rust_version=rust_version,
        description=fields.optional_str("description", MAX_DESCRIPTION),
        keywords=fields.str_list("keywords", _check_keyword, most=MAX_KEYWORDS),
        categories=fields.str_list("categories", most=MAX_CATEGORIES),
        license=fields.optional_str("license"),
        license_file=fields.optional_str("license_file"),
        repository=fields.optional_str("repository"),
        homepage=fields.optional_str("homepage"),
        documentation=fields.optional_str("documentation"),
        readme=fields.optional_str("readme", None),  # bounded by `[private] max_metadata`
        authors=fields.str_list("authors", most=MAX_AUTHORS),
    )


def index_entry(meta: PublishMeta, cksum: str) -> dict[str, object]:
    """The sparse-index object for this version, key for key as crates.io writes it.

    `cksum` is the sha256 hex of the `.crate`. A dependency's `registry` is kept as cargo
    sent it (null: this registry) and written only when set, as registry-index.md shows.
    """
    features, features2 = split_features(meta.features)
    entry: dict[str, object] = {
        "name": meta.name,
        "vers": meta.vers,
        "deps": [_index_dep(dep) for dep in sorted(meta.deps, key=_dep_order)],
        "cksum": cksum,
        "features": features,
    }
    if features2:
        entry["features2"] = features2
    entry["yanked"] = False
    if meta.links is not None:
        entry["links"] = meta.links
    if meta.rust_version is not None:
        entry["rust_version"] = meta.rust_version
    if features2:
        entry["v"] = 2
    return entry


def index_line(entry: dict[str, object]) -> bytes:
    """One index line, compact and UTF-8 as in crates.io's index files, without the newline."""
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


def split_features(
    features: dict[str, list[str]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(`features`, `features2`): `features2` holds `dep:` / `?/` syntax and what enables it."""
    new_syntax = {k for k, values in features.items() if any(map(_is_features2_value, values))}
    for _ in range(_SPLIT_FEATURES_ROUNDS):
        moved = {
            k
            for k, values in features.items()
            if k not in new_syntax and any(v in new_syntax for v in values)
        }
        if not moved:
            break
        new_syntax |= moved
    plain = {k: list(v) for k, v in sorted(features.items()) if k not in new_syntax}
    extended = {k: list(v) for k, v in sorted(features.items()) if k in new_syntax}
    return plain, extended


def _is_features2_value(value: str) -> bool:
    return value.startswith("dep:") or "?/" in value


def _dep_order(dep: DepMeta) -> tuple[object, ...]:
    """crates.io's `Ord for Dependency`; None sorts before any string, as Rust's Option does."""
    package = dep.name if dep.explicit_name_in_toml is not None else None
    return (
        dep.explicit_name_in_toml or dep.name,
        _KINDS.index(dep.kind),
        dep.version_req,
        dep.optional,
        dep.default_features,
        (dep.target is not None, dep.target or ""),
        (package is not None, package or ""),
        dep.features,
    )


def _index_dep(dep: DepMeta) -> dict[str, object]:
    out: dict[str, object] = {
        "name": dep.explicit_name_in_toml or dep.name,
        "req": dep.version_req,
        "features": list(dep.features),
        "optional": dep.optional,
        "default_features": dep.default_features,
        "target": dep.target,
        "kind": dep.kind,
    }
    if dep.registry is not None:
        out["registry"] = dep.registry
    if dep.explicit_name_in_toml is not None:
        out["package"] = dep.name
    return out


# --- JSON -------------------------------------------------------------------


def _load_json(raw: bytes) -> dict[str, object]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishRejected(
            "the publish metadata is not UTF-8; it was not made by cargo"
        ) from None
    _check_depth(text)
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise PublishRejected("the publish metadata is nested too deeply") from None
    except ValueError as error:
        raise PublishRejected(f"the publish metadata is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise PublishRejected("the publish metadata must be a JSON object")
    return cast(dict[str, object], value)


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than `MAX_DEPTH` before `json.loads` recurses into it."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        depth += 1 if token in "[{" else -1
        if depth > MAX_DEPTH:
            raise PublishRejected(
                f"the publish metadata is nested more than {MAX_DEPTH} levels deep"
            )


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_T = TypeVar("_T", list[object], dict[str, object])
_JSON_TYPE_NAMES = {bool: "true/false", int: "a number", float: "a number", str: "a string"}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class _Fields:
    """Typed access to one JSON object's fields; refusals name the field and what it held."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise PublishRejected(f"{where} must be a JSON object, not {_describe(value)}")
        self._data = cast(dict[str, object], value)
        self._where = where

    def _wrong(self, key: str, wanted: str) -> PublishRejected:
        found = _describe(self._data.get(key))
        return PublishRejected(f"`{key}` in {self._where} must be {wanted}, not {found}")

    def required_str(self, key: str) -> str:
        value = self._data.get(key)
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string")
        return _text(value, f"`{key}` in {self._where}", MAX_FIELD)

    def optional_str(self, key: str, longest: int | None = MAX_FIELD) -> str | None:
        """The string at `key`, or None; refused when longer than `longest` characters."""
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._wrong(key, "a string or null")
        return _text(value, f"`{key}` in {self._where}", longest)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._data.get(key, default)
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def items(self, key: str, kind: type[_T], default: _T) -> _T:
        value = self._data.get(key)
        if value is None:
            return default
        if not isinstance(value, kind):
            raise self._wrong(key, "a list" if kind is list else "an object")
        return value

    def str_list(
        self, key: str, check: Callable[[str], None] | None = None, *, most: int | None = None
    ) -> tuple[str, ...]:
        """The strings listed at `key` (at most `most` of them), each passed to `check`."""
        items = self.items(key, list, [])
        if most is not None and len(items) > most:
            raise PublishRejected(
                f"`{key}` in {self._where} lists {len(items)} entries; at most {most} are "
                "allowed (as on crates.io)"
            )
        out = []
        for i, item in enumerate(items):
            where = f"`{key}[{i}]` in {self._where}"
            if not isinstance(item, str):
                raise PublishRejected(f"{where} must be a string, not {_describe(item)}")
            out.append(_text(item, where, MAX_FIELD))
            if check is not None:
                check(item)
        return tuple(out)


def _text(value: str, where: str, longest: int | None) -> str:
    """`value`, unless longer than `longest` characters or holding an unpaired surrogate
    (JSON allows `\\ud800`, UTF-8 does not)."""
    if longest is not None and len(value) > longest:
        raise PublishRejected(
            f"{where} is {len(value)} characters long; at most {longest} are allowed"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PublishRejected(f"{where} holds an unpaired UTF-16 surrogate") from None
    return value


# --- names and features -----------------------------------------------------


def _check_crate_name(name: str) -> None:
    if not name.isascii():
        odd = next(c for c in name if not c.isascii())
        raise PublishRejected(
            f"the crate name {name!r} holds {odd!r} (U+{ord(odd):04X}): crate names are ASCII "
            "only (letters, digits, '-' and '_'), as on crates.io; fix `name` in Cargo.toml"
        )
    try:
        crate = CrateName(name)
    except InvalidName as error:
        raise PublishRejected(f"{error}; fix `name` in Cargo.toml") from None
    if crate.canonical in RESERVED_NAMES:
        raise PublishRejected(
            f"the crate name {name!r} is reserved (a Rust toolchain crate or a Windows device "
            "name); choose another `name` in Cargo.toml"
        )


def _check_dep_name(name: str, what: str) -> None:
    if not _DEP_NAME.fullmatch(name):
        raise PublishRejected(
            f"invalid {what} {name!r}: use ASCII letters, digits, '-' and '_', starting with a "
            "letter or '_', at most 64 characters"
        )


def _check_keyword(keyword: str) -> None:
    if len(keyword) > MAX_KEYWORD_LENGTH or not _KEYWORD.fullmatch(keyword):
        raise PublishRejected(
            f"invalid keyword {keyword!r}: use at most {MAX_KEYWORD_LENGTH} ASCII letters, "
            "digits, '_', '-' and '+', starting with a letter or a digit (crates.io's rule); "
            "fix `keywords` in Cargo.toml"
        )


def _check_feature_name(name: str) -> None:
    if not _FEATURE_NAME.fullmatch(name):
        raise PublishRejected(
            f"invalid feature name {name!r}: use ASCII letters, digits, '_', '-', '+' and '.', "
            "starting with a letter, a digit or '_'; fix [features] in Cargo.toml"
        )


def _check_feature_value(value: str) -> None:
    """A feature's entry: `feat`, `dep:name`, `name/feat` or `name?/feat` (crates.io's rules)."""
    dep, slash, feature = value.partition("/")
    if slash:
        _check_dep_name(dep.removesuffix("?"), f"dependency in feature value {value!r}:")
        _check_feature_name(feature)
    elif value.startswith("dep:"):
        _check_dep_name(value.removeprefix("dep:"), f"dependency in feature value {value!r}:")
    else:
        _check_feature_name(value)


def _parse_features(raw: dict[str, object]) -> dict[str, list[str]]:
    if len(raw) > MAX_FEATURES:
        raise PublishRejected(
            f"the crate declares {len(raw)} features; this registry accepts at most {MAX_FEATURES}"
        )
    features: dict[str, list[str]] = {}
    for name, values in raw.items():
        _check_feature_name(name)
        if not isinstance(values, list):
            raise PublishRejected(f"feature {name!r} must be a list, not {_describe(values)}")
        holder = _Fields({"values": values}, f"feature {name!r}")
        features[name] = list(holder.str_list("values", _check_feature_value))
    return features


def _is_version_req(text: str) -> bool:
    """Whether `text` is a requirement; blank is not one (the semver crate refuses it too)."""
    try:
        VersionReq.parse(text)
    except ValueError:  # InvalidVersion, or int() of too many digits
        return False
    return bool(text.strip())


def _parse_dep(raw: object, where: str) -> DepMeta:
    fields = _Fields(raw, where)
    name = fields.required_str("name")
    _check_dep_name(name, "dependency name")
    alias = fields.optional_str("explicit_name_in_toml")
    if alias is not None:
        _check_dep_name(alias, "dependency rename")
    version_req = fields.required_str("version_req")
    if not _is_version_req(version_req):
        raise PublishRejected(
            f"dependency {name!r} has an invalid version requirement {version_req!r}; "
            "fix it in Cargo.toml"
        )
    kind = fields.optional_str("kind") or "normal"
    if kind not in _KINDS:
        raise PublishRejected(
            f"dependency {name!r} has kind {kind!r}; expected normal, build or dev"
        )
    return DepMeta(
        name=name,
        version_req=version_req,
        features=fields.str_list("features", _check_feature_value),
        optional=fields.boolean("optional", False),
        default_features=fields.boolean("default_features", True),
        target=fields.optional_str("target"),
        kind=kind,
        registry=fields.optional_str("registry"),
        explicit_name_in_toml=alias,
    )
