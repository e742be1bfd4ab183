"""Private crates across the air gap: export --private, import on an offline mirror, build."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, Dep, corpus_registry, make_workspace, parse_app_output
from tests.support.private import (
    add_user,
    configure_registry,
    create_token,
    owner,
    publish,
    write_package,
)
from tests.support.upstream import FakeUpstream
from tests.test_e2e_bundles import manifest_files, rewrite_bundle

pytestmark = pytest.mark.e2e

CORE = CrateSpec("acme-core", "1.0.0")
UTILS = CrateSpec("acme-utils", "1.0.0", deps=(Dep("acme-core", "1"), Dep("z", "0.1")))
CORE_CRATE = "private/crates/acme-core/acme-core-1.0.0.crate"
CORE_RECORD = "private/crates/acme-core/acme-core-1.0.0.json"


@dataclass
class Connected:
    """The connected side: its running appliance and upstream, the workspace, two bundles."""

    appliance: Appliance
    upstream: FakeUpstream
    app: Path
    private: Path
    mirror_only: Path
    workdir: Path


@pytest.fixture(scope="module")
def connected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connected]:
    workdir = tmp_path_factory.mktemp("connected")
    with FakeUpstream(corpus_registry()) as upstream:
        appliance = Appliance(workdir / "appliance", upstream.url).start()
        try:
            add_user(appliance, "alice", admin=True)
            cargo = CargoEnv(workdir / "cargo-alice")
            configure_registry(cargo, appliance, create_token(appliance, "alice"))
            publish(cargo, write_package(workdir / "core", CORE))
            publish(cargo, write_package(workdir / "utils", UTILS))
            app = make_workspace(workdir / "app", {"acme-utils": "1", "multi": "1"})
            consumer = CargoEnv(workdir / "consumer")
            configure_registry(consumer, appliance)
            consumer.run(["fetch"], app)
            private, mirror_only = workdir / "private.tar", workdir / "mirror.tar"
            for bundle, options in ((private, ["--private"]), (mirror_only, [])):
                exported = appliance.run("export", "--output", str(bundle), *options)
                assert exported.returncode == 0, exported.stderr
            yield Connected(appliance, upstream, app, private, mirror_only, workdir)
        finally:
            appliance.stop()


def far_side(tmp_path: Path, upstream: FakeUpstream, **server: object) -> Appliance:
    """An offline appliance with an empty data directory."""
    return Appliance(tmp_path / "far", upstream.url, offline=True, server=server or None)


def registered(appliance: Appliance) -> list[tuple[str, str]]:
    """(name, version) of the private versions in an appliance's registry database."""
    database = appliance.data_dir / "private" / "registry.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT c.name, v.num FROM versions v JOIN crates c ON c.id = v.crate_id ORDER BY 1"
        ).fetchall()


def manifest_version(bundle: Path) -> int:
    with tarfile.open(bundle) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    return int(manifest["version"])


def test_private_crates_cross_the_air_gap_and_build_offline(
    connected: Connected, tmp_path: Path
) -> None:
    carried = {key for key in manifest_files(connected.private) if key.startswith("private/")}
    assert carried == {
        CORE_CRATE,
        CORE_RECORD,
        "private/crates/acme-utils/acme-utils-1.0.0.crate",
        "private/crates/acme-utils/acme-utils-1.0.0.json",
    }
    with tarfile.open(connected.private) as archive:
        record = json.load(archive.extractfile("files/" + CORE_RECORD))  # type: ignore[arg-type]
    assert record["owners"] == ["alice"]
    assert "gcr_" not in json.dumps(record)
    before = len(connected.upstream.requests)

    far = far_side(tmp_path, connected.upstream)
    add_user(far, "alice")  # the carried owner, a user here too
    imported = far.run("import", str(connected.private))
    assert imported.returncode == 0, imported.stderr
    assert "private crates: 2 versions registered, 0 already here" in imported.stdout
    assert "registered acme-core@1.0.0" in imported.stdout
    again = far.run("import", str(connected.private))
    assert again.returncode == 0, again.stderr
    assert "0 files added" in again.stdout
    assert "private crates: 0 versions registered, 2 already here" in again.stdout
    assert registered(far) == [("acme-core", "1.0.0"), ("acme-utils", "1.0.0")]
    # Each registered version is in the audit log, as the command's operator's doing.
    audited = far.run("audit", "--json", "--crate", "acme-core").stdout.splitlines()
    (entry,) = (json.loads(line) for line in audited)
    assert (entry["action"], entry["version"], entry["actor"]) == ("import", "1.0.0", None)
    assert entry["credential"].startswith("cli ")

    far.start()
    try:
        cargo = CargoEnv(tmp_path / "far-cargo")
        configure_registry(cargo, far, create_token(far, "alice"))
        output = parse_app_output(cargo.run(["run", "-q"], connected.app).stdout)
        assert output["acme-utils"][0] == "acme-utils@1.0.0"
        assert output["acme-utils"][1] == ["acme-core@1.0.0", "z@0.1.1"]
        assert output["multi"][0] == "multi@1.1.0"
        assert "alice" in owner(cargo, "acme-core", "--list").stdout
    finally:
        far.stop()
    assert len(connected.upstream.requests) == before  # the far side never asked it


