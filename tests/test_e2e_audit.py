"""The audit log of a running appliance: writes by cargo, the API and the CLI, and refusals."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, build_crate
from tests.support.private import (
    add_user,
    configure_registry,
    create_token,
    publish,
    write_package,
    yank,
)
from tests.support.publish import metadata_bytes, publish_body
from tests.support.sessions import bearer, post_json, sign_in

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PASSWORD = "correct horse battery"
WRONG_TOKEN = "gcr_" + "x" * 43
#: Refusals reach the database within this (tests only: the default is 5 s).
FLUSH = {"audit": {"refusal_flush_seconds": 0.2}}


def audit_records(appliance: Appliance, *args: str) -> list[dict[str, Any]]:
    result = appliance.run("audit", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def once(records: list[dict[str, Any]], **wanted: object) -> dict[str, Any]:
    """The one record whose fields have the `wanted` values."""
    found = [r for r in records if all(r[key] == value for key, value in wanted.items())]
    assert len(found) == 1, (wanted, records)
    return found[0]


def until(appliance: Appliance, ready: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    """The records once `ready` holds for them (refusals are written a moment later)."""
    deadline = time.monotonic() + 10
    while True:
        records = audit_records(appliance)
        if ready(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_writes_and_refusals_are_recorded_with_who_where_and_the_request_id(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(
        tables={**FLUSH, "auth": {"login_failures": 2, "login_window_seconds": 60}}
    )
    add_user(appliance, "alice", admin=True)
    added = appliance.run("user", "add", "bob", "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    token = create_token(appliance, "alice")
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance, token)

    # cargo publishes and yanks; a publish with a token that is not valid is refused.
    publish(cargo, write_package(tmp_path / "core", CrateSpec("acme-core", "1.0.0")))
    yank(cargo, "acme-core", "1.0.0")
    other = write_package(tmp_path / "other", CrateSpec("acme-other", "1.0.0"))
    assert publish(cargo, other, check=False, token=WRONG_TOKEN).returncode != 0
    # An API write that names its request.
    owners = json.dumps({"users": ["bob"]}).encode()
    headers = {"Authorization": token, "X-Request-Id": "owners-1"}
    assert appliance.request("PUT", "/api/v1/crates/acme-core/owners", owners, headers)[0] == 200
    # A session: sign in, refresh, sign out; then wrong passwords until throttled.
    session = sign_in(appliance, "bob", PASSWORD)
    refreshed = post_json(
        appliance, "/api/v1/session/refresh", {"refresh_token": session["refresh_token"]}
    )
    assert refreshed[0] == 200, refreshed
    assert appliance.request("DELETE", "/api/v1/session", None, bearer(session["token"]))[0] == 200
    statuses = [
        post_json(appliance, "/api/v1/session", {"name": "bob", "password": "wrong"})[0]
        for _ in range(3)
    ]
    assert statuses == [403, 403, 429]

    records = until(
        appliance, lambda found: any(r["rule"] == "throttle" for r in found) and len(found) >= 12
    )

    # The CLI's writes name the operator's OS account.
    operator = once(records, action="add-user", target="alice")["credential"]
    assert operator.startswith("cli ")
    once(records, action="add-user", target="bob", credential=operator, actor=None)
    once(records, action="create-token", target="alice", credential=operator)
    published = once(records, action="publish", outcome="ok")
    assert published["actor"] == "alice"
    assert published["credential"] == "token 1"
    assert published["remote"] == "127.0.0.1"
    assert (published["crate"], published["version"]) == ("acme-core", "1.0.0")
    assert published["request_id"]  # the id the answer's X-Request-Id carried
    once(records, action="yank", crate="acme-core", version="1.0.0", actor="alice")
    once(records, action="add-owners", target="bob", request_id="owners-1", actor="alice")
    wrong = once(records, action="publish", outcome="refused")
    assert (wrong["rule"], wrong["actor"], wrong["remote"]) == ("authentication", None, "127.0.0.1")
    signed_in = once(records, action="sign-in", outcome="ok")
    assert signed_in["actor"] == "bob"
    assert signed_in["credential"].startswith("session ")
    assert signed_in["detail"] == "via password"
    once(records, action="refresh", actor="bob", credential=signed_in["credential"])
    once(records, action="sign-out", actor="bob", credential=signed_in["credential"])
    failed = [r for r in records if r["action"] == "sign-in" and r["rule"] == "authentication"]
    assert sum(r["count"] for r in failed) == 2
    assert {r["target"] for r in failed} == {"bob"}
    throttled = once(records, action="sign-in", rule="throttle")
    assert (throttled["outcome"], throttled["target"]) == ("refused", "bob")

    # The command's filters, over what the server wrote.
    about_core = audit_records(appliance, "--crate", "acme_core")
    assert [r["action"] for r in about_core] == ["publish", "yank", "add-owners"]
    about_bob = {r["action"] for r in audit_records(appliance, "--user", "bob", "--since", "1h")}
    assert about_bob == {"add-user", "add-owners", "sign-in", "refresh", "sign-out"}
    assert audit_records(appliance, "--since", "2999-01-01") == []
    verified = appliance.run("audit", "--verify")
    assert verified.returncode == 0, verified.stderr
    assert f"{len(records)} records, chain intact" in verified.stdout


def test_two_workers_writing_at_once_keep_one_chain(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(server={"workers": 2}, tables=FLUSH)
    add_user(appliance, "alice", admin=True)
    token = create_token(appliance, "alice")

    def put(number: int, credential: str) -> int:
        spec = CrateSpec(f"busy-{number}", "1.0.0")
        body = publish_body(metadata_bytes(spec), build_crate(spec))
        return appliance.request("PUT", "/api/v1/crates/new", body, {"Authorization": credential})[
            0
        ]

    def answering_pids() -> set[int]:
        return {e["pid"] for e in appliance.events() if e.get("msg") in ("published", "refused")}

    published = 0
    with ThreadPoolExecutor(8) as pool:  # each request its own connection: both workers answer
        for batch in range(4):
            if batch >= 1 and len(answering_pids()) == 2:
                break
            numbers = range(batch * 8, batch * 8 + 8)
            good = list(pool.map(lambda n: put(n, token), numbers))
            bad = list(pool.map(lambda n: put(n, WRONG_TOKEN), numbers))
            assert good == [200] * 8
            assert bad == [403] * 8
            published += 8
    assert len(answering_pids()) == 2, "one worker answered everything; the test proves nothing"

    records = until(
        appliance,
        lambda found: sum(r["count"] for r in found if r["outcome"] == "refused") == published,
    )
    assert len([r for r in records if r["action"] == "publish" and r["outcome"] == "ok"]) == (
        published
    )
    assert [r["id"] for r in records] == list(range(1, len(records) + 1))
    verified = appliance.run("audit", "--verify")
    assert verified.returncode == 0, verified.stderr


def test_refused_index_reads_are_recorded_coalesced(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(tables={**FLUSH, "auth": {"required": True}})
    for _ in range(5):
        status, _ = appliance.get("/index/3/s/serde", {"X-Request-Id": "no-token"})
        assert status == 401
    assert appliance.get("/index/3/s/serde", {"Authorization": WRONG_TOKEN})[0] == 403

    records = until(appliance, lambda found: sum(r["count"] for r in found) == 6)
    missing = once(records, action="read", rule="auth-required")
    assert (missing["count"], missing["outcome"], missing["remote"]) == (5, "refused", "127.0.0.1")
    assert (missing["request_id"], missing["detail"]) == ("no-token", "/index/3/s/serde")
    assert once(records, action="read", rule="authentication")["count"] == 1
