"""Webhooks against a real receiver on 127.0.0.1: signature, order, retries, dead letters,
restarts, two workers, and the addresses an organisation's webhook may not reach."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ghostcrate.config import ConfigError, load_settings
from tests.support.appliance import Appliance, free_port
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, build_crate
from tests.support.private import (
    add_user,
    configure_registry,
    create_token,
    publish,
    write_package,
)
from tests.support.private import json_call as api
from tests.support.publish import metadata_bytes, publish_body
from tests.support.upstream import FakeUpstream
from tests.support.webhook_receiver import Received, WebhookReceiver, verify
from tests.test_e2e_audit import audit_records

pytestmark = pytest.mark.e2e

SECRET = "config-secret-for-tests"
Make = Callable[..., Appliance]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def make(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Make]:
    """Appliances (not started) with `[webhooks]` keys and, given `url`, a config webhook."""
    made: list[Appliance] = []

    def build(
        url: str | None = None, server: dict[str, object] | None = None, **keys: Any
    ) -> Appliance:
        webhooks = {"backoff_seconds": 0.2, "max_backoff_seconds": 1, **keys}
        appliance = Appliance(
            tmp_path / f"appliance-{len(made)}",
            upstream.url,
            server=server,
            tables={"webhooks": webhooks},
        )
        if url is not None:
            with appliance.config.open("a") as config:
                config.write(
                    f'[[webhooks.endpoints]]\nname = "ci"\nurl = "{url}"\nsecret = "{SECRET}"\n'
                )
        made.append(appliance)
        return appliance

    yield build
    for appliance in made:
        if appliance.process is not None and appliance.process.poll() is None:
            appliance.stop()


def publish_over_http(appliance: Appliance, token: str, name: str, version: str = "1.0.0") -> float:
    """PUT /api/v1/crates/new of a small crate; the seconds it took to be answered."""
    spec = CrateSpec(name, version)
    body = publish_body(metadata_bytes(spec), build_crate(spec))
    started = time.monotonic()
    status, answer = appliance.request("PUT", "/api/v1/crates/new", body, {"Authorization": token})
    assert status == 200, answer
    return time.monotonic() - started


def deliveries(appliance: Appliance, webhook: int) -> list[list[str]]:
    """`ghostcrate webhook deliveries ID`: its rows, newest first."""
    result = appliance.run("webhook", "deliveries", str(webhook))
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()[1:]]


def states(appliance: Appliance) -> list[tuple[str, int]]:
    """(state, attempts) of every delivery, oldest first, read from the database."""
    with sqlite3.connect(appliance.data_dir / "private" / "registry.db") as db:
        rows = db.execute("SELECT state, attempts FROM webhook_deliveries ORDER BY id")
        return [(state, attempts) for state, attempts in rows]


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def documented_verifier() -> Callable[[str, str, bytes], bool]:
    """The `verified` function of docs/webhooks.md's Python example."""
    docs = (Path(__file__).parent.parent / "docs" / "webhooks.md").read_text()
    namespace: dict[str, Any] = {}
    exec(docs.split("```python\n")[1].split("```")[0], namespace)
    verified: Callable[[str, str, bytes], bool] = namespace["verified"]
    return verified


