"""Real, buildable `.crate` archives and their sparse-index lines, built by the tests.

Everything here is deterministic: the same `CrateSpec` always gives the same bytes,
so checksums are stable across runs. Nothing imports `ghostcrate`; these fixtures
are the oracle the proxy is checked against.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

DepKind = Literal["normal", "dev", "build"]
_KIND_ORDER = {"normal": 0, "build": 1, "dev": 2}  # crates.io's DependencyKind order
CRATES_IO_SOURCE = "registry+https://github.com/rust-lang/crates.io-index"


@dataclass(frozen=True)
class Dep:
    """A dependency as written in Cargo.toml; `name` is the alias when `package` is set."""

    name: str
    req: str
    package: str | None = None
    optional: bool = False
    default_features: bool = True
    features: tuple[str, ...] = ()
    target: str | None = None
    kind: DepKind = "normal"

    @property
    def real_name(self) -> str:
        """The package this dependency resolves to."""
        return self.package or self.name

    @property
    def ident(self) -> str:
        """The Rust identifier the dependent uses for this crate."""
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class CrateSpec:
    """One published version of a test crate."""

    name: str
    version: str
    deps: tuple[Dep, ...] = ()
    features: dict[str, list[str]] = field(default_factory=dict, hash=False)
    yanked: bool = False
    links: str | None = None
    rust_version: str | None = None
    extra_bytes: int = 0
    lib_source: str | None = None

    @property
    def lower(self) -> str:
        """The lowercase name, as used for index paths and lookups."""
        return self.name.lower()

    @property
    def needs_build_script(self) -> bool:
        """Build dependencies and `links` both require a build script."""
        return self.links is not None or any(d.kind == "build" for d in self.deps)


@dataclass
class BuiltCrate:
    """A spec with its archive bytes and their sha256."""

    spec: CrateSpec
    data: bytes
    cksum: str

    @property
    def name(self) -> str:
        """The crate name, case preserved."""
        return self.spec.name

    @property
    def version(self) -> str:
        """The version string."""
        return self.spec.version

    def index_line(self) -> dict[str, object]:
        """This version's sparse-index object."""
        return index_line(self.spec, self.cksum)


# --- naming -----------------------------------------------------------------


def index_path(name: str) -> str:
    """The sparse-index path of `name` (Cargo Book, registry-index.md "Index files")."""
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def snake(name: str) -> str:
    """A lowercase Rust identifier derived from a crate name."""
    return name.lower().replace("-", "_")


def normalize_req(req: str) -> str:
    """Render a requirement the way cargo sends it on publish (`1.0` becomes `^1.0`)."""
    parts = [p.strip() for p in req.split(",")]
    return ", ".join(f"^{p}" if p[:1].isdigit() else p for p in parts)


