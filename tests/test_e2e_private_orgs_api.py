"""`ghostcrate org|team` and `/api/v1/orgs` against a running appliance: who may manage what."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.appliance import Appliance
from tests.support.private import add_user, create_token, errors
from tests.support.private import json_call as call

StartAppliance = Callable[..., Appliance]


def test_org_and_team_commands_print_listings_and_refuse_with_status_2(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    for user in ("alice", "bob"):
        add_user(appliance, user)

    def run(*args: str, code: int = 0) -> tuple[str, str]:
        result = appliance.run(*args)
        assert result.returncode == code, result.stderr
        return result.stdout, result.stderr

    assert run("org", "add", "acme", "--namespace", "acme-*", "--owner", "alice") == (
        "",
        "added organisation acme\n",
    )
    assert (
        run("org", "member", "add", "acme", "bob")[1] == "bob is now member of organisation acme\n"
    )
    assert run("team", "add", "acme", "platform")[1] == "added team acme:platform\n"
    run("team", "member", "add", "acme:platform", "bob")
    assert run("org", "list")[0] == "org\tnamespaces\tmembers\tteams\nacme\tacme-*\t2\t1\n"
    assert run("org", "show", "acme")[0].splitlines() == [
        "org\tacme",
        "namespace\tacme-*",
        "member\talice\towner",
        "member\tbob\tmember",
        "team\tacme:platform\tbob",
    ]
    assert run("team", "list", "acme")[0] == "team\tmembers\nacme:platform\tbob\n"
    for args, complaint in [
        (("org", "add", "ACME"), "organisation 'ACME' already exists"),
        (("org", "add", "x", "--namespace", "acme-core"), "overlaps acme-* of organisation acme"),
        (("org", "show", "nope"), "no organisation 'nope'"),
        (("org", "member", "remove", "acme", "alice"), "without an owner"),
        (("org", "member", "add", "acme", "zed"), "no user 'zed'"),
        (("team", "add", "acme:platform"), "team acme:platform already exists"),
        (("team", "add", "acme:a:b"), "expected ORG:TEAM or ORG TEAM"),
        (("team", "member", "add", "acme:nope", "bob"), "no team acme:nope"),
        (("token", "create", "--user", "bob", "--org", "nope"), "no organisation 'nope'"),
    ]:
        out, err = run(*args, code=2)
        assert out == ""
        assert complaint in err, (args, err)
    run("team", "member", "remove", "acme:platform", "bob")
    run("team", "remove", "acme:platform")
    run("org", "member", "remove", "acme", "bob")
    assert run("org", "list")[0].splitlines()[1] == "acme\tacme-*\t1\t0"


def test_the_api_lets_registry_admins_and_org_owners_and_admins_manage(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "root", admin=True)
    for user in ("alice", "bob", "carol", "eve"):
        add_user(appliance, user)
    root, alice, bob, carol, eve = (
        create_token(appliance, user) for user in ("root", "alice", "bob", "carol", "eve")
    )
    acme = {"name": "acme", "namespaces": ["acme-*"], "owner": "alice"}

    status, answer = call(appliance, "POST", "/api/v1/orgs", alice, acme)
    assert status == 403
    assert errors(json.dumps(answer).encode()).endswith("(rule: registry-admin)")
    assert call(appliance, "POST", "/api/v1/orgs", None, acme)[0] == 401
    status, created = call(appliance, "POST", "/api/v1/orgs", root, acme)
    assert status == 201
    assert created["members"] == [{"login": "alice", "role": "owner"}]
    assert call(appliance, "POST", "/api/v1/orgs", root, acme)[0] == 409
    not_orgs: list[object] = [{"name": 3}, {"name": "x", "namespaces": "acme-*"}, [1]]
    for bad in not_orgs:
        status, answer = call(appliance, "POST", "/api/v1/orgs", root, bad)
        assert status == 400
        assert "expected a JSON body like" in answer["errors"][0]["detail"]

    members = "/api/v1/orgs/acme/members"
    add_bob = {"users": [{"login": "bob", "role": "admin"}, {"login": "carol"}]}
    status, answer = call(appliance, "PUT", members, eve, add_bob)
    assert status == 403
    assert "you (eve) may not manage members" in answer["errors"][0]["detail"]
    assert answer["errors"][0]["detail"].endswith("(you are not a member) (rule: org-role)")
    status, org = call(appliance, "PUT", members, alice, add_bob)
    assert status == 200
    assert org["members"] == [
        {"login": "alice", "role": "owner"},
        {"login": "bob", "role": "admin"},
        {"login": "carol", "role": "member"},
    ]
    # An admin manages members and teams, but not owners.
    status, answer = call(
        appliance, "PUT", members, bob, {"users": [{"login": "carol", "role": "owner"}]}
    )
    assert status == 403
    assert "may not make or remove owners of organisation acme" in answer["errors"][0]["detail"]
    assert call(appliance, "DELETE", members, bob, {"users": ["alice"]})[0] == 403
    status, answer = call(appliance, "DELETE", members, alice, {"users": ["alice"]})
    assert status == 409
    assert "without an owner" in answer["errors"][0]["detail"]
    status, answer = call(appliance, "PUT", members, bob, {"users": [{"login": "zed"}]})
    assert (status, answer["errors"][0]["detail"]) == (
        404,
        "no user 'zed': add it first with `ghostcrate user add zed`",
    )
    status, answer = call(
        appliance, "PUT", members, bob, {"users": [{"login": "eve", "role": "boss"}]}
    )
    assert status == 400
    assert "unknown role 'boss'" in answer["errors"][0]["detail"]
    not_members: list[object] = [{"users": []}, {"users": ["eve"]}, {}]
    for wrong in not_members:
        assert call(appliance, "PUT", members, bob, wrong)[0] == 400

    teams = "/api/v1/orgs/acme/teams"
    assert call(appliance, "POST", teams, carol, {"name": "platform"})[0] == 403
    assert call(appliance, "POST", teams, bob, {"name": "platform"})[0] == 201
    assert call(appliance, "POST", teams, bob, {"name": "platform"})[0] == 409
    team_members = f"{teams}/platform/members"
    status, org = call(appliance, "PUT", team_members, bob, {"users": ["carol"]})
    assert status == 200
    assert org["teams"] == [{"name": "platform", "login": "acme:platform", "members": ["carol"]}]
    status, answer = call(appliance, "PUT", team_members, bob, {"users": ["eve"]})
    assert status == 400
    assert "eve is not a member of organisation acme" in answer["errors"][0]["detail"]
    assert call(appliance, "PUT", f"{teams}/nope/members", bob, {"users": ["carol"]})[0] == 404

    # Reading: anyone who may read private crates (here: anyone).
    assert call(appliance, "GET", "/api/v1/orgs", None)[1]["orgs"][0]["name"] == "acme"
    assert call(appliance, "GET", "/api/v1/orgs/ACME", None)[1]["name"] == "acme"
    assert call(appliance, "GET", "/api/v1/orgs/nope", None)[0] == 404
    assert call(appliance, "GET", members, None)[1]["members"][1] == {
        "login": "bob",
        "role": "admin",
    }
    assert call(appliance, "GET", teams, None)[1]["teams"][0]["members"] == ["carol"]

    assert call(appliance, "DELETE", team_members, bob, {"users": ["carol"]})[0] == 200
    assert call(appliance, "DELETE", team_members, bob, {"users": ["carol"]})[0] == 404
    assert call(appliance, "DELETE", f"{teams}/platform", bob)[0] == 200
    assert call(appliance, "GET", teams, None)[1] == {"teams": []}
    status, org = call(appliance, "DELETE", members, root, {"users": ["bob", "carol"]})
    assert (status, org["members"]) == (200, [{"login": "alice", "role": "owner"}])


def test_organisations_are_hidden_from_who_may_not_read_private_crates(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(tables={"auth": {"read_private": ["token"]}})
    add_user(appliance, "alice")
    token = create_token(appliance, "alice")
    assert appliance.run("org", "add", "acme").returncode == 0
    for path in ("/api/v1/orgs", "/api/v1/orgs/acme", "/api/v1/orgs/acme/members"):
        assert call(appliance, "GET", path, None)[0] == 404, path
        assert call(appliance, "GET", path, token)[0] == 200, path


def test_every_refusal_is_logged_with_its_rule_and_request_id(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(tables={"auth": {"publish": ["user:alice"]}})
    add_user(appliance, "bob")
    bob = create_token(appliance, "bob")
    path = "/api/v1/orgs/acme/members"
    body = json.dumps({"users": ["bob"]}).encode()
    for request_id, token in (("probe-publish", bob), ("probe-token", "gcr_" + "x" * 43)):
        status, _ = appliance.request(
            "DELETE", path, body, {"Authorization": token, "X-Request-Id": request_id}
        )
        assert status == 403
    logged = {
        event["request_id"]: event
        for event in appliance.events()
        if event.get("msg") == "refused" and "request_id" in event
    }
    assert logged["probe-publish"]["rule"] == "auth-publish"
    assert "may not publish here ([auth] publish)" in logged["probe-publish"]["detail"]
    assert logged["probe-token"]["rule"] == "authentication"
    assert logged["probe-token"]["path"] == path
