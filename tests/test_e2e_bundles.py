"""Across the air gap: warm, export, import into an offline mirror, build with no upstream."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import CORPUS_APP_DEPS, CrateSpec, corpus_registry, make_workspace
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e


def rewrite_bundle(
    source: Path, target: Path, change: dict[str, bytes], fix_manifest: bool
) -> None:
    """Copy a bundle, replacing some files' bytes (and their manifest lines, if asked)."""
    with tarfile.open(source) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive]  # type: ignore[union-attr]
    manifest = json.loads(members[0][1])
    for item in manifest["files"]:
        if item["key"] in change and fix_manifest:
            item["sha256"] = hashlib.sha256(change[item["key"]]).hexdigest()
            item["size"] = len(change[item["key"]])
    with tarfile.open(target, "w") as archive:
        for member, original in members:
            data = json.dumps(manifest).encode() if member.name == "manifest.json" else original
            data = change.get(member.name.removeprefix("files/"), data)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))


@pytest.fixture
def warmed(upstream: FakeUpstream, tmp_path: Path) -> tuple[Appliance, Path, Path]:
    """A connected-side mirror warmed from a workspace's Cargo.lock, and its bundle."""
    upstream.publish(CrateSpec("multi", "1.3.0"))  # exists upstream, never warmed
    app = make_workspace(tmp_path / "app", {**CORPUS_APP_DEPS, "multi": "=1.1.0"})
    direct = CargoEnv(tmp_path / "direct")
    direct.configure_replacement(upstream.url)
    direct.run(["generate-lockfile"], app)
    connected = Appliance(tmp_path / "connected", upstream.url)
    assert connected.run("warm", str(app)).returncode == 0
    bundle = tmp_path / "carry.tar"
    exported = connected.run("export", "--output", str(bundle))
    assert exported.returncode == 0, exported.stderr
    files = int(exported.stdout.split("exported ", 1)[1].split(" files", 1)[0])
    # Progress counts files, as the summary does: all hashed, then all written.
    progress = exported.stderr.splitlines()
    assert progress[-1] == f"export: written: {files}/{files} (100%)", exported.stderr
    assert f"export: hashed: {files}/{files} (100%)" in progress
    return connected, app, bundle


def test_a_bundle_carries_a_build_across_the_air_gap(
    warmed: tuple[Appliance, Path, Path], upstream: FakeUpstream, tmp_path: Path
) -> None:
    _, app, bundle = warmed
    upstream.stop()  # the air gap
    isolated = Appliance(tmp_path / "isolated", upstream.url, offline=True)
    imported = isolated.run("import", str(bundle))
    assert imported.returncode == 0, imported.stderr
    assert "0 already present" in imported.stdout
    again = isolated.run("import", str(bundle))
    assert "0 files added" in again.stdout  # idempotent

    isolated.start()
    try:
        cargo = CargoEnv(tmp_path / "cargo")
        cargo.configure_replacement(isolated.index_url)
        cargo.run(["build"], app)
        fresh = make_workspace(tmp_path / "fresh", {"multi": "1"})
        cargo.run(["generate-lockfile"], fresh)
        locked = {p.name: p.version for p in read_lockfile(fresh) if p.source}
        assert locked["multi"] == "1.1.0"  # 1.3.0 is in the index, but its crate is not here
    finally:
        isolated.stop()


def test_a_damaged_bundle_is_refused_whole(
    warmed: tuple[Appliance, Path, Path], tmp_path: Path
) -> None:
    _, _, bundle = warmed
    damaged = tmp_path / "damaged.tar"
    rewrite_bundle(bundle, damaged, {"crates/z/z-0.1.1.crate": b"garbage"}, fix_manifest=False)
    isolated = Appliance(tmp_path / "isolated", "http://127.0.0.1:9/", offline=True)
    result = isolated.run("import", str(damaged))
    assert result.returncode == 1
    assert "crates/z/z-0.1.1.crate is damaged" in result.stderr
    assert "nothing was imported" in result.stderr
    assert not (isolated.data_dir / "cache").exists() or isolated.cached_crates() == set()


