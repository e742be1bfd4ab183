"""`ghostcrate serve` as an operator runs it: crashes, SIGTERM, memory, logs."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ghostcrate.cache.disk import TEMP_PREFIX
from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CORPUS_APP_DEPS, CrateSpec, index_path, make_workspace
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def temporaries(appliance: Appliance) -> list[Path]:
    return list(appliance.data_dir.rglob(f"{TEMP_PREFIX}*"))


def download(name: str, version: str) -> str:
    return f"/api/v1/crates/{name}/{version}/download"


def in_background(appliance: Appliance, paths: list[str]) -> list[threading.Thread]:
    def fetch(path: str) -> None:
        with contextlib.suppress(OSError):  # the server is killed under us: expected here
            appliance.get(path)

    threads = [threading.Thread(target=fetch, args=(p,), daemon=True) for p in paths]
    for thread in threads:
        thread.start()
    return threads


def test_kill_9_in_the_middle_of_fills_leaves_a_cache_that_serves_correctly(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    crates = [("bigdata", "0.1.0"), ("featly", "0.1.0"), ("multi", "1.1.0"), ("z", "0.1.1")]
    for name, _ in crates:  # index files first, so the fills below are crate transfers
        appliance.get(f"/index/{index_path(name)}")
    upstream.set_trickle(5.0, scope="download")
    threads = in_background(appliance, [download(n, v) for n, v in crates])
    deadline = time.monotonic() + 5

    def under_way() -> bool:
        # Every fill started; the big crate's is on disk (small ones wait in memory).
        started = all(upstream.download_count(name, version) for name, version in crates)
        return started and any("bigdata" in p.name for p in temporaries(appliance))

    while not under_way() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert under_way(), "the fills were not under way"

    appliance.stop(signal.SIGKILL)
    for thread in threads:
        thread.join(5)
    assert temporaries(appliance), "kill -9 should leave the partial fills behind"
    assert not list(appliance.data_dir.rglob("*.crate"))

    upstream.clear_faults()
    appliance.start()
    assert temporaries(appliance) == []
    for name, version in crates:
        status, body = appliance.get(download(name, version))
        crate = upstream.registry.crate(name, version)
        assert crate is not None
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == crate.cksum

    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo = CargoEnv(tmp_path / "cargo")
    cargo.configure_replacement(appliance.index_url)
    cargo.run(["build"], app)


def test_sigterm_lets_in_flight_requests_finish(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance()
    upstream.set_latency(1.0, scope="download")
    result: list[tuple[int, bytes]] = []
    worker = threading.Thread(
        target=lambda: result.append(appliance.get(download("abc", "0.2.0"))), daemon=True
    )
    worker.start()
    time.sleep(0.4)
    assert appliance.stop(signal.SIGTERM) == 0
    worker.join(5)
    crate = upstream.registry.crate("abc", "0.2.0")
    assert crate is not None
    assert result == [(200, crate.data)]
    events = appliance.events()
    assert events[-1]["msg"] == "stopped"


def test_every_request_is_logged_as_structured_json(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance()
    appliance.get("/index/3/a/abc", headers={"X-Request-Id": "trace-me-42"})
    for _ in range(2):  # a miss, then a hit sent with sendfile
        appliance.get("/api/v1/crates/bigdata/0.1.0/download")
    appliance.stop()
    events = appliance.events()
    access = [e for e in events if e["logger"] == "ghostcrate.access"]
    mine = [e for e in access if e.get("request_id") == "trace-me-42"]
    assert len(mine) == 1
    assert mine[0]["path"] == "/index/3/a/abc"
    assert mine[0]["status"] == 200
    assert mine[0]["duration_ms"] >= 0
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    downloads = [e for e in access if e["path"] == "/api/v1/crates/bigdata/0.1.0/download"]
    assert [e["status"] for e in downloads] == [200, 200]
    assert all(e["bytes"] > len(big.data) for e in downloads)  # body and headers


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def test_a_10_mb_crate_is_never_held_whole_in_memory(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    huge = upstream.publish(CrateSpec("hugecrate", "1.0.0", extra_bytes=10_000_000))
    assert len(huge.data) > 10_000_000
    appliance = start_appliance()
    assert appliance.process is not None
    pid = appliance.process.pid
    appliance.get("/index/hu/ge/hugecrate")
    appliance.get(download("z", "0.1.0"))  # warm the code paths of a fill
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    before = _memory_kib(pid)["VmRSS"]

    for _ in range(2):  # the miss (fetch, hash, write), then the hit (sendfile)
        status, body = appliance.get(download("hugecrate", "1.0.0"))
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == huge.cksum
    growth_kib = _memory_kib(pid)["VmHWM"] - before
    assert growth_kib < 6 * 1024, f"peak RSS grew by {growth_kib} KiB"


def test_the_disk_tier_can_live_outside_data_dir(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    """`[cache] dir`: the mirror's files in systemd's CacheDirectory, the registry's not."""
    cache = tmp_path / "var-cache-ghostcrate"
    appliance = start_appliance(tables={"cache": {"dir": str(cache)}})
    assert appliance.get(download("abc", "0.2.0"))[0] == 200
    assert appliance.get(f"/index/{index_path('abc')}")[0] == 200
    assert [p.name for p in cache.rglob("*.crate")] == ["abc-0.2.0.crate"]
    assert (cache / "index" / index_path("abc")).is_file()
    assert not (appliance.data_dir / "cache").exists()
