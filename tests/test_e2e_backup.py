"""`ghostcrate backup` / `backup --verify` / `restore` against a serving, publishing appliance."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import index_path, make_workspace
from tests.support.private import configure_registry
from tests.test_e2e_private_durability import admin_token, crate_of, publish_request

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PUBLISHERS = 4


class Storm:
    """Publishers that publish new crates until stopped, noting when each was answered."""

    def __init__(self, appliance: Appliance, token: str) -> None:
        self._appliance = appliance
        self._token = token
        self._stop = threading.Event()
        #: (name, cksum, when its 200 arrived)
        self.answered: list[tuple[str, str, float]] = []
        self._threads = [
            threading.Thread(target=self._publish, args=(n,)) for n in range(PUBLISHERS)
        ]

    def __enter__(self) -> Storm:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.answered) < count:
            assert time.monotonic() < deadline, f"only {len(self.answered)} publishes answered"
            time.sleep(0.05)

    def _publish(self, publisher: int) -> None:
        number = 0
        while not self._stop.is_set():
            name = f"storm-{publisher}-{number}"
            body, cksum = crate_of(name, "1.0.0", extra_bytes=2000)
            status, answer = publish_request(self._appliance, self._token, body)
            assert status == 200, answer
            self.answered.append((name, cksum, time.time()))
            number += 1


def index_cksum(appliance: Appliance, name: str) -> str | None:
    status, body = appliance.get(f"/index/{index_path(name)}")
    if status != 200:
        return None
    return str(json.loads(body.splitlines()[-1])["cksum"])


def test_a_backup_taken_during_a_publish_storm_restores_every_answered_publish(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(server={"workers": 2})
    token = admin_token(appliance)
    backups = tmp_path / "backups"
    backups.mkdir()
    with Storm(appliance, token) as storm:
        storm.wait_for(12)
        began = time.time()
        result = appliance.run("backup", "--output", str(backups))
        assert result.returncode == 0, result.stderr
        storm.wait_for(len(storm.answered) + 8)  # still publishing after the backup
    backup = Path(result.stdout.strip())
    assert backup.parent == backups
    assert backup.name.startswith("ghostcrate-backup-")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # it holds secrets
    before = [(name, cksum) for name, cksum, at in storm.answered if at < began]
    assert len(before) >= 12

    verified = appliance.run("backup", "--verify", str(backup))
    assert verified.returncode == 0, verified.stderr
    assert "a good backup" in verified.stderr

    # Lose everything; restore into the empty data_dir; serve again.
    assert appliance.stop() == 0
    shutil.rmtree(appliance.data_dir)
    restored = appliance.run("restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    again = appliance.run("restore", str(backup))
    assert again.returncode != 0
    assert "is not empty" in again.stderr
    appliance.start()
    for name, cksum in before:
        assert index_cksum(appliance, name) == cksum, f"{name} was answered before the backup"
        status, crate = appliance.get(f"/api/v1/crates/{name}/1.0.0/download")
        assert status == 200
        assert hashlib.sha256(crate).hexdigest() == cksum

    # cargo fetches every one of them from the restored registry.
    with CargoEnv(tmp_path / "cargo") as cargo:
        configure_registry(cargo, appliance)
        project = make_workspace(tmp_path / "app", {name: "=1.0.0" for name, _ in before})
        cargo.run(["fetch"], project)
        locked = (project / "Cargo.lock").read_text()
        for name, cksum in before:
            assert f'name = "{name}"' in locked
            assert cksum in locked


def damaged(backup: Path, target: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """A copy of `backup` with each member's bytes passed through `change`."""
    with tarfile.open(backup, "r:gz") as source, tarfile.open(target, "w:gz") as copy:
        for member in source:
            handle = source.extractfile(member)
            assert handle is not None
            data = change(member.name, handle.read())
            member.size = len(data)
            copy.addfile(member, io.BytesIO(data))
    return target


def test_verify_finds_damage_and_restore_refuses_it(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    token = admin_token(appliance)
    for number in range(3):
        assert publish_request(appliance, token, crate_of(f"kept-{number}", "1.0.0")[0])[0] == 200
    backup = tmp_path / "good.tar.gz"
    result = appliance.run("backup", "--output", str(backup))
    assert result.returncode == 0, result.stderr

    def flip_a_crate(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(".crate") else data

    def drop_a_version(name: str, data: bytes) -> bytes:  # the manifest says it all is fine
        if name != "MANIFEST.json":
            return data
        manifest = json.loads(data)
        crate = next(path for path in manifest["files"] if path.endswith(".crate"))
        manifest["files"][crate]["sha256"] = "0" * 64
        return json.dumps(manifest).encode()

    cases = {
        "flipped": (damaged(backup, tmp_path / "flipped.tar.gz", flip_a_crate), "damaged"),
        "manifest": (damaged(backup, tmp_path / "lying.tar.gz", drop_a_version), "damaged"),
    }
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    cases["truncated"] = (truncated, "not a readable GhostCrate backup")
    not_a_backup = tmp_path / "other.tar.gz"
    not_a_backup.write_bytes(gzip.compress(b"hello"))
    cases["other"] = (not_a_backup, "not a readable GhostCrate backup")
    for case, (path, message) in cases.items():
        checked = appliance.run("backup", "--verify", str(path))
        assert checked.returncode == 1, (case, checked.stderr)
        assert message in checked.stderr, (case, checked.stderr)
        assert "failed verification" in checked.stderr

    # restore verifies first: a damaged backup leaves the empty data_dir empty.
    empty = tmp_path / "empty"
    refused = appliance.run("restore", str(cases["flipped"][0]), "--data-dir", str(empty))
    assert refused.returncode == 1, refused.stderr
    assert list(empty.iterdir()) == []


def test_what_a_backup_holds_and_keeping_the_newest(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    token = admin_token(appliance)
    assert publish_request(appliance, token, crate_of("held", "1.0.0")[0])[0] == 200
    assert appliance.get("/index/3/a/abc")[0] == 200  # a mirrored file in the cache
    # The session signing key the server made at its first start.
    [signing_key] = (appliance.data_dir / "keys").glob("session-*.pem")

    plain = tmp_path / "plain.tar.gz"
    assert appliance.run("backup", "-o", str(plain)).returncode == 0
    with tarfile.open(plain) as archive:
        names = set(archive.getnames())
    assert {"registry.db", "MANIFEST.json", f"keys/{signing_key.name}"} <= names
    assert f"config/{appliance.config.name}" in names
    assert not [name for name in names if name.startswith("cache/")]  # fetched again

    full = tmp_path / "full.tar.gz"
    assert appliance.run("backup", "-o", str(full), "--with-cache").returncode == 0
    with tarfile.open(full) as archive:
        assert any(name.startswith("cache/index/") for name in archive.getnames())

    restored_dir = tmp_path / "restored"
    result = appliance.run("restore", str(plain), "--data-dir", str(restored_dir))
    assert result.returncode == 0, result.stderr
    key = restored_dir / "keys" / signing_key.name
    assert key.read_bytes() == signing_key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    database = restored_dir / "private" / "registry.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    config = restored_dir / "restored-config" / appliance.config.name
    assert config.read_text() == appliance.config.read_text()

    kept = tmp_path / "kept"
    kept.mkdir()
    for _ in range(4):
        result = appliance.run("backup", "-o", str(kept), "--keep", "2")
        assert result.returncode == 0, result.stderr
    assert len(list(kept.iterdir())) == 2
    assert appliance.run("backup", "-o", str(plain), "--keep", "2").returncode == 2
