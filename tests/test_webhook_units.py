"""Webhooks' pure parts: which addresses an org's webhook may reach, backoff, signatures."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from ghostcrate.appliance.webhook_delivery import backoff
from ghostcrate.config.model import WebhooksSettings
from ghostcrate.private.db import Database
from ghostcrate.private.tokens import Actor
from ghostcrate.private.webhook_targets import MAX_URL, TargetRefused, Targets, check_target
from ghostcrate.private.webhooks import Webhooks, enqueue, sign
from tests.support.webhook_receiver import Received, verify


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.9.8.7", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", True),
    ],
)
def test_only_public_addresses_are_allowed_by_default(address: str, allowed: bool) -> None:
    assert Targets.parse([]).allows(ipaddress.ip_address(address)) is allowed


def test_allow_targets_admit_ranges_and_host_names() -> None:
    targets = Targets.parse(["10.20.0.0/16", "127.0.0.1", "Hooks.Corp.Example."])
    assert targets.allows(ipaddress.ip_address("10.20.3.4"))
    assert not targets.allows(ipaddress.ip_address("10.21.3.4"))
    assert targets.allows(ipaddress.ip_address("127.0.0.1"))
    assert targets.allows_host("hooks.corp.example")
    assert not targets.allows_host("other.corp.example")


async def test_check_target_refuses_before_any_connection() -> None:
    with pytest.raises(TargetRefused, match=r"reaches 127\.0\.0\.1"):
        await check_target("http://127.0.0.1:1/x", Targets.parse([]))
    with pytest.raises(TargetRefused, match="cannot be resolved"):
        await check_target("http://no-such-host.invalid/x", Targets.parse([]))
    await check_target("http://127.0.0.1:1/x", Targets.parse(["127.0.0.0/8"]))
    await check_target("http://no-such-host.invalid/x", Targets.parse(["no-such-host.invalid"]))
    # Even an allowed host takes no URL longer than MAX_URL (it would be stored and sent).
    long_url = "http://127.0.0.1:1/" + "a" * MAX_URL
    with pytest.raises(TargetRefused, match=f"{MAX_URL} characters long at most"):
        await check_target(long_url, Targets.parse(["127.0.0.0/8"]))


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    settings = WebhooksSettings(backoff_seconds=2, max_backoff_seconds=20)
    for attempts, ceiling in ((1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (500, 20)):
        waits = [backoff(attempts, settings) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), attempts
        assert max(waits) - min(waits) > ceiling / 10  # jittered, not fixed


def test_a_signature_verifies_only_with_its_secret_and_body() -> None:
    body = b'{"event":"publish"}'
    header = sign("s3cret", int(time.time()), body)
    assert header.startswith("t=")
    assert ",v1=" in header
    assert verify("s3cret", Received(0, {"X-GhostCrate-Signature": header}, body))
    assert not verify("other", Received(0, {"X-GhostCrate-Signature": header}, body))
    assert not verify("s3cret", Received(0, {"X-GhostCrate-Signature": header}, body + b" "))
    stale = sign("s3cret", int(time.time()) - 3600, body)
    assert not verify("s3cret", Received(0, {"X-GhostCrate-Signature": stale}, body))


async def test_prune_forgets_only_old_delivered_deliveries(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "registry.db") as db:
        async with db.write() as connection:
            await connection.execute(
                "INSERT INTO webhooks (id, name, url, events, created_at)"
                " VALUES (1, 'ci', 'http://x/', 'publish', 0)"
            )
            for number, (state, done_at) in enumerate(
                [("delivered", 100.0), ("delivered", 300.0), ("dead", 100.0), ("pending", None)]
            ):
                await connection.execute(
                    "INSERT INTO webhook_deliveries (webhook_id, delivery, event, crate, body,"
                    " state, next_at, created_at, done_at) VALUES (1, ?, 'publish', 'c', '{}',"
                    " ?, 0, 0, ?)",
                    (str(number), state, done_at),
                )
        assert await Webhooks(db).prune(200.0) == 1
        rows = await db.all("SELECT delivery FROM webhook_deliveries ORDER BY id")
        assert [row[0] for row in rows] == ["1", "2", "3"]


async def failed_change(db: Database, actor: Actor) -> None:
    async with db.write() as connection:
        await enqueue(connection, "publish", "hooked", "1.0.0", actor)
        raise RuntimeError("the change failed after its deliveries were written")


async def test_deliveries_are_written_with_their_change_or_not_at_all(tmp_path: Path) -> None:
    alice = Actor(user_id=1, user="alice", admin=False, token_id=1)
    async with Database.open(tmp_path / "registry.db") as db:
        async with db.write() as connection:
            await connection.execute(
                "INSERT INTO webhooks (name, url, events, created_at)"
                " VALUES ('ci', 'http://x/', 'publish yank', 0)"
            )
        with pytest.raises(RuntimeError):
            await failed_change(db, alice)
        assert await db.all("SELECT * FROM webhook_deliveries") == []
        async with db.write() as connection:
            await enqueue(connection, "publish", "hooked", "1.0.0", alice)
            await enqueue(connection, "unyank", "hooked", "1.0.0", alice)  # not wanted
        [row] = await db.all("SELECT event, crate, state, body FROM webhook_deliveries")
        assert tuple(row)[:3] == ("publish", "hooked", "pending")
        assert json.loads(row["body"])["actor"] == "alice"


async def test_an_orgs_webhooks_hear_of_its_namespace_its_teams_crates_and_its_teams(
    tmp_path: Path,
) -> None:
    alice = Actor(user_id=1, user="alice", admin=False, token_id=1)
    async with Database.open(tmp_path / "registry.db") as db:
        async with db.write() as connection:
            for statement in (
                "INSERT INTO orgs (id, name, namespaces, created_at) VALUES"
                " (1, 'acme', '[\"acme-*\"]', 0), (2, 'beta', '[]', 0)",
                "INSERT INTO teams (id, org_id, name, created_at) VALUES (1, 2, 'core', 0)",
                "INSERT INTO crates (id, name, canonical, created_at, updated_at)"
                " VALUES (1, 'shared', 'shared', 0, 0)",
                "INSERT INTO team_owners (crate_id, team_id) VALUES (1, 1)",
                "INSERT INTO webhooks (org_id, url, events, created_at) VALUES"
                " (1, 'http://a/', 'publish owner_add', 0),"
                " (2, 'http://b/', 'publish owner_add', 0)",
            ):
                await connection.execute(statement)
        async with db.write() as connection:
            await enqueue(connection, "publish", "Acme_Tools", "1.0.0", alice)
            await enqueue(connection, "publish", "shared", "1.0.0", alice)
            await enqueue(connection, "publish", "lonely", "1.0.0", alice)
            await enqueue(connection, "owner_add", "lonely", None, alice, owners=["beta:core"])
            await enqueue(connection, "owner_add", "lonely", None, alice, owners=["bob"])
        rows = await db.all(
            "SELECT w.url, d.event, d.crate FROM webhook_deliveries d"
            " JOIN webhooks w ON w.id = d.webhook_id ORDER BY d.id"
        )
        assert [tuple(row) for row in rows] == [
            ("http://a/", "publish", "Acme_Tools"),
            ("http://b/", "publish", "shared"),
            ("http://b/", "owner_add", "lonely"),
        ]