TAMPERED = {
    "crate": ({CORE_CRATE: b"other bytes"}, "acme-core@1.0.0 differs from its index entry"),
    "entry": ({"entry": "{not json"}, "acme-core@1.0.0: its index entry is not JSON"),
    "entry-version": (
        {"entry_vers": "9.9.9"},
        "acme-core@1.0.0: its index entry says acme-core@9.9.9",
    ),
}


def tampered_record(bundle: Path, change: dict[str, str]) -> bytes:
    with tarfile.open(bundle) as archive:
        record = json.load(archive.extractfile("files/" + CORE_RECORD))  # type: ignore[arg-type]
    if "entry" in change:
        record["entry"] = change["entry"]
    if "entry_vers" in change:
        record["entry"] = json.dumps(json.loads(record["entry"]) | {"vers": change["entry_vers"]})
    return json.dumps(record).encode()


@pytest.mark.parametrize(("change", "refusal"), TAMPERED.values(), ids=TAMPERED)
def test_a_tampered_private_crate_is_refused_and_nothing_is_registered(
    connected: Connected, tmp_path: Path, change: dict[str, object], refusal: str
) -> None:
    files = {k: v for k, v in change.items() if isinstance(v, bytes)}
    if not files:
        text = {k: str(v) for k, v in change.items()}
        files = {CORE_RECORD: tampered_record(connected.private, text)}
    tampered = tmp_path / "tampered.tar"
    rewrite_bundle(connected.private, tampered, files, fix_manifest=True)
    far = far_side(tmp_path, connected.upstream)
    result = far.run("import", str(tampered))
    assert result.returncode == 1, result.stdout
    assert refusal in result.stderr
    assert "nothing was imported" in result.stderr
    assert registered(far) == []
    assert far.cached_crates() == set()  # nor its mirror files


def test_a_version_here_with_another_checksum_refuses_the_bundle(
    connected: Connected, tmp_path: Path
) -> None:
    far = far_side(tmp_path, connected.upstream)
    assert far.run("import", str(connected.private)).returncode == 0
    other = b"another acme-core 1.0.0"
    cksum = hashlib.sha256(other).hexdigest()
    with tarfile.open(connected.private) as archive:
        record = json.load(archive.extractfile("files/" + CORE_RECORD))  # type: ignore[arg-type]
    entry = json.loads(record["entry"]) | {"cksum": cksum}
    record |= {"cksum": cksum, "size": len(other), "entry": json.dumps(entry)}
    forged = tmp_path / "forged.tar"
    files = {CORE_CRATE: other, CORE_RECORD: json.dumps(record).encode()}
    rewrite_bundle(connected.private, forged, files, fix_manifest=True)
    result = far.run("import", str(forged))
    assert result.returncode == 1
    assert "acme-core@1.0.0 is already here with another checksum" in result.stderr
    assert "nothing was imported" in result.stderr


def test_export_without_private_carries_no_private_crate(
    connected: Connected, tmp_path: Path
) -> None:
    keys = manifest_files(connected.mirror_only)
    assert not any(key.startswith("private/") for key in keys)
    assert any(key.startswith("crates/multi/") for key in keys)
    assert manifest_version(connected.mirror_only) == 1  # older GhostCrates import it
    assert manifest_version(connected.private) == 2
    far = far_side(tmp_path, connected.upstream)
    imported = far.run("import", str(connected.mirror_only))
    assert imported.returncode == 0, imported.stderr
    assert "private crates" not in imported.stdout
    assert registered(far) == []


def test_lockfile_and_since_select_private_versions(connected: Connected, tmp_path: Path) -> None:
    app = make_workspace(
        tmp_path / "core-only", {"acme-core": '{ version = "1", registry = "ghostcrate" }'}
    )
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, connected.appliance)
    cargo.run(["generate-lockfile"], app)
    locked = tmp_path / "locked.tar"
    exported = connected.appliance.run(
        "export", "-o", str(locked), "--private", "--lockfile", str(app / "Cargo.lock")
    )
    assert exported.returncode == 0, exported.stderr
    assert "private crates: 1 versions carried" in exported.stdout
    assert {k for k in manifest_files(locked) if k.startswith("private/")} == {
        CORE_CRATE,
        CORE_RECORD,
    }
    without = connected.appliance.run("export", "-o", str(locked), "--lockfile", str(app))
    assert without.returncode == 0, without.stderr
    assert "1 locked packages are private crates, left out" in without.stderr

    since = tmp_path / "since.tar"
    exported = connected.appliance.run(
        "export", "-o", str(since), "--private", "--since", str(connected.private)
    )
    assert exported.returncode == 0, exported.stderr
    assert f"0 versions carried; 2 carried by {connected.private} left out" in exported.stdout
    assert manifest_files(since) == {}


def test_import_while_serving_shows_the_crates_at_once(
    connected: Connected, tmp_path: Path
) -> None:
    far = far_side(tmp_path, connected.upstream, workers=2).start()
    try:
        for _ in range(4):  # each worker may keep its answer for a mirrored name
            assert far.get("/index/ac/me/acme-core")[0] == 404
        imported = far.run("import", str(connected.private))
        assert imported.returncode == 0, imported.stderr
        for _ in range(8):  # both workers, right after the import
            status, body = far.get("/index/ac/me/acme-core")
            assert status == 200, body
            assert json.loads(body.splitlines()[0])["vers"] == "1.0.0"
    finally:
        far.stop()
