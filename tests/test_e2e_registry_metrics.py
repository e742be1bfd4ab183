"""The registry's metrics (publishes, yanks, auth failures, database time), over all workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.appliance import Appliance
from tests.test_e2e_private_durability import admin_token, crate_of, publish_request

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def settled(appliance: Appliance, name: str, expected: float, **labels: str) -> float:
    """The sample once it reaches `expected` (workers hand values over within a second)."""
    deadline = time.monotonic() + 5
    value = appliance.metric(name, **labels)
    while value < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = appliance.metric(name, **labels)
    return value


def test_registry_metrics_add_up_over_both_workers(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(server={"workers": 2}, tables={"auth": {"read_private": ["token"]}})
    token = admin_token(appliance)
    for number in range(6):  # spread over both workers (each connection picks one)
        assert (
            publish_request(appliance, token, crate_of(f"counted-{number}", "1.0.0")[0])[0] == 200
        )
    # Refused: a version already taken, and a publish with a token nobody issued.
    assert publish_request(appliance, token, crate_of("counted-0", "1.0.0")[0])[0] == 409
    assert publish_request(appliance, "gcr_" + "x" * 43, crate_of("other", "1.0.0")[0])[0] == 403
    auth = {"Authorization": token}
    for _ in range(2):
        assert (
            appliance.request("DELETE", "/api/v1/crates/counted-1/1.0.0/yank", headers=auth)[0]
            == 200
        )
        assert (
            appliance.request("PUT", "/api/v1/crates/counted-1/1.0.0/unyank", headers=auth)[0]
            == 200
        )
    # A reader without a token is told the private crate does not exist.
    assert appliance.get("/index/co/un/counted-2")[0] == 404
    assert appliance.get("/index/co/un/counted-2", auth)[0] == 200

    assert settled(appliance, "ghostcrate_registry_publishes_total", 6, result="published") == 6
    assert settled(appliance, "ghostcrate_registry_publishes_total", 1, result="refused") == 1
    assert settled(appliance, "ghostcrate_registry_yanks_total", 2, action="yank") == 2
    assert settled(appliance, "ghostcrate_registry_yanks_total", 2, action="unyank") == 2
    assert settled(appliance, "ghostcrate_auth_failures_total", 1, reason="forbidden") == 1
    assert settled(appliance, "ghostcrate_auth_failures_total", 1, reason="hidden") == 1
    writes = settled(appliance, "ghostcrate_registry_database_seconds_count", 10, op="write")
    assert writes >= 10  # 6 publishes and 4 yanks, at least
    assert appliance.metric("ghostcrate_registry_database_seconds_count", op="read") > 0