# --- Cargo.toml and sources -------------------------------------------------


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these inputs)."""
    return json.dumps(value)


def _key(value: str) -> str:
    """A TOML key: bare when possible."""
    return value if value and all(c.isalnum() or c in "-_" for c in value) else _q(value)


def _qlist(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _dep_toml(dep: Dep) -> str:
    parts = [f"version = {_q(dep.req)}"]
    if dep.package is not None:
        parts.append(f"package = {_q(dep.package)}")
    if dep.optional:
        parts.append("optional = true")
    if not dep.default_features:
        parts.append("default-features = false")
    if dep.features:
        parts.append(f"features = {_qlist(dep.features)}")
    return f"{_key(dep.name)} = {{ {', '.join(parts)} }}"


def cargo_toml(spec: CrateSpec) -> str:
    """The manifest shipped inside the archive."""
    lines = [
        "[package]",
        f"name = {_q(spec.name)}",
        f"version = {_q(spec.version)}",
        'edition = "2021"',
        'description = "GhostCrate test crate"',
        'license = "MIT"',
    ]
    if spec.links is not None:
        lines.append(f"links = {_q(spec.links)}")
    if spec.rust_version is not None:
        lines.append(f"rust-version = {_q(spec.rust_version)}")
    lines.append("build = " + (_q("build.rs") if spec.needs_build_script else "false"))
    lines += ["", "[lib]", 'path = "src/lib.rs"']
    if spec.features:
        lines += ["", "[features]"]
        lines += [f"{_key(k)} = {_qlist(v)}" for k, v in sorted(spec.features.items())]
    tables: dict[str, list[str]] = {}
    for dep in spec.deps:
        table = {
            "normal": "dependencies",
            "dev": "dev-dependencies",
            "build": "build-dependencies",
        }[dep.kind]
        if dep.target is not None:
            table = f"target.{_q(dep.target)}.{table}"
        tables.setdefault(table, []).append(_dep_toml(dep))
    for table, entries in tables.items():
        lines += ["", f"[{table}]", *entries]
    return "\n".join(lines) + "\n"


def _activating_features(spec: CrateSpec, alias: str) -> list[str]:
    """Features that switch on the optional dependency `alias` (directly or transitively)."""
    namespaced = any(v == f"dep:{alias}" for vs in spec.features.values() for v in vs)
    active: set[str] = set() if namespaced else {alias}  # the implicit feature

    def enables(value: str) -> bool:
        return value in (f"dep:{alias}", *active) or value.startswith(f"{alias}/")

    changed = True
    while changed:
        changed = False
        for feature, values in spec.features.items():
            if feature not in active and any(enables(v) for v in values):
                active.add(feature)
                changed = True
    return sorted(active)


def _cfg_for(spec: CrateSpec, dep: Dep) -> str | None:
    """The `#[cfg(...)]` predicate under which `dep` is compiled in, or None if always."""
    preds: list[str] = []
    if dep.target is not None:
        if dep.target.startswith("cfg(") and dep.target.endswith(")"):
            preds.append(dep.target[4:-1])
        else:
            return "any()"  # a bare target triple: left unreferenced (`any()` is false)
    if dep.optional:
        feats = _activating_features(spec, dep.name)
        preds.append("any(" + ", ".join(f"feature = {_q(f)}" for f in feats) + ")")
    if not preds:
        return None
    return preds[0] if len(preds) == 1 else f"all({', '.join(preds)})"


def _pushes(spec: CrateSpec, deps: Iterable[Dep], indent: str) -> list[str]:
    out: list[str] = []
    for dep in deps:
        cfg = _cfg_for(spec, dep)
        if cfg is not None:
            out.append(f"{indent}#[cfg({cfg})]")
        out.append(
            f'{indent}out.push(format!("{{}}@{{}}", {dep.ident}::name(), {dep.ident}::version()));'
        )
    return out


def lib_rs(spec: CrateSpec) -> str:
    """`src/lib.rs`: identity functions plus calls into every compiled-in normal dependency."""
    if spec.lib_source is not None:
        return spec.lib_source
    normal = [d for d in spec.deps if d.kind == "normal"]
    lines = [
        f"//! GhostCrate test crate {spec.name} {spec.version}.",
        "",
        "/// The package name.",
        f"pub fn name() -> &'static str {{ {_q(spec.name)} }}",
        "/// The package version.",
        f"pub fn version() -> &'static str {{ {_q(spec.version)} }}",
        "/// The package version, under a crate-specific name.",
        f"pub fn {snake(spec.name)}_version() -> &'static str {{ {_q(spec.version)} }}",
        "",
        "/// `name@version` of each normal dependency compiled into this build.",
        "pub fn deps() -> Vec<String> {",
        "    #[allow(unused_mut)]",
        "    let mut out: Vec<String> = Vec::new();",
        *_pushes(spec, normal, "    "),
        "    out",
        "}",
        "",
        "/// The features enabled in this build.",
        "pub fn features() -> Vec<&'static str> {",
        "    #[allow(unused_mut)]",
        "    let mut out: Vec<&'static str> = Vec::new();",
    ]
    for feature in sorted(spec.features):
        lines += [f"    #[cfg(feature = {_q(feature)})]", f"    out.push({_q(feature)});"]
    lines += ["    out", "}"]
    dev = [d for d in spec.deps if d.kind == "dev"]
    if dev:
        lines += ["", "#[cfg(test)]", "mod tests {", "    #[test]", "    fn dev_deps() {"]
        lines += ["        let mut out: Vec<String> = Vec::new();"]
        lines += _pushes(spec, dev, "        ")
        lines += ["        let _ = out;", "    }", "}"]
    return "\n".join(lines) + "\n"


def build_rs(spec: CrateSpec) -> str:
    """A trivial build script that calls each build dependency."""
    lines = ["fn main() {", '    println!("cargo:rerun-if-changed=build.rs");']
    lines += ["    let mut out: Vec<String> = Vec::new();"]
    lines += _pushes(spec, [d for d in spec.deps if d.kind == "build"], "    ")
    lines += ["    let _ = out;", "}"]
    return "\n".join(lines) + "\n"


def filler(seed: str, size: int) -> bytes:
    """`size` incompressible bytes, deterministic from `seed`."""
    return hashlib.shake_256(seed.encode()).digest(size)


def crate_files(spec: CrateSpec) -> dict[str, bytes]:
    """The archive's files, relative to the top-level directory."""
    files = {"Cargo.toml": cargo_toml(spec).encode(), "src/lib.rs": lib_rs(spec).encode()}
    if spec.needs_build_script:
        files["build.rs"] = build_rs(spec).encode()
    if spec.extra_bytes > 0:
        files["data.bin"] = filler(f"{spec.name}-{spec.version}", spec.extra_bytes)
    return files