def test_a_crate_that_contradicts_its_index_entry_is_refused(
    warmed: tuple[Appliance, Path, Path], tmp_path: Path
) -> None:
    _, _, bundle = warmed
    lying = tmp_path / "lying.tar"
    rewrite_bundle(bundle, lying, {"crates/z/z-0.1.1.crate": b"other bytes"}, fix_manifest=True)
    isolated = Appliance(tmp_path / "isolated", "http://127.0.0.1:9/", offline=True)
    result = isolated.run("import", str(lying))
    assert result.returncode == 1
    assert "differs from its index entry" in result.stderr
    assert isolated.cached_crates() == set()


def test_an_incremental_export_carries_only_what_is_new(
    warmed: tuple[Appliance, Path, Path], tmp_path: Path
) -> None:
    connected, _, bundle = warmed
    assert connected.run("warm", "--crate", "lazy").returncode == 0
    increment = tmp_path / "increment.tar"
    result = connected.run("export", "--output", str(increment), "--since", str(bundle))
    assert result.returncode == 0, result.stderr
    with tarfile.open(increment) as archive:
        names = sorted(m.name for m in archive)
    assert names == [
        "files/crates/lazy/lazy-0.1.0.crate",
        "files/index/la/zy/lazy",
        "manifest.json",
    ]


def test_export_since_a_date_leaves_out_older_files(
    warmed: tuple[Appliance, Path, Path], tmp_path: Path
) -> None:
    connected, _, bundle = warmed
    future = tmp_path / "future.tar"
    result = connected.run("export", "-o", str(future), "--since", "2999-01-01")
    assert result.returncode == 0, result.stderr
    with tarfile.open(future) as archive:
        assert [m.name for m in archive] == ["manifest.json"]
    past = tmp_path / "past.tar"
    assert connected.run("export", "-o", str(past), "--since", "2000-01-01").returncode == 0
    with tarfile.open(past) as archive, tarfile.open(bundle) as full:
        assert sorted(m.name for m in archive) == sorted(m.name for m in full)
    nonsense = connected.run("export", "-o", str(past), "--since", "last tuesday")
    assert nonsense.returncode == 2  # a usage error
    assert "neither a bundle file nor a date" in nonsense.stderr


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Appliance, Path]:
    """A bundle exported by a real appliance (ab, z, their index files, config.json),
    and that appliance."""
    workdir = tmp_path_factory.mktemp("small")
    with FakeUpstream(corpus_registry()) as upstream:
        connected = Appliance(workdir / "connected", upstream.url)
        assert connected.run("warm", "--crate", "ab").returncode == 0
        bundle = workdir / "small.tar"
        assert connected.run("export", "--output", str(bundle)).returncode == 0
    return connected, bundle


def manifest_files(bundle: Path) -> dict[str, str]:
    """Key -> sha256 of the files a bundle's manifest lists."""
    with tarfile.open(bundle) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    return {item["key"]: item["sha256"] for item in manifest["files"]}


def cached_files(appliance: Appliance) -> dict[str, str]:
    """Key -> sha256 of the mirror's files in an appliance's disk tier."""
    root = appliance.data_dir / "cache"
    found = [p for part in ("index", "crates") for p in (root / part).glob("**/*") if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in found}


#: `tar -c` arguments after extracting a bundle, the manifest's name, and whether it is last.
RETARRED = {
    "dot": (["."], "./manifest.json", None),
    "dot-sorted": (["--sort=name", "."], "./manifest.json", True),
    "manifest-last": (["files", "manifest.json"], "manifest.json", True),
}


@pytest.mark.parametrize(("arguments", "manifest", "last"), RETARRED.values(), ids=RETARRED)
def test_a_bundle_tarred_again_is_imported(
    small: tuple[Appliance, Path],
    tmp_path: Path,
    arguments: list[str],
    manifest: str,
    last: bool | None,
) -> None:
    """Directories, `./` prefixes and another order carry no data (issue 13, item 11)."""
    connected, bundle = small
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-C", str(extracted), "-xf", str(bundle)], check=True)
    retarred = tmp_path / "retarred.tar"
    subprocess.run(["tar", "-C", str(extracted), "-cf", str(retarred), *arguments], check=True)
    with tarfile.open(retarred) as archive:
        names = [m.name for m in archive if m.isfile()]
        assert any(m.isdir() for m in archive)
    assert manifest in names
    assert last is None or names[-1] == manifest

    isolated = Appliance(tmp_path / "isolated", "http://127.0.0.1:9/", offline=True)
    imported = isolated.run("import", str(retarred))
    assert imported.returncode == 0, imported.stderr
    assert f"{len(manifest_files(bundle))} files added" in imported.stdout
    assert cached_files(isolated) == manifest_files(bundle)
    since = tmp_path / "since.tar"
    exported = connected.run("export", "-o", str(since), "--since", str(retarred))
    assert exported.returncode == 0, exported.stderr
    assert manifest_files(since) == {}


