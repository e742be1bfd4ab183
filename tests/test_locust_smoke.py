"""The locust scenario runs against a real appliance (a smoke run: it works, not how fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance

pytestmark = pytest.mark.e2e

LOCUSTFILE = Path(__file__).resolve().parent.parent / "benchmarks" / "locustfile.py"


def test_the_locust_scenario_runs_without_failures(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    appliance = start_appliance()
    locust = Path(sys.executable).parent / "locust"
    result = subprocess.run(
        [
            str(locust),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
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
        env={**os.environ, "GHOSTCRATE_LOCUST_ROOTS": "featly,platform,MixedCase,builder"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout + result.stderr
    assert "/index/[path]" in summary
    assert "/api/v1/crates/[name]/[version]/download" in summary
    downloads = appliance.metric(
        "ghostcrate_http_requests_total",
        route="/api/v1/crates/{name}/{version}/download",
        status="200",
    )
    assert downloads > 0
