"""`/healthz`: liveness, answered by the lanes from the hot set, open whatever `[auth]` says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.support.appliance import Appliance
from tests.test_e2e_private_auth import h2_statuses

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def test_healthz_is_open_under_auth_required_in_every_front_end(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(server={"workers": 2}, tables={"auth": {"required": True}})
    assert appliance.get("/index/config.json")[0] == 401  # everything else asks for a token
    status, body = appliance.get("/healthz")
    assert (status, body) == (200, b'{"status":"alive"}\n')
    assert asyncio.run(h2_statuses(appliance.port, ["/healthz", "/index/config.json"], None)) == [
        200,
        401,
    ]
    # A query string sends the request to aiohttp, which answers it alike.
    assert appliance.get("/healthz?from=probe") == (200, body)


def test_healthz_is_answered_by_the_fast_lane_without_asking_anything(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    before = appliance.metric("ghostcrate_fast_lane_requests_total", result="hit")
    for _ in range(20):
        assert appliance.get("/healthz")[0] == 200
    after = 0.0
    for _ in range(30):  # the lane hands its counts to prometheus_client once a second
        after = appliance.metric("ghostcrate_fast_lane_requests_total", result="hit")
        if after - before >= 19:
            break
        time.sleep(0.2)
    # The first one fills the hot set; the rest are hits (only the lanes count hits).
    assert after - before >= 19