def test_webhook_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "ghostcrate.toml"
    config.write_text(
        "[webhooks]\nallow_targets = ['10.0.0.0/8', 'bad host!']\n"
        "[[webhooks.endpoints]]\nname = 'ci'\nurl = 'ftp://x'\nsecret = 'hidden-value'\n"
        "events = ['publish', 'deleted']\n"
        "[[webhooks.endpoints]]\nname = 'ops'\nurl = 'https://ops.example/'\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    problems = "\n".join(caught.value.problems)
    assert f"{config}: 'webhooks.allow_targets' 'bad host!' is neither" in problems
    assert f"{config}: 'webhooks.endpoints.0.url' must be an http:// or https:// URL" in problems
    assert f"{config}: 'webhooks.endpoints.0.events' must list events among" in problems
    assert "set exactly one of 'secret' and 'secret_file'" in problems
    assert "hidden-value" not in problems


def user_with_token(appliance: Appliance, name: str = "alice") -> str:
    add_user(appliance, name)
    return create_token(appliance, name)


def test_cargo_publish_yank_unyank_owner_add_arrive_signed_and_in_order(
    make: Make, receiver: WebhookReceiver, cargo: CargoEnv, tmp_path: Path
) -> None:
    appliance = make(receiver.url).start()
    token = user_with_token(appliance)
    add_user(appliance, "bob")
    configure_registry(cargo, appliance, token)
    publish(cargo, write_package(tmp_path / "pkg", CrateSpec("hooked", "1.0.0")))
    for method, path, body in (
        ("DELETE", "/api/v1/crates/hooked/1.0.0/yank", None),
        ("PUT", "/api/v1/crates/hooked/1.0.0/unyank", None),
        ("PUT", "/api/v1/crates/hooked/owners", {"users": ["bob"]}),
    ):
        assert api(appliance, method, path, token, body)[0] == 200

    got = receiver.wait_for(4)
    # A refused publish (that version exists) tells nobody.
    spec = CrateSpec("hooked", "1.0.0")
    again = publish_body(metadata_bytes(spec), build_crate(spec))
    assert appliance.request("PUT", "/api/v1/crates/new", again, {"Authorization": token})[0] == 409
    assert [r.json["event"] for r in got] == ["publish", "yank", "unyank", "owner_add"]
    for received in got:
        assert verify(SECRET, received)
        assert not verify("another-secret", received)
        assert received.headers["X-GhostCrate-Event"] == received.json["event"]
        assert received.headers["X-GhostCrate-Delivery"] == received.json["delivery"]
        assert received.json["crate"] == "hooked"
        assert received.json["actor"] == "alice"
        assert received.json["time"].endswith("Z")
    assert [r.json["version"] for r in got] == ["1.0.0", "1.0.0", "1.0.0", None]
    assert got[3].json["owners"] == ["bob"]
    documented = documented_verifier()
    assert all(documented(SECRET, r.headers["X-GhostCrate-Signature"], r.body) for r in got)
    assert not documented(SECRET, got[0].headers["X-GhostCrate-Signature"], got[1].body)
    # A replayed request (an old timestamp) fails the receiver's tolerance check.
    old = Received(got[0].at, dict(got[0].headers), got[0].body)
    assert not verify(SECRET, old, tolerance=-1)

    listed = appliance.run("webhook", "list").stdout.splitlines()
    assert listed[1].split("\t") == [
        "1",
        "config:ci",
        receiver.url,
        "publish,yank,unyank,owner_add,owner_remove",
    ]
    states = [(row[1], row[4], row[5], row[6]) for row in deliveries(appliance, 1)]
    assert states == [
        (e, "delivered", "1", "200") for e in ("owner_add", "unyank", "yank", "publish")
    ]
    assert len(receiver.received) == 4
    db = appliance.data_dir / "private" / "registry.db"
    assert db.stat().st_mode & 0o777 == 0o600
    assert SECRET not in appliance.log.read_text()


def test_a_failing_or_redirecting_receiver_is_retried_with_growing_waits(
    make: Make, receiver: WebhookReceiver
) -> None:
    appliance = make(receiver.url, backoff_seconds=0.4, max_backoff_seconds=10).start()
    receiver.answers = [500, 302]  # a redirect is a failure, never followed
    publish_over_http(appliance, user_with_token(appliance), "retried")

    got = receiver.wait_for(3)
    time.sleep(0.5)
    assert len(receiver.received) == 3
    assert len({r.headers["X-GhostCrate-Delivery"] for r in got}) == 1
    assert receiver.redirected == 0
    assert all(verify(SECRET, r) for r in got)
    first, second = got[1].at - got[0].at, got[2].at - got[1].at
    # Jitter keeps each wait between half and all of 0.4 s, then of 0.8 s.
    assert 0.2 <= first < 0.4 + 0.35, first
    assert 0.4 <= second < 0.8 + 0.35, second
    [row] = deliveries(appliance, 1)
    assert row[4:7] == ["delivered", "3", "200"]
    assert appliance.metric("ghostcrate_webhook_attempts_total", outcome="retry") == 2
    assert appliance.metric("ghostcrate_webhook_attempts_total", outcome="delivered") == 1


def test_an_org_webhook_dies_after_max_attempts_and_is_redriven_from_the_cli(
    make: Make,
) -> None:
    port = free_port()
    appliance = make(max_attempts=3, allow_targets=["127.0.0.1"]).start()
    token = user_with_token(appliance)
    add_user(appliance, "bob")
    bob = create_token(appliance, "bob")
    assert (
        appliance.run("org", "add", "acme", "--namespace", "acme-*", "--owner", "alice").returncode
        == 0
    )
    assert appliance.run("org", "member", "add", "acme", "bob").returncode == 0
    url = f"http://127.0.0.1:{port}/hook"
    status, answer = api(appliance, "POST", "/api/v1/orgs/acme/webhooks", bob, {"url": url})
    assert status == 403
    assert "may not add, list and remove webhooks" in answer["errors"][0]["detail"]
    status, answer = api(
        appliance, "POST", "/api/v1/orgs/acme/webhooks", token, {"url": url, "events": ["publish"]}
    )
    assert status == 201, answer
    secret, webhook = answer["secret"], answer["webhook"]["id"]
    assert secret.startswith("whsec_")
    assert api(appliance, "GET", "/api/v1/orgs/acme/webhooks", token)[1] == {
        "webhooks": [{**answer["webhook"]}]
    }
    assert "secret" not in json.dumps(api(appliance, "GET", "/api/v1/orgs/acme/webhooks", token)[1])

    publish_over_http(appliance, token, "acme-core")
    publish_over_http(appliance, token, "elsewhere")  # not the org's: not told

    wait_until(lambda: states(appliance) == [("dead", 3)])
    [row] = deliveries(appliance, webhook)
    assert row[1:6] == ["publish", "acme-core", "1.0.0", "dead", "3"]
    assert "ClientConnectorError" in row[7]
    assert appliance.metric("ghostcrate_webhook_attempts_total", outcome="dead") == 1
    status, log = api(appliance, "GET", f"/api/v1/orgs/acme/webhooks/{webhook}/deliveries", token)
    assert status == 200
    assert log["deliveries"][0]["state"] == "dead"
    assert log["deliveries"][0]["attempts"] == 3

    with WebhookReceiver(port=port) as receiver:
        result = appliance.run("webhook", "retry", row[0])
        assert result.returncode == 0, result.stderr
        [received] = receiver.wait_for(1)
        assert verify(secret, received)
        assert received.json["crate"] == "acme-core"
        wait_until(lambda: states(appliance) == [("delivered", 1)])
        time.sleep(0.5)
        assert len(receiver.received) == 1
    assert appliance.run("webhook", "retry", row[0]).returncode == 2  # not dead any more
    assert secret not in appliance.log.read_text()
    retry = f"/api/v1/orgs/acme/webhooks/{webhook}/retry"
    assert api(appliance, "POST", retry, token, {"dead": True}) == (200, {"retried": 0})
    assert api(appliance, "POST", retry, token, {"deliveries": [row[0]]})[0] == 404
    assert api(appliance, "POST", retry, token, {"deliveries": "x"})[0] == 400
    status, _ = api(appliance, "DELETE", f"/api/v1/orgs/acme/webhooks/{webhook}", token)
    assert status == 200
    assert api(appliance, "GET", "/api/v1/orgs/acme/webhooks", token)[1] == {"webhooks": []}
    # Who added, re-drove and removed it is in the audit log; the secret is not.
    records = audit_records(appliance, "--user", "alice")
    added = [r for r in records if r["action"] == "add-webhook"]
    assert [(r["org"], r["target"], r["outcome"]) for r in added] == [("acme", url, "ok")]
    assert [r["detail"] for r in records if r["action"] == "remove-webhook"] == [
        f"webhook {webhook}"
    ]
    cli = [r for r in audit_records(appliance) if r["action"] == "retry-webhook"]
    assert cli[0]["credential"].startswith("cli ")
    assert cli[0]["detail"] == f"deliveries {row[0]}"
    assert secret not in json.dumps(audit_records(appliance))


def test_a_slow_receiver_does_not_slow_a_publish(make: Make, receiver: WebhookReceiver) -> None:
    receiver.delay = 10.0
    appliance = make(receiver.url, timeout_seconds=30).start()
    token = user_with_token(appliance)
    publish_over_http(appliance, token, "slow-one")
    receiver.wait_for(1)  # the deliverer now waits for the receiver's answer
    seconds = [publish_over_http(appliance, token, f"slow-{n}") for n in range(3)]
    assert max(seconds) < 1.0, seconds
    assert len(receiver.received) == 1  # in order: the next waits for the first's answer


def test_a_pending_delivery_survives_a_restart(make: Make) -> None:
    port = free_port()
    appliance = make(f"http://127.0.0.1:{port}/hook", max_attempts=1000).start()
    publish_over_http(appliance, user_with_token(appliance), "survivor")
    wait_until(lambda: states(appliance)[0][1] >= 1)
    appliance.stop()
    assert states(appliance)[0][0] == "pending"
    with WebhookReceiver(port=port) as receiver:
        appliance.start()
        [received] = receiver.wait_for(1)
        assert received.json["crate"] == "survivor"
        assert verify(SECRET, received)


def test_two_workers_deliver_each_event_exactly_once_in_order(
    make: Make, receiver: WebhookReceiver
) -> None:
    appliance = make(receiver.url, server={"workers": 2}).start()
    token = user_with_token(appliance)
    names = [f"twice-{n}" for n in range(8)]
    for name in names:
        publish_over_http(appliance, token, name)
    got = receiver.wait_for(len(names))
    time.sleep(1.0)
    assert len(receiver.received) == len(names)
    assert [r.json["crate"] for r in got] == names
    elected = [e for e in appliance.events() if e.get("msg") == "webhook deliverer elected"]
    assert len(elected) == 1


REFUSED_URLS = [
    ("http://127.0.0.1:9/hook", "reaches 127.0.0.1, an internal address"),
    ("http://localhost:9/hook", "an internal address"),
    ("http://169.254.169.254/latest/meta-data/", "reaches 169.254.169.254"),
    ("http://10.1.2.3/hook", "reaches 10.1.2.3"),
    ("http://[::1]:9/hook", "reaches ::1"),
    ("http://[::ffff:127.0.0.1]/hook", "an internal address"),
    ("ftp://example.com/hook", "must be an http:// or https:// URL"),
    ("http://user:pass@example.com/hook", "must not hold credentials"),
    ("not a url", "must be an http:// or https:// URL"),
]


def test_an_org_webhook_may_not_reach_internal_addresses(
    start_appliance: Callable[..., Appliance],
) -> None:
    appliance = start_appliance()
    token = user_with_token(appliance)
    assert appliance.run("org", "add", "acme", "--owner", "alice").returncode == 0
    for url, complaint in REFUSED_URLS:
        status, answer = api(appliance, "POST", "/api/v1/orgs/acme/webhooks", token, {"url": url})
        assert status == 400, (url, answer)
        assert complaint in answer["errors"][0]["detail"], url
    for url, complaint in REFUSED_URLS[2:4]:
        result = appliance.run("webhook", "add", "--org", "acme", url)
        assert result.returncode == 2
        assert complaint in result.stderr
    assert api(appliance, "GET", "/api/v1/orgs/acme/webhooks", token)[1] == {"webhooks": []}
    with sqlite3.connect(appliance.data_dir / "private" / "registry.db") as db:
        assert db.execute("SELECT count(*) FROM webhooks").fetchone() == (0,)
    # A public address is taken (nothing is published here, so nothing is sent to it).
    public = "http://93.184.215.14/hook"
    added = appliance.run("webhook", "add", "--org", "acme", public, "--events", "publish,yank")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("whsec_")
    assert "shown only now" in added.stderr
    listed = appliance.run("webhook", "list", "--org", "acme").stdout.splitlines()
    assert listed[1:] == [f"1\torg:acme\t{public}\tpublish,yank"]
    assert appliance.run("webhook", "remove", "1").returncode == 0
    assert appliance.run("webhook", "list").stdout.splitlines()[1:] == []
    assert added.stdout.strip() not in appliance.log.read_text()


def test_another_worker_delivers_when_the_deliverer_is_killed(make: Make) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    appliance = make(url, server={"workers": 2}, max_attempts=1000).start()
    publish_over_http(appliance, user_with_token(appliance), "orphaned")
    wait_until(lambda: states(appliance)[0][1] >= 1)
    [first] = [e for e in appliance.events() if e.get("msg") == "webhook deliverer elected"]
    os.kill(int(first["pid"]), signal.SIGKILL)
    with WebhookReceiver(port=port) as receiver:
        [received] = receiver.wait_for(1)
        assert received.json["crate"] == "orphaned"
        elected = [e for e in appliance.events() if e.get("msg") == "webhook deliverer elected"]
        assert len(elected) == 2  # the other worker, or the one started in its place
        assert elected[1]["pid"] != first["pid"]
        time.sleep(1.0)
        assert len(receiver.received) == 1
