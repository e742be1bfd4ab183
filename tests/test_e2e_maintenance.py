"""`ghostcrate verify` and `ghostcrate gc` on the data directory of a running server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from tests.support.appliance import Appliance
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
CRATES = [("z", "0.1.1"), ("abc", "0.2.0"), ("multi", "1.1.0"), ("bigdata", "0.1.0")]


def fill(appliance: Appliance) -> None:
    for name, version in CRATES:
        status, _ = appliance.get(f"/api/v1/crates/{name}/{version}/download")
        assert status == 200


def test_verify_removes_a_corrupted_crate_while_serving(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance()
    fill(appliance)
    crates = appliance.data_dir / "cache" / "crates"
    damaged = crates / "abc" / "abc-0.2.0.crate"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    stray = crates / "nameless" / "nameless-1.0.0.crate"  # no index entry vouches for it
    stray.parent.mkdir()
    stray.write_bytes(b"whatever")

    result = appliance.run("verify")
    assert result.returncode == 1, result.stderr
    assert "removed disk:crates/abc/abc-0.2.0.crate" in result.stdout
    assert "1 failed and were removed" in result.stdout
    assert "unverifiable disk:crates/nameless/nameless-1.0.0.crate" in result.stderr
    assert "verify: " in result.stderr  # progress
    assert not damaged.exists()
    assert (crates / "z" / "z-0.1.1.crate").exists()

    again = appliance.run("verify")
    assert again.returncode == 0, again.stdout + again.stderr
    status, body = appliance.get("/api/v1/crates/abc/0.2.0/download")
    crate = upstream.registry.crate("abc", "0.2.0")
    assert crate is not None
    assert (status, hashlib.sha256(body).hexdigest()) == (200, crate.cksum)
    assert upstream.download_count("abc", "0.2.0") == 2  # fetched again after removal


def test_verify_removes_a_damaged_index_file(start_appliance: StartAppliance) -> None:
    appliance = start_appliance()
    fill(appliance)
    index_file = appliance.data_dir / "cache" / "index" / "3" / "a" / "abc"
    index_file.write_bytes(index_file.read_bytes() + b"{not json\n")
    result = appliance.run("verify")
    assert result.returncode == 1
    assert "removed disk:index/3/a/abc" in result.stdout
    assert appliance.get("/index/3/a/abc")[0] == 200


def test_gc_evicts_to_the_limit_and_removes_orphans_while_serving(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance()
    fill(appliance)
    cache = appliance.data_dir / "cache"
    orphan = cache / "crates" / "z" / "notes.txt"
    orphan.write_text("left by hand")
    abandoned = cache / "crates" / "z" / ".tmp-z-0.1.0.crate.deadbeef"
    abandoned.write_bytes(b"partial")
    (cache / "crates" / "empty" / "dir").mkdir(parents=True)

    limit = 1_000_000  # bigdata alone is 3 MB
    result = appliance.run("gc", env={"GHOSTCRATE_CACHE__DISK_MAX_BYTES": str(limit)})
    assert result.returncode == 0, result.stderr
    assert "removed orphan crates/z/notes.txt" in result.stdout
    assert "removed 1 abandoned temporary files" in result.stdout
    on_disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert on_disk <= limit
    assert not orphan.exists()
    assert not abandoned.exists()
    assert not (cache / "crates" / "empty").exists()
    for name, version in CRATES:  # evicted crates come back from the upstream, verified
        status, body = appliance.get(f"/api/v1/crates/{name}/{version}/download")
        crate = upstream.registry.crate(name, version)
        assert crate is not None
        assert (status, hashlib.sha256(body).hexdigest()) == (200, crate.cksum)


@pytest.mark.parametrize("command", [("verify",), ("gc",), ("warm", "--crate", "z")])
def test_commands_write_for_a_person_unless_asked_for_log_lines(
    start_appliance: StartAppliance, command: tuple[str, ...]
) -> None:
    appliance = start_appliance()
    fill(appliance)
    quiet = appliance.run(*command)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip()  # the summary
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("{")], quiet.stderr
    for flag in (("-v",), ("--log-format", "json")):
        loud = appliance.run(*command, *flag)
        assert loud.returncode == 0, loud.stderr
        assert [line for line in loud.stderr.splitlines() if line.startswith("{")], flag
