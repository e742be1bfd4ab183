"""`/api/v1/me/tokens`, `/api/v1/users/{login}` and `/api/v1/admin/users` on a running appliance."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.appliance import Appliance
from tests.support.private import add_user, create_token, errors
from tests.support.private import json_call as call
from tests.support.sessions import me, sign_in
from tests.test_e2e_audit import audit_records

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PASSWORD = "correct horse battery"
#: Requests per check: each a new connection, so both workers answer (all on one: 2^-11).
PROBES = 12


def new_token(appliance: Appliance, credential: str, **fields: object) -> tuple[int, Any]:
    return call(appliance, "PUT", "/api/v1/me/tokens", credential, {"api_token": fields})


def test_a_session_makes_lists_and_revokes_its_users_tokens(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(server={"workers": 2})
    added = appliance.run("user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    session = f"Bearer {sign_in(appliance, 'alice', PASSWORD)['token']}"

    status, made = new_token(
        appliance,
        session,
        name="ci",
        crate_scopes=["acme-*"],
        endpoint_scopes=["publish-update", "yank"],
        expired_at="2099-01-01T00:00:00Z",
    )
    assert status == 200, made
    created = made["api_token"]
    token = created.pop("token")
    assert token.startswith("gcr_")
    assert created == {
        "id": created["id"],
        "name": "ci",
        "created_at": created["created_at"],
        "last_used_at": None,
        "expired_at": "2099-01-01T00:00:00Z",
        "crate_scopes": ["acme-*"],
        "endpoint_scopes": ["publish-update", "yank"],
    }
    # The new token works, and stands for alice with the limits asked for.
    assert {me(appliance, token)[0] for _ in range(PROBES)} == {200}
    assert json.loads(me(appliance, token)[1])["user"]["login"] == "alice"
    listed = call(appliance, "GET", "/api/v1/me/tokens", session)
    assert listed == (200, {"api_tokens": [created]})  # never the token's text again
    assert token not in json.dumps(listed[1])

    status, answer = call(appliance, "DELETE", f"/api/v1/me/tokens/{created['id']}", session)
    assert (status, answer) == (200, {})
    # Seen by both workers before the answer: every probe is refused.
    assert {me(appliance, token)[0] for _ in range(PROBES)} == {403}
    assert call(appliance, "GET", "/api/v1/me/tokens", session) == (200, {"api_tokens": []})
    status, answer = call(appliance, "DELETE", f"/api/v1/me/tokens/{created['id']}", session)
    assert status == 404
    # Both writes are in the audit log, made by alice's session, never with the token's text.
    records = audit_records(appliance, "--user", "alice")
    made_and_revoked = [r for r in records if r["action"] in ("create-token", "revoke-token")]
    assert [(r["action"], r["detail"]) for r in made_and_revoked] == [
        ("create-token", f"token {created['id']} (scopes publish-update,yank; crates acme-*)"),
        ("revoke-token", f"token {created['id']}"),
    ]
    assert all(r["credential"].startswith("session ") for r in made_and_revoked)
    assert token not in json.dumps(records)


def test_bad_token_requests_get_a_clear_400_and_make_nothing(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    token = create_token(appliance, "alice")
    cases: list[tuple[dict[str, object], str]] = [
        ({}, "expected a JSON body like"),
        ({"name": " "}, "expected a JSON body like"),
        ({"name": "x" * 65}, "expected a JSON body like"),
        ({"name": "ci", "crate_scopes": "acme"}, "expected a JSON body like"),
        # Empty or false limits are refused, never read as "no limit".
        ({"name": "ci", "crate_scopes": []}, "crate_scopes is empty"),
        ({"name": "ci", "endpoint_scopes": []}, "endpoint_scopes is empty"),
        ({"name": "ci", "crate_scopes": ""}, "expected a JSON body like"),
        ({"name": "ci", "endpoint_scopes": False}, "expected a JSON body like"),
        ({"name": "ci", "endpoint_scopes": ["delete-everything"]}, "unknown scope"),
        ({"name": "ci", "crate_scopes": ["acme core"]}, "invalid crate pattern"),
        ({"name": "ci", "expired_at": "2001-01-01T00:00:00Z"}, "in the future"),
        ({"name": "ci", "expired_at": "tomorrow"}, "RFC 3339"),
        ({"name": "ci", "expired_at": "2099-01-01"}, "RFC 3339"),
        ({"name": "ci", "expired_at": 4102444800}, "RFC 3339"),
    ]
    for fields, complaint in cases:
        status, answer = new_token(appliance, token, **fields)
        assert status == 400, (fields, answer)
        assert complaint in answer["errors"][0]["detail"], (fields, answer)
    status, answer = call(appliance, "PUT", "/api/v1/me/tokens", token, ["not", "an", "object"])
    assert status == 400
    listed = call(appliance, "GET", "/api/v1/me/tokens", token)[1]["api_tokens"]
    assert [t["id"] for t in listed] == [1]  # only the token made by the command


def test_token_routes_need_a_credential_and_a_limited_token_may_not_make_tokens(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    limited = create_token(appliance, "alice", "--scope", "publish-update", "--crates", "acme-*")
    assert call(appliance, "GET", "/api/v1/me/tokens", None)[0] == 401
    assert call(appliance, "GET", "/api/v1/me/tokens", "gcr_" + "x" * 43)[0] == 403
    offset = appliance.log.stat().st_size
    status, answer = new_token(appliance, limited, name="wider")
    assert status == 403
    assert "rule: token-limits" in answer["errors"][0]["detail"]
    refused = [e for e in appliance.events(offset) if e.get("msg") == "refused"]
    assert [e["rule"] for e in refused] == ["token-limits"]
    assert call(appliance, "DELETE", "/api/v1/me/tokens/1", limited)[0] == 403


def test_nobody_revokes_another_users_token_nor_learns_it_exists(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    add_user(appliance, "bob")
    alices = create_token(appliance, "alice")
    bobs = create_token(appliance, "bob")
    taken, absent = (
        call(appliance, "DELETE", "/api/v1/me/tokens/1", bobs),
        call(appliance, "DELETE", "/api/v1/me/tokens/99", bobs),
    )
    assert taken[0] == absent[0] == 404
    assert taken[1] == json.loads(json.dumps(absent[1]).replace("id 99", "id 1"))
    assert me(appliance, alices)[0] == 200
    assert call(appliance, "DELETE", "/api/v1/me/tokens/abc", bobs)[0] == 404


def test_a_user_is_shown_to_readers_of_private_crates_only(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(tables={"auth": {"read_private": ["token"]}})
    add_user(appliance, "alice")
    token = create_token(appliance, "alice")
    shown = call(appliance, "GET", "/api/v1/users/ALICE", token)
    assert shown == (200, {"user": {"id": 1, "login": "alice", "name": "alice", "kind": "user"}})
    assert call(appliance, "GET", "/api/v1/users/nobody", token)[0] == 404
    # Without a token: the same 404 for a user who exists and one who does not.
    hidden = call(appliance, "GET", "/api/v1/users/alice", None)
    missing = call(appliance, "GET", "/api/v1/users/nobody", None)
    assert hidden[0] == missing[0] == 404
    assert errors(json.dumps(hidden[1]).encode()).replace("alice", "X") == errors(
        json.dumps(missing[1]).encode()
    ).replace("nobody", "X")


def test_an_administrator_lists_disables_and_enables_users(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(server={"workers": 2})
    add_user(appliance, "root", admin=True)
    add_user(appliance, "alice")
    admin = create_token(appliance, "root")
    alices = create_token(appliance, "alice")
    users = call(appliance, "GET", "/api/v1/admin/users", admin)
    assert users == (
        200,
        {
            "users": [
                {"id": 2, "login": "alice", "name": "alice", "admin": False, "disabled": False},
                {"id": 1, "login": "root", "name": "root", "admin": True, "disabled": False},
            ]
        },
    )
    status, answer = call(appliance, "PUT", "/api/v1/admin/users/alice/disable", admin)
    assert (status, answer["user"]["disabled"]) == (200, True)
    assert {me(appliance, alices)[0] for _ in range(PROBES)} == {403}  # on every worker
    status, answer = call(appliance, "PUT", "/api/v1/admin/users/alice/enable", admin)
    assert (status, answer["user"]["disabled"]) == (200, False)
    assert {me(appliance, alices)[0] for _ in range(PROBES)} == {200}
    assert call(appliance, "PUT", "/api/v1/admin/users/root/disable", admin)[0] == 409
    assert call(appliance, "PUT", "/api/v1/admin/users/nobody/disable", admin)[0] == 404


def test_only_administrators_administer_and_refusals_do_not_tell_who_exists(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "root", admin=True)
    add_user(appliance, "alice")
    alices = create_token(appliance, "alice")
    limited_admin = create_token(appliance, "root", "--scope", "yank")
    assert call(appliance, "GET", "/api/v1/admin/users", None)[0] == 401
    for token in (alices, limited_admin):
        listed = call(appliance, "GET", "/api/v1/admin/users", token)
        real = call(appliance, "PUT", "/api/v1/admin/users/root/disable", token)
        made_up = call(appliance, "PUT", "/api/v1/admin/users/nobody/disable", token)
        assert listed[0] == real[0] == made_up[0] == 403
        assert real[1] == made_up[1]
    assert (
        "rule: registry-admin"
        in call(appliance, "GET", "/api/v1/admin/users", alices)[1]["errors"][0]["detail"]
    )
    assert me(appliance, create_token(appliance, "root"))[0] == 200  # nothing was disabled
    session_less = call(appliance, "GET", "/api/v1/admin/users", "Bearer not.a.jwt")
    assert session_less[0] == 403
