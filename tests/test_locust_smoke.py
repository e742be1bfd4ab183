"""The locust scenario runs against a real appliance (a smoke run: it works, not how fast).

Cargo users and a publishing user (with a real token) run together; locust exits
with a failure status if any request failed, publishes included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.private import add_user, create_token

pytestmark = pytest.mark.e2e

LOCUSTFILE = Path(__file__).resolve().parent.parent / "benchmarks" / "locustfile.py"


def test_the_locust_scenario_runs_without_failures(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    appliance = start_appliance()
    add_user(appliance, "bench")
    token = create_token(appliance, "bench")
    locust = Path(sys.executable).parent / "locust"
    result = subprocess.run(
        [
            str(locust),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            # Nine cargo users to one publisher: the fifth user locust starts publishes.
            "-u",
            "5",
            "-r",
            "5",
            "-t",
            "4s",
            "--host",
            appliance.url,
            "--only-summary",
            "--stop-timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={
            **os.environ,
            "GHOSTCRATE_LOCUST_ROOTS": "featly,platform,MixedCase,builder",
            "GHOSTCRATE_BENCH_TOKEN": token,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout + result.stderr
    assert "/index/[path]" in summary
    assert "/api/v1/crates/[name]/[version]/download" in summary
    assert "/api/v1/crates/new" in summary
    downloads = appliance.metric(
        "ghostcrate_http_requests_total",
        route="/api/v1/crates/{name}/{version}/download",
        status="200",
    )
    assert downloads > 0
    publishes = appliance.metric(
        "ghostcrate_http_requests_total", route="/api/v1/crates/new", status="200"
    )
    assert publishes > 0
    refused = sum(
        appliance.metric("ghostcrate_http_requests_total", route="/api/v1/crates/new", status=s)
        for s in ("400", "401", "403", "409", "413", "500", "503")
    )
    assert refused == 0
