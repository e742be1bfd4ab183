"""`[server] workers = N`: N processes on one port, sharing the disk tier."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ghostcrate.appliance.fastlane import METRICS_FLUSH_SECONDS
from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CORPUS_APP_DEPS, make_workspace
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def access_pids(appliance: Appliance, path: str, expected: int = 2) -> set[int]:
    """The pids in the access lines for `path`, once `expected` of them showed (or 5 s passed).

    Access lines are written in batches, at most `AccessSink.FLUSH_SECONDS` after the request.
    """
    deadline = time.monotonic() + 5
    while True:
        events = appliance.events()
        pids = {
            e["pid"] for e in events if e["logger"] == "ghostcrate.access" and e["path"] == path
        }
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def test_concurrent_misses_across_workers_make_one_upstream_request(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance(server={"workers": 2})
    upstream.set_latency(0.5, scope="download")
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    path = "/api/v1/crates/bigdata/0.1.0/download"
    with ThreadPoolExecutor(max_workers=24) as pool:  # a new connection per request
        results = list(pool.map(lambda _: appliance.get(path), range(24)))
    assert {status for status, _ in results} == {200}
    assert {hashlib.sha256(body).hexdigest() for _, body in results} == {big.cksum}
    assert len(access_pids(appliance, path)) == 2, "both workers should have served"
    assert upstream.download_count("bigdata", "0.1.0") == 1
    assert upstream.index_count("bigdata") == 1


def test_workers_serve_cargo_and_stop_cleanly_on_sigterm(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(server={"workers": 2})
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo = CargoEnv(tmp_path / "cargo")
    cargo.configure_replacement(appliance.index_url)
    cargo.run(["build"], app)
    assert appliance.stop(signal.SIGTERM) == 0
    events = appliance.events()
    assert events[-1]["msg"] == "stopped"


def test_a_crashed_worker_is_replaced(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(server={"workers": 2})
    events = appliance.events()
    worker_pids = [e["worker_pid"] for e in events if e["msg"] == "worker started"]
    assert len(worker_pids) == 2
    os.kill(worker_pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = appliance.events()
        if len([e for e in events if e["msg"] == "worker started"]) == 3:
            break
        time.sleep(0.1)
    restarted = [e for e in events if e["msg"] == "worker exited; restarting it"]
    assert restarted
    assert restarted[0]["worker_pid"] == worker_pids[0]
    status, _ = appliance.get("/health")
    assert status == 200


def test_workers_killed_mid_fill_are_replaced_and_their_leftovers_swept(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance(server={"workers": 2})
    crates = [("bigdata", "0.1.0"), ("featly", "0.1.0"), ("multi", "1.1.0"), ("abc", "0.2.0")]
    upstream.set_trickle(5.0, scope="download")
    pool = ThreadPoolExecutor(max_workers=len(crates))
    pending = [
        pool.submit(appliance.get, f"/api/v1/crates/{name}/{version}/download")
        for name, version in crates
    ]
    deadline = time.monotonic() + 5
    # Every fill under way; the big crate's is on disk (small ones wait in memory).
    while not (
        list(appliance.data_dir.rglob(".tmp-bigdata-*"))
        and all(upstream.download_count(name, version) for name, version in crates)
    ):
        assert time.monotonic() < deadline, "the fills were not under way"
        time.sleep(0.05)
    workers = [e["worker_pid"] for e in appliance.events() if e["msg"] == "worker started"]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    for future in pending:
        assert future.result(timeout=10)[0] in (0, 502)  # cut off by the kill
    pool.shutdown()
    upstream.clear_faults()

    deadline = time.monotonic() + 15
    # Replaced once both new workers listen (and swept their dead predecessors' files).
    while len([e for e in appliance.events() if e["msg"] == "listening"]) < 4:
        assert time.monotonic() < deadline, "the workers were not replaced"
        time.sleep(0.1)
    assert list(appliance.data_dir.rglob(".tmp-*")) == []
    for name, version in crates:
        status, body = appliance.get(f"/api/v1/crates/{name}/{version}/download")
        crate = upstream.registry.crate(name, version)
        assert crate is not None
        assert (status, hashlib.sha256(body).hexdigest()) == (200, crate.cksum)


def test_metrics_add_up_over_all_workers(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(server={"workers": 2})
    path = "/index/3/a/abc"
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: appliance.get(path)[0], range(30)))
    assert statuses == [200] * 30
    assert len(access_pids(appliance, path)) == 2
    # Each worker hands its counts to the shared files at least once a second; then
    # whichever worker answers /metrics reports every worker's counts.
    time.sleep(METRICS_FLUSH_SECONDS * 1.5)
    for _ in range(4):
        served = appliance.metric(
            "ghostcrate_http_requests_total", route="/index/{path}", status="200"
        )
        assert served == 30


def test_the_disk_limit_holds_for_all_workers_together(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    limit = len(big.data) + 20_000
    appliance = start_appliance(server={"workers": 2}, tables={"cache": {"disk_max_bytes": limit}})
    crates = [c for c in upstream.registry if c.name != "bigdata"]
    paths = [f"/api/v1/crates/{c.name}/{c.version}/download" for c in crates]
    paths.insert(len(paths) // 2, "/api/v1/crates/bigdata/0.1.0/download")
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda p: appliance.get(p)[0], paths))
    assert set(statuses) == {200}
    cache = appliance.data_dir / "cache"
    deadline = time.monotonic() + 5
    while sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) > limit:
        assert time.monotonic() < deadline, "the workers together went over the limit"
        time.sleep(0.1)
