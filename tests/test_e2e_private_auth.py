"""`[auth]`: who may read mirrored and private crates, through every front end, and `required`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.test_h2_relay import answers_of
from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, make_workspace, parse_app_output
from tests.support.h2attack import RawH2
from tests.support.private import add_user, configure_registry, create_token, publish, write_package
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
CORE = CrateSpec("acme-core", "1.0.0")
PRIVATE_INDEX = "/index/ac/me/acme-core"
PRIVATE_CRATE = "/api/v1/crates/acme-core/1.0.0/download"
MIRRORED_INDEX = "/index/mu/lt/multi"


def published(tmp_path: Path, appliance: Appliance) -> str:
    """Publish acme-core as alice (an admin); her token."""
    add_user(appliance, "alice", admin=True)
    token = create_token(appliance, "alice")
    cargo = CargoEnv(tmp_path / "publisher")
    configure_registry(cargo, appliance, token)
    publish(cargo, write_package(tmp_path / "core", CORE))
    return token


async def h2_statuses(port: int, targets: list[str], token: str | None) -> list[int]:
    client = await RawH2.connect(port)
    try:
        statuses = []
        for target in targets:
            extra = [(b"authorization", token.encode())] if token else []
            stream_id = client.request(target.encode(), extra=extra)
            await client.drain()
            statuses.append(answers_of(await client.until_done(stream_id), stream_id)[0])
        return statuses
    finally:
        await client.close()


def statuses(appliance: Appliance, token: str | None) -> dict[str, list[int]]:
    """Each target's status through the fast lane, h2c and aiohttp (a Range goes there)."""
    auth = {"Authorization": token} if token else {}
    targets = [PRIVATE_INDEX, PRIVATE_CRATE, MIRRORED_INDEX]
    found: dict[str, list[int]] = {target: [] for target in targets}
    for target in targets:
        found[target].append(appliance.get(target, auth)[0])
    for target, status in zip(
        targets, asyncio.run(h2_statuses(appliance.port, targets, token)), strict=True
    ):
        found[target].append(status)
    for target in targets:
        found[target].append(appliance.get(target, {**auth, "Range": "bytes=0-"})[0])
    return found


def test_who_may_not_read_private_crates_is_told_they_do_not_exist_by_every_front_end(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance(tables={"auth": {"read_private": ["token"]}})
    # Only a token lets one read private crates, so cargo is told to send its token.
    assert json.loads(appliance.get("/index/config.json")[1])["auth-required"] is True
    token = published(tmp_path, appliance)
    for _ in range(2):  # a second time from the hot sets
        allowed = statuses(appliance, token)
        assert allowed[PRIVATE_INDEX] == [200, 200, 200]
        assert allowed[PRIVATE_CRATE] == [200, 200, 206]
        refused = statuses(appliance, None)
        assert refused[PRIVATE_INDEX] == refused[PRIVATE_CRATE] == [404, 404, 404]
        assert refused[MIRRORED_INDEX] == [200, 200, 200]  # read_mirror is anonymous
    # Nor does the crate's API page, its owners or search show it to them.
    assert appliance.get("/api/v1/crates/acme-core")[0] == 404
    assert appliance.get("/api/v1/crates/acme-core/owners")[0] == 404
    status, body = appliance.get("/api/v1/crates?q=acme")
    assert status == 200
    assert json.loads(body)["crates"] == []
    found = appliance.get("/api/v1/crates?q=acme", {"Authorization": token})[1]
    assert [crate["name"] for crate in json.loads(found)["crates"]] == ["acme-core"]
    # Exactly as if it did not exist: the same answer as a name nobody has.
    for target in (PRIVATE_INDEX, PRIVATE_CRATE):
        nobodys = target.replace("acme-core", "acme-nope")
        hidden, missing = appliance.get(target), appliance.get(nobodys)
        assert hidden[0] == missing[0] == 404
        assert hidden[1] == missing[1].replace(b"acme-nope", b"acme-core")
    # A wrong token is refused outright, as on the API.
    assert appliance.get(PRIVATE_INDEX, {"Authorization": "gcr_" + "x" * 43})[0] == 403


def test_address_ranges_and_named_users_in_the_policy(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(
        tables={
            "private": {"reserved": ["acme-*"]},
            "auth": {
                "read_mirror": ["10.0.0.0/8"],
                "read_private": ["127.0.0.0/8"],
                "publish": ["user:alice"],
            },
        }
    )
    token = published(tmp_path, appliance)  # alice may publish
    assert appliance.get(PRIVATE_INDEX)[0] == 200  # from 127.0.0.1, no token needed
    assert appliance.get(MIRRORED_INDEX)[0] == 401  # not from 10/8, and no token
    add_user(appliance, "bob")
    bob = create_token(appliance, "bob")
    assert appliance.get(MIRRORED_INDEX, {"Authorization": bob})[0] == 403
    status, body = appliance.request(
        "DELETE", "/api/v1/crates/acme-core/1.0.0/yank", headers={"Authorization": bob}
    )
    assert status == 403
    assert "may not publish here ([auth] publish)" in json.loads(body)["errors"][0]["detail"]
    status, _ = appliance.request(
        "DELETE", "/api/v1/crates/acme-core/1.0.0/yank", headers={"Authorization": token}
    )
    assert status == 200


def test_auth_required_makes_cargo_send_its_token_everywhere(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance(tables={"auth": {"required": True}})
    token = published(tmp_path, appliance)
    status, body = appliance.get("/index/config.json", {"Authorization": token})
    assert status == 200
    assert json.loads(body)["auth-required"] is True
    for target in ("/index/config.json", PRIVATE_INDEX, MIRRORED_INDEX, "/api/v1/crates?q=a"):
        assert appliance.get(target)[0] == 401, target

    app = make_workspace(tmp_path / "app", {"acme-core": "1", "multi": "1"})
    anonymous = CargoEnv(tmp_path / "anonymous")
    configure_registry(anonymous, appliance)
    refused = anonymous.run(["generate-lockfile"], app, check=False)
    assert refused.returncode != 0
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance, token)
    output = parse_app_output(consumer.run(["run", "-q"], app).stdout)
    assert output["acme-core"][0] == "acme-core@1.0.0"
    assert output["multi"][0] == "multi@1.1.0"
