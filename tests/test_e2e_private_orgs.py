"""Organisations and teams with the real cargo: namespaces, team owners, roles, org tokens.

The organisation `acme` claims `acme-*`; alice owns it, dave and bob are
members, carol a contributor, and bob and carol are in its team `platform`;
eve is in no organisation.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec
from tests.support.private import (
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
USERS = ("alice", "bob", "carol", "dave", "eve")


def refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A failed cargo command whose error output shows each of `fragments`."""
    assert result.returncode != 0, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def run_ok(appliance: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    result = appliance.run(*args)
    assert result.returncode == 0, result.stderr
    return result


def acme(appliance: Appliance) -> dict[str, str]:
    """The users, the organisation and its team; each user's token."""
    for user in USERS:
        add_user(appliance, user)
    run_ok(appliance, "org", "add", "acme", "--namespace", "acme-*", "--owner", "alice")
    for user, role in (("bob", "member"), ("carol", "contributor"), ("dave", "member")):
        run_ok(appliance, "org", "member", "add", "acme", user, "--role", role)
    run_ok(appliance, "team", "add", "acme:platform")
    for user in ("bob", "carol"):
        run_ok(appliance, "team", "member", "add", "acme:platform", user)
    return {user: create_token(appliance, user) for user in USERS}


def versions(appliance: Appliance, crate: str) -> list[tuple[str, bool]]:
    lines = appliance.get(f"/index/ac/me/{crate}")[1].splitlines()
    return [(entry["vers"], entry["yanked"]) for entry in map(json.loads, lines)]


def test_namespace_team_owners_and_roles_with_the_real_cargo(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    tokens = acme(appliance)
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance)

    def package(name: str, version: str) -> Path:
        return write_package(tmp_path / f"{name}-{version}", CrateSpec(name, version))

    # A member publishes a new crate in the namespace; an outsider may not, and is told
    # which organisation and which rule refused it.
    publish(cargo, package("acme-core", "1.0.0"), token=tokens["dave"])
    offset = appliance.log.stat().st_size
    refused(
        publish(cargo, package("acme-tools", "1.0.0"), check=False, token=tokens["eve"]),
        FORBIDDEN,
        "crate name `acme-tools` is in the namespace of organisation acme (acme-*)",
        "eve is not a member",
        "(rule: org-namespace)",
    )
    [logged] = [e for e in appliance.events(offset) if e.get("msg") == "refused"]
    assert logged["rule"] == "org-namespace"
    assert logged["request_id"]
    # A contributor may not publish a new crate either; outside every namespace anyone may.
    refused(
        publish(cargo, package("acme-tools", "1.0.0"), check=False, token=tokens["carol"]),
        FORBIDDEN,
        "you (carol) are its contributor",
    )
    publish(cargo, package("eve-lib", "1.0.0"), token=tokens["eve"])

    # Before the team owns acme-core, bob (a member, not an owner) may not touch it.
    refused(
        publish(cargo, package("acme-core", "1.0.1"), check=False, token=tokens["bob"]),
        FORBIDDEN,
        "you (bob) are not an owner of crate acme-core",
        "(rule: org-role)",
    )
    # As on crates.io, only a team's members (here also its org's owners and admins) may
    # make it an owner.
    refused(
        owner(cargo, "acme-core", "--add", "acme:platform", check=False, token=tokens["dave"]),
        FORBIDDEN,
        "you (dave) are not in team acme:platform",
        "(rule: team-member)",
    )
    added = owner(cargo, "acme-core", "--add", "acme:platform", token=tokens["alice"])
    assert "acme:platform" in added.stderr
    listed = owner(cargo, "acme-core", "--list", token=tokens["eve"]).stdout
    assert listed.splitlines() == ["dave (dave)", "acme:platform (platform)"]

    # A member in the owning team publishes and yanks; a contributor in it only publishes.
    publish(cargo, package("acme-core", "1.0.1"), token=tokens["bob"])
    yank(cargo, "acme-core", "1.0.0", token=tokens["bob"])
    publish(cargo, package("acme-core", "1.0.2"), token=tokens["carol"])
    refused(
        yank(cargo, "acme-core", "1.0.2", check=False, token=tokens["carol"]),
        FORBIDDEN,
        "you (carol) are not an owner of crate acme-core",
        "acme: contributor",
        "(rule: org-role)",
    )
    # Only owners (and the org's admins and owners) change owners.
    refused(
        owner(cargo, "acme-core", "--add", "eve", check=False, token=tokens["bob"]),
        FORBIDDEN,
        "(rule: org-role)",
    )
    owner(cargo, "acme-core", "--add", "eve", token=tokens["alice"])  # the org's owner
    assert versions(appliance, "acme-core") == [
        ("1.0.0", True),
        ("1.0.1", False),
        ("1.0.2", False),
    ]

    # Without the team as an owner, its members lose what they had through it.
    owner(cargo, "acme-core", "--remove", "acme:platform", token=tokens["dave"])
    assert "acme:platform" not in owner(cargo, "acme-core", "--list", token=tokens["eve"]).stdout
    refused(
        publish(cargo, package("acme-core", "1.0.3"), check=False, token=tokens["bob"]),
        FORBIDDEN,
        "you (bob) are not an owner of crate acme-core",
    )


def test_a_token_limited_to_an_organisation_acts_only_on_its_crates(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    tokens = acme(appliance)
    org_token = create_token(appliance, "bob", "--org", "acme")
    listing = run_ok(appliance, "token", "list", "--user", "bob").stdout.splitlines()
    assert listing[0].split("\t")[5] == "org"
    assert [line.split("\t")[5] for line in listing[1:]] == ["-", "acme"]
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance)

    publish(cargo, write_package(tmp_path / "w", CrateSpec("widget", "1.0.0")), token=tokens["bob"])
    refused(
        publish(
            cargo,
            write_package(tmp_path / "w1", CrateSpec("widget", "1.0.1")),
            check=False,
            token=org_token,
        ),
        FORBIDDEN,
        "this token is limited to organisation acme, and crate widget is neither",
        "(rule: token-org)",
    )
    refused(
        yank(cargo, "widget", "1.0.0", check=False, token=org_token),
        FORBIDDEN,
        "(rule: token-org)",
    )
    publish(cargo, write_package(tmp_path / "a", CrateSpec("acme-web", "1.0.0")), token=org_token)
    yank(cargo, "acme-web", "1.0.0", token=org_token)
    # Another organisation's management is out of its reach too, even for its owner.
    run_ok(appliance, "org", "add", "other", "--owner", "bob")
    status, body = appliance.request(
        "PUT",
        "/api/v1/orgs/other/members",
        json.dumps({"users": [{"login": "eve"}]}).encode(),
        {"Authorization": org_token, "Content-Type": "application/json"},
    )
    assert status == 403
    assert "limited to organisation acme, not other: use another token (rule: token-org)" in errors(
        body
    )


def test_changes_to_an_organisation_are_seen_by_both_workers_at_once(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    """Each publish is a new connection, so both workers answer some of them."""
    appliance = start_appliance(server={"workers": 2})
    tokens = acme(appliance)
    cargo = CargoEnv(tmp_path / "cargo")
    configure_registry(cargo, appliance)
    body = json.dumps({"users": [{"login": "eve", "role": "member"}]}).encode()
    headers = {"Authorization": tokens["alice"], "Content-Type": "application/json"}

    def answering_pids() -> set[int]:
        return {
            event["pid"]
            for event in appliance.events()
            if event.get("msg") in ("published", "refused")
        }

    # Each connection picks a worker by its hash, so go on until both have answered.
    for attempt in range(16):
        if attempt >= 4 and len(answering_pids()) == 2:
            break
        name = f"acme-eve{attempt}"
        path = write_package(tmp_path / name, CrateSpec(name, "1.0.0"))
        # eve is not a member: refused by whichever worker answers.
        refused(publish(cargo, path, check=False, token=tokens["eve"]), "(rule: org-namespace)")
        assert appliance.request("PUT", "/api/v1/orgs/acme/members", body, headers)[0] == 200
        publish(cargo, path, token=tokens["eve"])  # at once, whichever worker answers
        status, _ = appliance.request(
            "DELETE",
            "/api/v1/orgs/acme/members",
            json.dumps({"users": ["eve"]}).encode(),
            headers,
        )
        assert status == 200
    assert len(answering_pids()) == 2, "one worker answered everything; the test proves nothing"
