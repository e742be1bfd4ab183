"""Across the air gap: warm, export, import into an offline mirror, build with no upstream."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import CORPUS_APP_DEPS, CrateSpec, make_workspace
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
    assert "exported" in exported.stdout
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