def build_crate(spec: CrateSpec) -> bytes:
    """A deterministic `.crate`: gzip'd tar with one top-level `{name}-{version}/` directory."""
    top = f"{spec.name}-{spec.version}"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel, content in sorted(crate_files(spec).items()):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def sha256_hex(data: bytes) -> str:
    """Hex sha256, the index `cksum` format."""
    return hashlib.sha256(data).hexdigest()


# --- index lines ------------------------------------------------------------


def split_features(
    features: Mapping[str, list[str]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split into (`features`, `features2`) like crates.io: new syntax and what depends on it."""

    def new_syntax(value: str) -> bool:
        return value.startswith("dep:") or "?/" in value

    plain = {k: list(v) for k, v in features.items() if not any(new_syntax(x) for x in v)}
    extended = {k: list(v) for k, v in features.items() if k not in plain}
    moved = True
    while moved:
        moved = False
        for k, v in list(plain.items()):
            if any(x in extended for x in v):
                extended[k] = plain.pop(k)
                moved = True
    return dict(sorted(plain.items())), dict(sorted(extended.items()))


def _index_dep(dep: Dep) -> dict[str, object]:
    obj: dict[str, object] = {
        "name": dep.name,
        "req": normalize_req(dep.req),
        "features": list(dep.features),
        "optional": dep.optional,
        "default_features": dep.default_features,
        "target": dep.target,
        "kind": dep.kind,
    }
    if dep.package is not None:
        obj["package"] = dep.package
    return obj


def index_line(spec: CrateSpec, cksum: str) -> dict[str, object]:
    """The sparse-index object for one version, field for field as crates.io writes it."""
    deps = sorted(
        spec.deps,
        key=lambda d: (d.name, _KIND_ORDER[d.kind], normalize_req(d.req), d.optional),
    )
    features, features2 = split_features(spec.features)
    obj: dict[str, object] = {
        "name": spec.name,
        "vers": spec.version,
        "deps": [_index_dep(d) for d in deps],
        "cksum": cksum,
        "features": features,
    }
    if features2:
        obj["features2"] = features2
    obj["yanked"] = spec.yanked
    if spec.links is not None:
        obj["links"] = spec.links
    if spec.rust_version is not None:
        obj["rust_version"] = spec.rust_version
    if features2:
        obj["v"] = 2
    return obj


def dumps_line(obj: Mapping[str, object]) -> str:
    """One compact JSON line, as in crates.io's index files."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --- registry ---------------------------------------------------------------


def built(spec: CrateSpec) -> BuiltCrate:
    """Build `spec` and wrap it with its checksum."""
    data = build_crate(spec)
    return BuiltCrate(spec, data, sha256_hex(data))


class Registry:
    """Built crates keyed by (lowercase name, version), in publication order. Not thread-safe."""

    def __init__(self, crates: Iterable[CrateSpec | BuiltCrate] = ()) -> None:
        self._crates: dict[tuple[str, str], BuiltCrate] = {}
        for item in crates:
            if isinstance(item, BuiltCrate):
                self.add_built(item)
            else:
                self.add(item)

    def add(self, spec: CrateSpec) -> BuiltCrate:
        """Build and publish `spec`."""
        return self.add_built(built(spec))

    def add_built(self, crate: BuiltCrate) -> BuiltCrate:
        """Publish an already built crate (a private copy, so yanks stay local)."""
        key = (crate.spec.lower, crate.spec.version)
        if key in self._crates:
            raise ValueError(f"{crate.name} {crate.version} is already published")
        own = BuiltCrate(crate.spec, crate.data, crate.cksum)
        self._crates[key] = own
        return own

    def crate(self, name: str, version: str) -> BuiltCrate | None:
        """The crate `name` `version` (name case-insensitive), or None."""
        return self._crates.get((name.lower(), version))

    def versions(self, name: str) -> list[BuiltCrate]:
        """All versions of `name` in publication order."""
        lower = name.lower()
        return [c for (n, _), c in self._crates.items() if n == lower]

    def names(self) -> list[str]:
        """Distinct crate names (case preserved), in first-publication order."""
        seen: dict[str, str] = {}
        for crate in self._crates.values():
            seen.setdefault(crate.spec.lower, crate.name)
        return list(seen.values())

    def index_file(self, name: str) -> bytes | None:
        """The index file for `name`: one line per version, newline-terminated; None if unknown."""
        versions = self.versions(name)
        if not versions:
            return None
        return "".join(dumps_line(c.index_line()) + "\n" for c in versions).encode()

    def set_yanked(self, name: str, version: str, yanked: bool = True) -> BuiltCrate:
        """Mark a version (un)yanked; only the index line changes."""
        crate = self.crate(name, version)
        if crate is None:
            raise KeyError(f"{name} {version} is not published")
        crate.spec = replace(crate.spec, yanked=yanked)
        return crate

    def yank(self, name: str, version: str) -> BuiltCrate:
        """Yank a version."""
        return self.set_yanked(name, version, True)

    def unyank(self, name: str, version: str) -> BuiltCrate:
        """Un-yank a version."""
        return self.set_yanked(name, version, False)

    def newest(self, name: str, *, include_yanked: bool = False) -> BuiltCrate | None:
        """The most recently published (optionally non-yanked) version of `name`."""
        candidates = [c for c in self.versions(name) if include_yanked or not c.spec.yanked]
        return candidates[-1] if candidates else None

    def __iter__(self) -> Iterator[BuiltCrate]:
        return iter(list(self._crates.values()))

    def __len__(self) -> int:
        return len(self._crates)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        name, version = key
        return isinstance(name, str) and (name.lower(), version) in self._crates


# --- the standard test world ------------------------------------------------


def corpus() -> list[CrateSpec]:
    """The standard crate world, in publication order; the comments say what each exercises."""
    return [
        # Short names: the 1-, 2- and 3-character index layouts; z has two versions.
        CrateSpec("z", "0.1.0"),
        CrateSpec("z", "0.1.1"),
        CrateSpec("ab", "0.1.0", deps=(Dep("z", "0.1"),)),
        CrateSpec("abc", "0.2.0", deps=(Dep("ab", "0.1"),), rust_version="1.60"),
        # Case preserved in the index and the download URL, lowercase path; an optional
        # dependency (implicit feature) that nobody switches on, so it is never fetched.
        CrateSpec("MixedCase", "1.0.0", deps=(Dep("z", "0.1"), Dep("lazy", "0.1", optional=True))),
        CrateSpec("lazy", "0.1.0"),
        # `-` and `_` in names.
        CrateSpec("dash-name", "0.3.0"),
        CrateSpec("under_score", "0.2.0", deps=(Dep("dash-name", "0.3"),)),
        # Several versions, the newest yanked: `multi = "1"` must resolve to 1.1.0.
        CrateSpec("multi", "1.0.0"),
        CrateSpec("multi", "1.1.0"),
        CrateSpec("multi", "1.2.0", yanked=True),
        # `dep:` and `?/` feature syntax (features2, "v":2), an optional dep behind a feature.
        CrateSpec("optdep", "0.1.0", features={"fancy": []}),
        CrateSpec(
            "featly",
            "0.1.0",
            deps=(Dep("optdep", "0.1", optional=True), Dep("multi", "1")),
            features={
                "default": ["std"],
                "std": [],
                "extra": ["dep:optdep"],
                "fancy": ["optdep?/fancy"],
                "everything": ["extra", "fancy"],
            },
        ),
        # Target-specific dependencies: only the cfg(unix) one is built on Linux.
        CrateSpec("unixonly", "0.1.0"),
        CrateSpec("winonly", "0.1.0"),
        CrateSpec(
            "platform",
            "0.1.0",
            deps=(
                Dep("unixonly", "0.1", target="cfg(unix)"),
                Dep("winonly", "0.1", target="cfg(windows)"),
            ),
        ),
        # A renamed dependency: index `name` is the alias, `package` the real name.
        CrateSpec("renamer", "0.1.0", deps=(Dep("short", "0.2", package="under_score"),)),
        # Build- and dev-dependencies, `links` (hence a trivial build script).
        CrateSpec("buildhelper", "0.1.0"),
        CrateSpec("devonly", "0.1.0"),
        CrateSpec(
            "builder",
            "0.1.0",
            deps=(Dep("buildhelper", "0.1", kind="build"), Dep("devonly", "0.1", kind="dev")),
            links="ghostbuild",
        ),
        # About 3 MB of incompressible data.
        CrateSpec("bigdata", "0.1.0", extra_bytes=3_000_000),
    ]


_CORPUS_BUILT: list[BuiltCrate] | None = None


def corpus_registry() -> Registry:
    """A fresh `Registry` holding the corpus (archives built once per process)."""
    global _CORPUS_BUILT  # noqa: PLW0603 - a per-process build cache
    if _CORPUS_BUILT is None:
        _CORPUS_BUILT = [built(spec) for spec in corpus()]
    return Registry(_CORPUS_BUILT)


# Dependencies of the test application: most of the corpus, including an alias in the
# app itself (`ds` for dash-name), the feature-gated optional dep and the big crate.
CORPUS_APP_DEPS: dict[str, str] = {
    "z": "0.1",
    "abc": "0.2",
    "MixedCase": "1",
    "under_score": "0.2",
    "ds": '{ package = "dash-name", version = "0.3" }',
    "multi": "1",
    "featly": '{ version = "0.1", features = ["extra", "fancy"] }',
    "platform": "0.1",
    "renamer": "0.1",
    "builder": "0.1",
    "bigdata": "0.1",
}


def make_workspace(root: Path, deps: Mapping[str, str]) -> Path:
    """Write a binary package `app` at `root` whose main calls every dependency.

    `deps` maps the dependency key (alias) to a version requirement, or to a raw TOML
    inline table when the value starts with `{`. Running the binary prints one line per
    dependency: `alias => name@version deps=[...] features=[...]`.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "src").mkdir(exist_ok=True)
    dep_lines = [
        f"{_key(key)} = {value if value.lstrip().startswith('{') else _q(value)}"
        for key, value in deps.items()
    ]
    manifest = [
        "[package]",
        'name = "app"',
        'version = "0.1.0"',
        'edition = "2021"',
        "publish = false",
        "",
        "[workspace]",
        "",
        "[dependencies]",
        *dep_lines,
    ]
    (root / "Cargo.toml").write_text("\n".join(manifest) + "\n")
    body = []
    for key in deps:
        ident = key.replace("-", "_")
        body.append(
            f'    println!("{key} => {{}}@{{}} deps={{:?}} features={{:?}}", '
            f"{ident}::name(), {ident}::version(), {ident}::deps(), {ident}::features());"
        )
    (root / "src" / "main.rs").write_text("fn main() {\n" + "\n".join(body) + "\n}\n")
    return root


def parse_app_output(stdout: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """Parse the app's output into {alias: (name@version, deps, features)}."""
    result: dict[str, tuple[str, list[str], list[str]]] = {}
    for line in stdout.splitlines():
        alias, _, rest = line.partition(" => ")
        ident, _, rest = rest.partition(" deps=")
        deps_s, _, feats_s = rest.partition(" features=")
        result[alias] = (ident, json.loads(deps_s), json.loads(feats_s))
    return result