Members = list[tuple[tarfile.TarInfo, bytes]]
CRATE = "files/crates/z/z-0.1.1.crate"


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Members:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    info.linkname = link
    return [(info, data)]


def replacing(name: str, new: Members) -> Callable[[Members], Members]:
    return lambda members: [m for m in members if m[0].name != name] + new


def adding(new: Members) -> Callable[[Members], Members]:
    return lambda members: members + new


def retarred_and_damaged(members: Members) -> Members:
    """As tar would pack it again (`./`, directories), with one crate's bytes changed."""
    repacked = member("./", kind=tarfile.DIRTYPE) + member("./files/", kind=tarfile.DIRTYPE)
    for info, data in members:
        repacked += member("./" + info.name, b"garbage" if info.name == CRATE else data)
    return repacked


#: How a hostile bundle is made from an exported one, and what its refusal says.
HOSTILE: dict[str, tuple[Callable[[Members], Members], str]] = {
    "symlink": (
        replacing(CRATE, member(CRATE, kind=tarfile.SYMTYPE, link="/etc/passwd")),
        f"'{CRATE}' is a symbolic link",
    ),
    "symlinked-manifest": (
        lambda members: [
            *member("manifest.json", kind=tarfile.SYMTYPE, link="real.json"),
            *member("real.json", members[0][1]),
            *members[1:],
        ],
        "its manifest.json is a symbolic link, not a file",
    ),
    "hardlink": (
        replacing(CRATE, member(CRATE, kind=tarfile.LNKTYPE, link="manifest.json")),
        f"'{CRATE}' is a hard link",
    ),
    "device": (adding(member("files/null", kind=tarfile.CHRTYPE)), "is a character device"),
    "fifo": (adding(member("files/fifo", kind=tarfile.FIFOTYPE)), "'files/fifo' is a FIFO"),
    "parent": (adding(member("../outside", b"x")), "'../outside' points outside the bundle"),
    "absolute": (adding(member("/tmp/outside", b"x")), "points outside the bundle"),
    "parent-directory": (
        adding(member("files/../../up", kind=tarfile.DIRTYPE)),
        "'files/../../up' points outside the bundle",
    ),
    "unlisted": (
        adding(member("files/crates/z/z-9.9.9.crate", b"x")),
        "'files/crates/z/z-9.9.9.crate' is not in the manifest",
    ),
    "missing": (replacing(CRATE, []), "crates/z/z-0.1.1.crate is listed but missing"),
    "damaged": (retarred_and_damaged, "crates/z/z-0.1.1.crate is damaged"),
    "twice": (
        lambda members: members + [(i, d) for i, d in members if i.name == CRATE],
        f"'{CRATE}' appears twice",
    ),
    "second-manifest": (
        lambda members: members + member("./manifest.json", members[0][1]),
        "'./manifest.json' appears twice",
    ),
}


@pytest.mark.parametrize(("make", "refusal"), HOSTILE.values(), ids=HOSTILE)
def test_a_hostile_bundle_is_refused_whole(
    small: tuple[Appliance, Path],
    tmp_path: Path,
    make: Callable[[Members], Members],
    refusal: str,
) -> None:
    _, bundle = small
    with tarfile.open(bundle) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive]  # type: ignore[union-attr]
    hostile = tmp_path / "hostile.tar"
    with tarfile.open(hostile, "w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in make(members):
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    isolated = Appliance(tmp_path / "isolated", "http://127.0.0.1:9/", offline=True)
    result = isolated.run("import", str(hostile))
    assert result.returncode == 1
    assert refusal in result.stderr
    assert cached_files(isolated) == {}
