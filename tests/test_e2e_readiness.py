"""`/readyz`: what the appliance needs is checked; the upstream is reported, never failing it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import Appliance, free_port
from tests.support.private import add_user, create_token
from tests.support.s3 import S3FaultProxy, s3_values
from tests.test_e2e_private_auth import h2_statuses

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
CHECKS = {"database", "data_dir", "disk"}


def readiness(appliance: Appliance, token: str | None = None) -> tuple[int, dict[str, Any]]:
    status, body = appliance.get("/readyz", {"Authorization": token} if token else None)
    return status, json.loads(body)


@contextmanager
def immutable(directory: Path) -> Iterator[None]:
    """No file can be created in `directory` (even by root) until the block ends."""
    chattr = shutil.which("chattr")
    assert chattr is not None, "chattr is needed (Debian package: e2fsprogs)"
    subprocess.run([chattr, "+i", str(directory)], check=True)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_healthy_appliance_is_ready_and_says_what_it_checked(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(server={"workers": 2})
    status, report = readiness(appliance)
    assert status == 200, report
    assert report["status"] == "ready"
    assert set(report["checks"]) == CHECKS  # no [s3]: not checked
    assert all(check["ok"] for check in report["checks"].values())
    assert report["checks"]["disk"]["free_bytes"] >= report["checks"]["disk"]["min_free_bytes"]
    assert report["upstream"]["mode"] == "online"
    assert report["upstream"]["breaker"] == "closed"
    # Through h2c the request is relayed to the same view.
    assert asyncio.run(h2_statuses(appliance.port, ["/readyz"], None)) == [200]


def test_too_little_free_disk_or_an_unwritable_data_dir_fail_readiness(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(server={"min_free_bytes": "1000000 TiB"})
    status, report = readiness(appliance)
    assert status == 503
    assert report["status"] == "not ready"
    assert report["checks"]["disk"]["ok"] is False
    assert report["checks"]["database"]["ok"] is True

    healthy = start_appliance()
    with immutable(healthy.data_dir):
        status, report = readiness(healthy)
    assert status == 503
    assert report["checks"]["data_dir"]["ok"] is False
    assert (
        "Permission" in report["checks"]["data_dir"]["error"]
        or "not permitted" in (report["checks"]["data_dir"]["error"])
    )
    assert readiness(healthy)[0] == 200  # and back once it is writable again
    assert healthy.get("/healthz")[0] == 200  # alive all along


def test_a_dead_upstream_is_reported_but_the_mirror_stays_ready(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    appliance = Appliance(tmp_path / "appliance", dead, breaker_failures=1).start()
    try:
        assert appliance.get("/index/3/a/abc")[0] >= 500  # the upstream is asked and fails
        status, report = readiness(appliance)
        assert status == 200, report
        assert report["upstream"]["breaker"] == "open"
        assert report["upstream"]["last_answer_at"] is None
        assert "127.0.0.1" in report["upstream"]["last_error"]
    finally:
        appliance.stop()


def test_the_s3_bucket_is_checked_when_configured(
    start_appliance: StartAppliance, proxy: S3FaultProxy, bucket: str
) -> None:
    appliance = start_appliance(tables={"s3": s3_values(bucket, proxy.endpoint_url)})
    status, report = readiness(appliance)
    assert status == 200, report
    assert report["checks"]["s3"]["ok"] is True
    proxy.set_status(503)
    status, report = readiness(appliance)
    assert status == 503
    assert report["checks"]["s3"]["ok"] is False
    assert "503" in report["checks"]["s3"]["error"]
    proxy.clear_faults()
    assert readiness(appliance)[0] == 200


def test_who_may_read_readyz_follows_the_auth_policy(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(tables={"auth": {"required": True}})
    assert appliance.get("/readyz")[0] == 401
    assert appliance.get("/healthz")[0] == 200  # always open
    add_user(appliance, "ops")
    status, report = readiness(appliance, create_token(appliance, "ops"))
    assert (status, report["status"]) == (200, "ready")
