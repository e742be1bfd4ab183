"""What schemathesis found, each kept fixed: malformed HTTP, 405s and their `Allow`."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import pytest

from tests.support.appliance import Appliance
from tests.support.rawhttp import answers, exchange

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


async def test_a_header_with_a_nul_gets_400_in_cargos_form_and_no_logged_error(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    offset = appliance.log.stat().st_size
    sent = await exchange(
        "127.0.0.1",
        appliance.port,
        b"GET /api/v1/crates?q=x HTTP/1.1\r\nHost: h\r\nX-Probe: a\x00b\r\n\r\n",
    )
    [(status, body)] = answers(sent.raw)
    assert status == 400
    assert sent.closed
    assert b"content-type: application/json" in sent.raw.lower()
    assert json.loads(body)["errors"][0]["detail"].startswith("bad HTTP request: ")
    events = appliance.events(offset)
    assert [e["level"] for e in events if e.get("msg") == "bad HTTP request"] == ["info"]
    assert not [e for e in events if e["level"] in ("error", "critical") or "exception" in e]


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "POST", "DELETE"])
def test_crates_new_takes_only_put_as_on_crates_io(
    start_appliance: StartAppliance, method: str
) -> None:
    appliance = start_appliance()
    status, body = appliance.request(method, "/api/v1/crates/new")
    assert status == 405
    assert (
        json.loads(body)["errors"][0]["detail"]
        == f"Method Not Allowed: {method} /api/v1/crates/new"
    )
    allow = _allow(appliance, method, "/api/v1/crates/new")
    assert allow == "PUT"


def test_a_405_names_the_methods_a_route_takes(start_appliance: StartAppliance) -> None:
    appliance = start_appliance()
    assert appliance.request("PATCH", "/api/v1/orgs")[0] == 405
    assert set(_allow(appliance, "PATCH", "/api/v1/orgs").split(",")) == {"GET", "HEAD", "POST"}


def _allow(appliance: Appliance, method: str, path: str) -> str:
    """The `Allow` header of a request's answer."""
    connection = http.client.HTTPConnection("127.0.0.1", appliance.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return str(response.getheader("Allow"))
    finally:
        connection.close()
