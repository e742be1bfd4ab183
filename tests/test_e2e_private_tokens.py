"""Tokens with the real cargo: who may publish, yank and change owners, and what cargo prints.

Status codes are crates.io's: 403 for a token that is unknown, expired, revoked,
out of scope or not an owner's; 401 only when no token is sent, which cargo's
`auth-required` flow answers by sending one.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec
from tests.support.private import (
    REGISTRY,
    add_user,
    configure_registry,
    create_token,
    errors,
    owner,
    publish,
    write_package,
    yank,
)

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]

FORBIDDEN = "(status 403 Forbidden)"


def database(appliance: Appliance) -> Path:
    return appliance.data_dir / "private" / "registry.db"


def token_row(appliance: Appliance, token_id: int) -> sqlite3.Row:
    with closing(sqlite3.connect(database(appliance))) as connection:
        connection.row_factory = sqlite3.Row
        row: sqlite3.Row = connection.execute(
            "SELECT * FROM tokens WHERE id = ?", (token_id,)
        ).fetchone()
        return row


def refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A failed cargo command whose error output shows each of `fragments` (status and detail)."""
    assert result.returncode != 0, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_token_cli_prints_the_token_once_and_stores_only_its_hash(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    added = appliance.run("user", "add", "alice")
    assert (added.returncode, added.stdout) == (0, "")
    assert "added alice as a user" in added.stderr

    created = appliance.run(
        "token", "create", "--user", "alice", "--scope", "yank", "--crates", "acme-*",
        "--expires", "30",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.removesuffix("\n")
    assert token.startswith("gcr_")
    assert created.stdout == token + "\n"  # alone on standard output, for scripts
    assert "created token 1 for alice" in created.stderr
    assert token not in created.stderr
    stored = b"".join(p.read_bytes() for p in database(appliance).parent.glob("registry.db*"))
    assert token.encode() not in stored

    listing = appliance.run("token", "list").stdout.splitlines()
    assert listing[0].split("\t")[0] == "id"
    fields = listing[1].split("\t")
    assert (fields[:5], fields[-1]) == (["1", "alice", "cargo", "yank", "acme-*"], "live")

    revoked = appliance.run("token", "revoke", "1")
    assert (revoked.returncode, revoked.stdout, revoked.stderr) == (0, "", "revoked token 1\n")
    assert (
        appliance.run("token", "list", "--user", "alice")
        .stdout.splitlines()[1]
        .endswith("\trevoked")
    )
    again = appliance.run("token", "revoke", "1")
    assert again.returncode == 2
    assert "no live token with id 1" in again.stderr

    for options, complaint in [
        (("--user", "carol"), "no user 'carol'"),
        (("--user", "alice", "--crates", "acme-[ab]"), "invalid crate pattern acme-[ab]"),
        (("--user", "alice", "--expires", "0"), "positive number of days"),
    ]:
        result = appliance.run("token", "create", *options)
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert complaint in result.stderr
    bad_scope = appliance.run("token", "create", "--user", "alice", "--scope", "publish")
    assert bad_scope.returncode == 2
    assert "invalid choice" in bad_scope.stderr


def test_cargo_login_reads_the_token_from_stdin_then_publishes(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    token = create_token(appliance, "alice")
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance)
    cargo.run(["login", "--registry", REGISTRY], tmp_path, stdin=token + "\n")
    assert token in (cargo.home / "credentials.toml").read_text()
    publish(cargo, write_package(tmp_path / "acme-login", CrateSpec("acme-login", "1.0.0")))
    status, body = appliance.get("/api/v1/crates/acme-login")
    assert status == 200
    assert json.loads(body)["versions"][0]["published_by"] == {"login": "alice"}


def test_tokens_that_are_not_valid_are_refused_with_the_reason_cargo_prints(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    good = create_token(appliance, "alice")
    expiring = create_token(appliance, "alice", "--expires", "0.00001")  # 0.864 s
    revoked = create_token(appliance, "alice")
    assert appliance.run("token", "revoke", "3").returncode == 0
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance, good)
    package = write_package(tmp_path / "acme-x", CrateSpec("acme-x", "1.0.0"))

    unknown = publish(cargo, package, check=False, token="gcr_" + "A" * 43)
    refused(unknown, FORBIDDEN, "authentication failed: the token is unknown here", "token create")
    refused(
        yank(cargo, "acme-x", "1.0.0", check=False, token="hunter2"),
        FORBIDDEN,
        "authentication failed: this is not a GhostCrate token",
    )
    publish(cargo, package)
    expires_at = token_row(appliance, 2)["expires_at"]
    time.sleep(max(0.0, expires_at - time.time() + 0.05))
    refused(
        yank(cargo, "acme-x", "1.0.0", check=False, token=expiring),
        FORBIDDEN,
        "authentication failed: the token expired at",
        "cargo login --registry",
    )
    refused(
        owner(cargo, "acme-x", "--add", "alice", check=False, token=revoked),
        FORBIDDEN,
        "authentication failed: the token was revoked at",
    )
    # No token: 401 (cargo itself refuses to send a request without one).
    status, body = appliance.request("DELETE", "/api/v1/crates/acme-x/1.0.0/yank")
    assert status == 401
    assert "this action requires a token" in errors(body)
    status, body = appliance.request(
        "DELETE", "/api/v1/crates/acme-x/1.0.0/yank", headers={"Authorization": expiring}
    )
    assert status == 403
    assert "expired" in errors(body)
    assert appliance.get("/index/ac/me/acme-x")[1].count(b'"yanked":false') == 1


def test_scopes_and_crate_patterns_limit_what_a_token_may_do(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    add_user(appliance, "bob")
    new_only = create_token(appliance, "alice", "--scope", "publish-new", "--crates", "acme-*")
    yank_only = create_token(appliance, "alice", "--scope", "yank", "--crates", "acme-one")
    owners_only = create_token(appliance, "alice", "--scope", "change-owners")
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance)

    publish(cargo, write_package(tmp_path / "one", CrateSpec("acme-one", "1.0.0")), token=new_only)
    refused(
        publish(
            cargo,
            write_package(tmp_path / "widget", CrateSpec("widget-one", "1.0.0")),
            check=False,
            token=new_only,
        ),
        FORBIDDEN,
        "this token is limited to crates acme-*, not widget-one",
    )
    refused(
        publish(
            cargo,
            write_package(tmp_path / "one-1", CrateSpec("acme-one", "1.0.1")),
            check=False,
            token=new_only,
        ),
        FORBIDDEN,
        "this token does not have the `publish-update` scope",
        "--scope publish-update",
    )
    refused(
        yank(cargo, "acme-one", "1.0.0", check=False, token=new_only),
        FORBIDDEN,
        "does not have the `yank` scope",
    )
    yank(cargo, "acme-one", "1.0.0", token=yank_only)
    yank(cargo, "acme-one", "1.0.0", undo=True, token=yank_only)
    refused(
        owner(cargo, "acme-one", "--add", "bob", check=False, token=yank_only),
        FORBIDDEN,
        "does not have the `change-owners` scope",
    )
    owner(cargo, "acme-one", "--add", "bob", token=owners_only)
    listed = owner(cargo, "acme-one", "--list", token=owners_only).stdout
    assert listed.split() == ["alice", "(alice)", "bob", "(bob)"]


def test_a_users_token_cannot_touch_anothers_crate_but_an_admins_can(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    for user, admin in (("alice", False), ("bob", False), ("root", True)):
        add_user(appliance, user, admin=admin)
    alice, bob, root = (create_token(appliance, user) for user in ("alice", "bob", "root"))
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance)
    publish(cargo, write_package(tmp_path / "a", CrateSpec("acme-a", "1.0.0")), token=alice)
    update = write_package(tmp_path / "a-1", CrateSpec("acme-a", "1.0.1"))

    not_owner = "you (bob) are not an owner of crate acme-a"
    refused(yank(cargo, "acme-a", "1.0.0", check=False, token=bob), FORBIDDEN, not_owner)
    refused(publish(cargo, update, check=False, token=bob), FORBIDDEN, not_owner)
    refused(
        owner(cargo, "acme-a", "--add", "bob", check=False, token=bob),
        FORBIDDEN,
        not_owner,
        "cargo owner --add bob acme-a",
    )

    yank(cargo, "acme-a", "1.0.0", token=root)  # an administrator may, without owning it
    owner(cargo, "acme-a", "--add", "bob", token=root)
    publish(cargo, update, token=bob)  # an owner now
    yank(cargo, "acme-a", "1.0.0", undo=True, token=bob)
    lines = [json.loads(line) for line in appliance.get("/index/ac/me/acme-a")[1].splitlines()]
    assert [(line["vers"], line["yanked"]) for line in lines] == [
        ("1.0.0", False),
        ("1.0.1", False),
    ]


def test_a_revoked_token_is_refused_by_every_worker_within_a_second(
    start_appliance: StartAppliance,
) -> None:
    """Both workers remember the token; after `token revoke`, neither accepts it a second later.

    A probe is a yank of a crate that does not exist: with a valid token, 404
    (authenticated, then not found); with a revoked one, 403. Each probe is a new
    connection, so both workers get some; the access log tells which answered.
    """
    # The probes come as fast as they can: the API's rate limits are not what is tested.
    appliance = start_appliance(server={"workers": 2}, tables={"limits": {"enabled": False}})
    add_user(appliance, "alice")
    token = create_token(appliance, "alice")
    probes: list[tuple[float, int, str]] = []  # (sent at, status, path)
    stop = threading.Event()

    def probe_until_stopped() -> None:
        while not stop.is_set():
            path = f"/api/v1/crates/probe-{len(probes)}/1.0.0/yank"
            sent = time.time()
            status, _ = appliance.request("DELETE", path, headers={"Authorization": token})
            probes.append((sent, status, path))

    prober = threading.Thread(target=probe_until_stopped)
    prober.start()
    try:
        time.sleep(0.5)  # both workers have seen (and remembered) the token
        revoked = appliance.run("token", "revoke", "1")
        assert revoked.returncode == 0, revoked.stderr
        time.sleep(1.5)
    finally:
        stop.set()
        prober.join()

    revoked_at = token_row(appliance, 1)["revoked_at"]
    assert {status for _, status, _ in probes} == {403, 404}
    # When the last accepted probe was sent, in seconds from the revocation's commit.
    window = max(sent - revoked_at for sent, status, _ in probes if status == 404)
    late = [(sent, status, path) for sent, status, path in probes if sent >= revoked_at + 1.0]
    print(f"probes: {len(probes)}; last accepted {window * 1000:+.0f} ms from the revocation")
    assert window < 1.0, "a worker accepted the token a second after its revocation"
    assert late
    assert all(status == 403 for _, status, _ in late)
    pids = probe_pids(appliance, {path for _, _, path in probes})
    assert len({pids[path] for _, _, path in late if path in pids}) == 2, "one worker only"
    before = {pids[path] for sent, _, path in probes if sent < revoked_at and path in pids}
    assert len(before) == 2, "both workers should have remembered the token"


def probe_pids(appliance: Appliance, paths: set[str]) -> dict[str, int]:
    """path -> pid of the worker that answered it, from the access log (written in batches)."""
    deadline = time.monotonic() + 5
    while True:
        found = {
            event["path"]: int(event["pid"])
            for event in appliance.events()
            if event.get("logger") == "ghostcrate.access" and event.get("path") in paths
        }
        if len(found) == len(paths) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
