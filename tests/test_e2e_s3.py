"""The shared S3 tier end to end: two nodes on one bucket, and S3 faults that only degrade."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CORPUS_APP_DEPS, make_workspace
from tests.support.s3 import MotoServer, S3FaultProxy, s3_values
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def s3_table(bucket: str, endpoint_url: str) -> dict[str, Any]:
    return s3_values(bucket, endpoint_url, prefix="mirror")


def objects(moto: MotoServer, bucket: str) -> dict[str, int]:
    with moto.client() as client:
        listing = client.list_objects_v2(Bucket=bucket)
    return {item["Key"]: item["Size"] for item in listing.get("Contents", [])}


def wait_for_objects(moto: MotoServer, bucket: str, keys: set[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not keys <= set(objects(moto, bucket)):
        assert time.monotonic() < deadline, f"missing in S3: {keys - set(objects(moto, bucket))}"
        time.sleep(0.1)


def test_a_second_node_serves_cargo_from_the_shared_bucket_with_the_upstream_stopped(
    start_appliance: StartAppliance,
    upstream: FakeUpstream,
    moto: MotoServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3 = s3_table(bucket, moto.endpoint_url)
    first = start_appliance(tables={"s3": s3})
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo = CargoEnv(tmp_path / "cargo-1")
    cargo.configure_replacement(first.index_url)
    cargo.run(["fetch"], app)
    fetched = {f"mirror/crates/{n}/{n}-{v}.crate" for n, v in upstream.downloaded()}
    wait_for_objects(moto, bucket, fetched | {"mirror/index/3/a/abc", "mirror/index/config.json"})
    first.stop()
    lockfile = (app / "Cargo.lock").read_text()
    (app / "Cargo.lock").unlink()

    upstream.stop()
    second = start_appliance(tables={"s3": s3})  # its own, empty data_dir
    cargo = CargoEnv(tmp_path / "cargo-2")
    cargo.configure_replacement(second.index_url)
    cargo.run(["generate-lockfile"], app)  # index files from the bucket
    assert (app / "Cargo.lock").read_text() == lockfile
    cargo.run(["build"], app)  # crates from the bucket, re-verified
    assert second.metric("ghostcrate_cache_hits_total", tier="s3") >= 2 * len(fetched)


def test_a_tampered_object_in_the_bucket_is_refused_and_removed(
    start_appliance: StartAppliance, upstream: FakeUpstream, moto: MotoServer, bucket: str
) -> None:
    s3 = s3_table(bucket, moto.endpoint_url)
    first = start_appliance(tables={"s3": s3})
    assert first.get("/api/v1/crates/abc/0.2.0/download")[0] == 200
    key = "mirror/crates/abc/abc-0.2.0.crate"
    wait_for_objects(moto, bucket, {key})
    with moto.client() as client:
        client.put_object(Bucket=bucket, Key=key, Body=b"not the crate the index describes")

    second = start_appliance(tables={"s3": s3})
    status, body = second.get("/api/v1/crates/abc/0.2.0/download")
    crate = upstream.registry.crate("abc", "0.2.0")
    assert crate is not None
    assert (status, hashlib.sha256(body).hexdigest()) == (200, crate.cksum)  # from the upstream
    assert upstream.download_count("abc", "0.2.0") == 2
    assert second.metric("ghostcrate_cache_tier_errors_total", tier="s3", op="verify") == 1
    wait_for_objects(moto, bucket, {key})  # replaced by the verified copy
    assert objects(moto, bucket)[key] == len(crate.data)


@pytest.mark.parametrize("fault", ["status", "latency", "drop"])
def test_s3_faults_degrade_to_disk_and_upstream_and_s3_recovers_without_restart(
    start_appliance: StartAppliance,
    upstream: FakeUpstream,
    moto: MotoServer,
    proxy: S3FaultProxy,
    bucket: str,
    fault: str,
) -> None:
    appliance = start_appliance(tables={"s3": s3_table(bucket, proxy.endpoint_url)})
    if fault == "status":
        proxy.set_status(500)
    elif fault == "latency":
        proxy.set_latency(5.0)
    else:
        proxy.set_drop()
    started = time.monotonic()
    for name, version in [("z", "0.1.1"), ("abc", "0.2.0"), ("multi", "1.1.0")]:
        status, body = appliance.get(f"/api/v1/crates/{name}/{version}/download")
        crate = upstream.registry.crate(name, version)
        assert crate is not None
        assert (status, hashlib.sha256(body).hexdigest()) == (200, crate.cksum)
    # S3 is asked once, fails within its timeouts, then skipped: no request waits on it again.
    assert time.monotonic() - started < 6
    assert appliance.metric("ghostcrate_cache_tier_available", tier="s3") == 0

    proxy.clear_faults()
    time.sleep(0.6)  # retry_after
    assert appliance.get("/api/v1/crates/featly/0.1.0/download")[0] == 200
    wait_for_objects(moto, bucket, {"mirror/crates/featly/featly-0.1.0.crate"})
    assert appliance.metric("ghostcrate_cache_tier_available", tier="s3") == 1


def test_verify_checks_the_bucket_too(
    start_appliance: StartAppliance, moto: MotoServer, bucket: str
) -> None:
    appliance = start_appliance(tables={"s3": s3_table(bucket, moto.endpoint_url)})
    for name, version in [("z", "0.1.1"), ("abc", "0.2.0")]:
        assert appliance.get(f"/api/v1/crates/{name}/{version}/download")[0] == 200
    wait_for_objects(moto, bucket, {"mirror/crates/abc/abc-0.2.0.crate"})
    with moto.client() as client:
        client.put_object(Bucket=bucket, Key="mirror/crates/abc/abc-0.2.0.crate", Body=b"bad")
    result = appliance.run("verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[1:] == ["removed s3:crates/abc/abc-0.2.0.crate"]
    assert "mirror/crates/abc/abc-0.2.0.crate" not in objects(moto, bucket)
    assert "mirror/crates/z/z-0.1.1.crate" in objects(moto, bucket)
