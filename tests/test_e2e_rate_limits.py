"""`[limits]`: 429 with Retry-After per route class, per token, user and address, shared
by the workers, reloadable, and never in the way of the mirror's index and downloads."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, index_path
from tests.support.h2client import H2Client
from tests.support.private import (
    add_user,
    configure_registry,
    create_token,
    errors,
    publish,
    write_package,
)
from tests.support.upstream import FakeUpstream
from tests.test_e2e_audit import until
from tests.test_e2e_workers import access_pids

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
OFF = {"per_token": 0, "per_user": 0, "per_address": 0}
DOWNLOAD = "/api/v1/crates/{name}/{version}/download"


def limits(**classes: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """`[limits.CLASS]` tables: the classes named as given, the others without limits."""
    return {f"limits.{name}": {**OFF, **classes.get(name, {})} for name in CLASSES}


CLASSES = ("publish", "login", "search", "api")


def call(
    appliance: Appliance,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request on a new connection."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = token
    request = urllib.request.Request(appliance.url + path, body, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


SIGN_IN = json.dumps({"name": "nobody", "password": "wrong password"}).encode()
#: One request of each class, and what it answers while within its budget.
REQUESTS = {
    "publish": ("PUT", "/api/v1/crates/new", b"\x00", 401),
    "login": ("POST", "/api/v1/session", SIGN_IN, 403),
    "search": ("GET", "/api/v1/crates?q=abc", None, 200),
    "api": ("GET", "/api/v1/crates/nosuchcrate", None, 404),
}


def exhaust_and_refill(appliance: Appliance, name: str) -> None:
    """Two requests of class `name` pass, the third gets 429; after its Retry-After one more
    passes, and only one."""
    method, path, body, status = REQUESTS[name]
    began = time.monotonic()
    answers = [call(appliance, method, path, body=body) for _ in range(3)]
    assert [answer[0] for answer in answers[:2]] == [status, status], (name, answers)
    refused, headers, text = answers[2]
    assert refused == 429, (name, answers[2])
    # The first request's share comes back 3 s after it: whole seconds, rounded up.
    retry_after = int(headers["Retry-After"])
    assert int(3 - (time.monotonic() - began)) <= retry_after <= 3
    detail = errors(text)
    assert f"too many {name} requests from 127.0.0.1" in detail
    assert f"([limits.{name}] per_address)" in detail
    assert "the limit is 2/6s (" in detail
    time.sleep(retry_after)
    assert call(appliance, method, path, body=body)[0] == status, name  # refilled
    assert call(appliance, method, path, body=body)[0] == 429, name  # by one request


def test_each_route_class_answers_429_with_retry_after_then_refills(
    start_appliance: StartAppliance,
) -> None:
    every = {"per_address": "2/6s"}  # a burst of 2, then one every 3 s
    appliance = start_appliance(tables=limits(**dict.fromkeys(CLASSES, every)))
    # At the same time: each class has its own budget.
    with ThreadPoolExecutor(max_workers=len(CLASSES)) as pool:
        list(pool.map(lambda name: exhaust_and_refill(appliance, name), CLASSES))
    for name in CLASSES:
        refusals = appliance.metric(
            "ghostcrate_rate_limited_total", route_class=name, kind="per_address"
        )
        assert refusals == 2
    logged = [e for e in appliance.events() if e.get("msg") == "rate limited"]
    assert len(logged) == 8
    assert {e["limit"] for e in logged} == {f"{name}.per_address" for name in CLASSES}
    assert all(e["request_id"] and 1 <= int(e["retry_after"]) <= 3 for e in logged)
    assert appliance.stop() == 0


def test_the_429_names_the_request_id_it_logged(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(
        tables={**limits(api={"per_address": "1/hour"}), "audit": {"refusal_flush_seconds": 0.2}}
    )
    assert call(appliance, "GET", "/api/v1/crates/nosuchcrate")[0] == 404
    status, headers, _ = call(appliance, "GET", "/api/v1/crates/nosuchcrate")
    assert status == 429
    assert int(headers["Retry-After"]) == 3600
    [event] = [e for e in appliance.events() if e.get("msg") == "rate limited"]
    assert event["request_id"] == headers["X-Request-Id"]
    assert event["path"] == "/api/v1/crates/nosuchcrate"
    assert event["remote"] == "127.0.0.1"
    # The refusal is in the audit log too, with its rule and request id.
    records = until(appliance, lambda found: any(r["outcome"] == "refused" for r in found))
    [record] = [r for r in records if r["outcome"] == "refused"]
    assert record["rule"] == "limits.api.per_address"
    assert record["request_id"] == headers["X-Request-Id"]
    assert record["remote"] == "127.0.0.1"


def test_tokens_users_and_addresses_have_independent_budgets(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(
        tables=limits(api={"per_token": "3/hour", "per_user": "5/hour", "per_address": "9/hour"})
    )
    add_user(appliance, "alice")
    add_user(appliance, "bob")
    alice_1, alice_2 = create_token(appliance, "alice"), create_token(appliance, "alice")
    bob = create_token(appliance, "bob")

    def me(token: str | None) -> tuple[int, str]:
        status, _, body = call(appliance, "GET", "/api/v1/me", token=token)
        return status, errors(body) if status == 429 else ""

    assert [me(alice_1)[0] for _ in range(3)] == [200, 200, 200]
    status, detail = me(alice_1)
    assert status == 429
    assert "with this token" in detail
    assert "[limits.api] per_token" in detail
    assert alice_1 not in detail

    # alice's other token has its own budget, but alice has 5 in all.
    assert [me(alice_2)[0] for _ in range(2)] == [200, 200]
    status, detail = me(alice_2)
    assert status == 429
    assert "by user alice" in detail
    assert "[limits.api] per_user" in detail

    # Another user's token is unaffected; refused requests spent nothing of the address's
    # budget (3 + 2 so far), so bob has his 3 and one is left for a request without a token.
    assert [me(bob)[0] for _ in range(3)] == [200, 200, 200]
    assert me(bob)[0] == 429
    assert me(None)[0] == 401  # /me without a token, within the address's budget (9th)
    status, detail = me(None)
    assert status == 429
    assert "from 127.0.0.1" in detail
    assert "[limits.api] per_address" in detail
    # Nothing logged the tokens.
    log = appliance.log.read_text()
    assert all(token not in log for token in (alice_1, alice_2, bob))


def test_workers_share_one_budget(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(
        server={"workers": 2}, tables=limits(api={"per_address": "20/hour"})
    )
    path = "/api/v1/crates/nosuchcrate"
    with ThreadPoolExecutor(max_workers=8) as pool:  # a new connection per request
        statuses = list(pool.map(lambda _: call(appliance, "GET", path)[0], range(60)))
    assert statuses.count(404) == 20, statuses
    assert statuses.count(429) == 40, statuses
    assert len(access_pids(appliance, path)) == 2, "both workers should have answered"
    refusing = {e["pid"] for e in appliance.events() if e.get("msg") == "rate limited"}
    assert len(refusing) == 2, "both workers should have refused"
    assert appliance.stop() == 0


def test_mirror_index_and_downloads_are_never_limited(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    tiny = dict.fromkeys(("per_token", "per_user", "per_address"), "1/hour")
    appliance = start_appliance(tables=limits(**dict.fromkeys(CLASSES, tiny)))
    crate = upstream.registry.crate("abc", "0.2.0")
    assert crate is not None
    index = f"/index/{index_path('abc')}"
    download = "/api/v1/crates/abc/0.2.0/download"
    for _ in range(15):  # HTTP/1.1: the fast lane
        assert appliance.get(index)[0] == 200
        assert appliance.get(download) == (200, crate.data)
        assert appliance.get(download, {"Authorization": "gcr_nosuchtoken"})[0] == 200
    assert appliance.metric("ghostcrate_fast_lane_requests_total", result="hit") >= 40
    for _ in range(3):  # a Range goes to aiohttp's download view: not limited either
        assert appliance.get(download, {"Range": "bytes=0-9"}) == (206, crate.data[:10])

    async def over_h2c() -> tuple[list[int], list[int]]:
        h2, first = await H2Client.upgrade("127.0.0.1", appliance.port, index)
        try:
            mirror = [first.status]
            for _ in range(15):
                mirror += [(await h2.get(path)).status for path in (index, download)]
            # The API over h2c goes through the same limits (relayed, with the peer's address).
            api = [(await h2.get("/api/v1/crates/nosuchcrate")).status for _ in range(2)]
            return mirror, api
        finally:
            await h2.close()

    mirror, api = asyncio.run(over_h2c())
    assert set(mirror) == {200}
    assert api == [404, 429]
    assert (
        appliance.metric("ghostcrate_rate_limited_total", route_class="api", kind="per_address")
        == 1
    )
    assert appliance.stop() == 0


def test_cargo_publish_shows_the_limit(
    start_appliance: StartAppliance, cargo: CargoEnv, tmp_path: Path
) -> None:
    appliance = start_appliance(tables=limits(publish={"per_token": "1/hour"}))
    add_user(appliance, "alice")
    token = create_token(appliance, "alice")
    configure_registry(cargo, appliance, token)
    first = write_package(tmp_path / "one", CrateSpec("limited-one", "0.1.0"))
    second = write_package(tmp_path / "two", CrateSpec("limited-two", "0.1.0"))
    publish(cargo, first)
    refused = publish(cargo, second, check=False)
    assert refused.returncode != 0
    assert "429" in refused.stderr
    assert "too many publish requests with this token" in refused.stderr
    assert appliance.get(f"/index/{index_path('limited-two')}")[0] == 404  # nothing stored


def test_sighup_applies_new_limits(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(tables=limits(api={"per_address": "1/hour"}))
    assert appliance.process is not None
    path = "/api/v1/crates/nosuchcrate"
    assert [call(appliance, "GET", path)[0] for _ in range(2)] == [404, 429]
    text = appliance.config.read_text().replace('per_address = "1/hour"', "per_address = 0")
    appliance.config.write_text(text)
    appliance.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while call(appliance, "GET", path)[0] == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [call(appliance, "GET", path)[0] for _ in range(5)] == [404] * 5
    assert appliance.stop() == 0


def test_a_bad_rate_stops_check_config_and_serve_naming_key_and_file(tmp_path: Path) -> None:
    appliance = Appliance(
        tmp_path / "bad",
        "http://127.0.0.1:9/",
        tables={"limits.search": {"per_token": "ten a minute"}},
    )
    checked = appliance.run("check-config")
    assert checked.returncode == 2
    expected = f"{appliance.config}: 'limits.search.per_token' must be a rate like \"10/minute\""
    assert expected in checked.stderr
    appliance.launch()
    assert appliance.process is not None
    assert appliance.process.wait(30) == 2
    assert expected in appliance.log.read_text()
