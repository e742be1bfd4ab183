"""Sessions against a running appliance with two workers: sign in, use, refresh, sign out.

Each request is a new connection, so both workers answer some of them; a
change (logout, a refresh token used twice, a disabled user) must be seen by
both within a second.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing

import pytest
from argon2 import PasswordHasher

from tests.hostile.test_h2_relay import answers_of
from tests.support.appliance import Appliance
from tests.support.h2attack import RawH2
from tests.support.private import add_user, create_token, errors
from tests.support.sessions import bearer, jwt_part, me, post_json, sign_in

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PASSWORD = "correct horse battery"
#: Requests per check: each a new connection, so both workers answer (all on one: 2^-11).
PROBES = 12


def add_password_user(appliance: Appliance, name: str, *options: str) -> None:
    added = appliance.run("user", "add", name, "--password-stdin", *options, input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr


def statuses(appliance: Appliance, token: str) -> set[int]:
    return {me(appliance, token)[0] for _ in range(PROBES)}


def refused_everywhere_within_a_second(appliance: Appliance, token: str) -> None:
    deadline = time.monotonic() + 1.0
    while statuses(appliance, token) != {403}:
        assert time.monotonic() < deadline, "a worker still accepts the token after 1 s"
        time.sleep(0.05)


def test_sign_in_me_refresh_and_logout_on_two_workers(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(server={"workers": 2})
    add_password_user(appliance, "alice", "--admin")

    first = sign_in(appliance, "alice", PASSWORD)
    assert set(first) == {"token", "refresh_token", "expires_in", "refresh_expires_in", "user"}
    assert (first["expires_in"], first["refresh_expires_in"]) == (15 * 60, 7 * 86400)
    assert first["user"] == {"id": 1, "login": "alice", "name": "alice", "admin": True}
    header, claims = jwt_part(first["token"], 0), jwt_part(first["token"], 1)
    assert header["alg"] == "EdDSA"
    assert (appliance.data_dir / "keys" / f"session-{header['kid']}.pem").is_file()
    assert claims["sub"] == "1"
    assert claims["name"] == "alice"
    assert (claims["iss"], claims["aud"]) == (appliance.url, "ghostcrate")
    assert claims["exp"] - claims["iat"] in (15 * 60, 15 * 60 + 1)
    assert first["refresh_token"].startswith("gcrr_")

    for _ in range(PROBES):
        status, body = me(appliance, first["token"])
        assert status == 200, body
        assert json.loads(body) == {"user": first["user"]}
    # The text /me (the page `cargo login` shows) is what it was.
    status, body = appliance.get("/me")
    assert status == 200
    assert body.startswith(b"Ask an administrator")

    status, body = post_json(
        appliance, "/api/v1/session/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 200, body
    second = json.loads(body)
    assert second["refresh_token"] != first["refresh_token"]
    assert jwt_part(second["token"], 1)["sid"] == claims["sid"]
    assert statuses(appliance, second["token"]) == {200}

    # The spent refresh token again: refused, and its whole session ends everywhere.
    status, body = post_json(
        appliance, "/api/v1/session/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 403
    assert "used before" in errors(body)
    refused_everywhere_within_a_second(appliance, second["token"])
    refused_everywhere_within_a_second(appliance, first["token"])
    status, body = post_json(
        appliance, "/api/v1/session/refresh", {"refresh_token": second["refresh_token"]}
    )
    assert status == 403
    assert "has ended" in errors(body)

    # `login` is another name for `name`; logout ends the session on both workers at once.
    third = sign_in(appliance, "alice", PASSWORD, key="login")
    assert statuses(appliance, third["token"]) == {200}
    status, body = appliance.request("DELETE", "/api/v1/session", headers=bearer(third["token"]))
    assert (status, json.loads(body)) == (200, {"ok": True})
    refused_everywhere_within_a_second(appliance, third["token"])
    status, body = me(appliance, third["token"])
    assert "the session has ended" in errors(body)


def test_an_api_token_also_shows_me_but_cannot_log_out(start_appliance: StartAppliance) -> None:
    appliance = start_appliance()
    add_user(appliance, "bob")
    token = create_token(appliance, "bob")
    status, body = me(appliance, token)
    assert (status, json.loads(body)) == (
        200,
        {"user": {"id": 1, "login": "bob", "name": "bob", "admin": False}},
    )
    status, body = appliance.request("DELETE", "/api/v1/session", headers=bearer(token))
    assert status == 403  # a valid credential that cannot do this, not a malformed request
    assert "not a session token" in errors(body)
    status, body = appliance.get("/api/v1/me")
    assert status == 401
    assert "POST /api/v1/session" in errors(body)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (b'{"name": "alice"}', 400),
        (b'{"password": "x"}', 400),
        (b'{"name": 3, "password": "x"}', 400),
        (b'{"name": "alice", "password": ["x"]}', 400),
    ],
)
def test_bad_sign_in_bodies_get_a_clear_400(
    start_appliance: StartAppliance, body: bytes, status: int
) -> None:
    appliance = start_appliance()
    answer = appliance.request("POST", "/api/v1/session", body)
    assert answer[0] == status
    assert "expected a JSON body like" in errors(answer[1])
    answer = appliance.request("POST", "/api/v1/session/refresh", body)
    assert answer[0] == 400
    assert "refresh_token" in errors(answer[1])


def test_an_expired_session_token_is_refused_and_refresh_gives_a_new_one(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(tables={"auth": {"session_minutes": 0.02}})  # 1.2 s
    add_password_user(appliance, "alice")
    session = sign_in(appliance, "alice", PASSWORD)
    assert session["expires_in"] == 1
    assert me(appliance, session["token"])[0] == 200
    time.sleep(2.5)
    status, body = me(appliance, session["token"])
    assert status == 403
    assert "expired" in errors(body)
    status, body = post_json(
        appliance, "/api/v1/session/refresh", {"refresh_token": session["refresh_token"]}
    )
    assert status == 200, body
    assert me(appliance, json.loads(body)["token"])[0] == 200


def test_sign_ins_and_failures_are_logged_without_secrets(start_appliance: StartAppliance) -> None:
    appliance = start_appliance()
    add_password_user(appliance, "alice")
    session = sign_in(appliance, "alice", PASSWORD)
    status, _ = post_json(appliance, "/api/v1/session", {"name": "alice", "password": "wrong-pw"})
    assert status == 403
    deadline = time.monotonic() + 5
    while True:
        events = appliance.events()
        signed = [e for e in events if e.get("msg") == "signed in"]
        failed = [e for e in events if e.get("msg") == "sign-in failed"]
        if (signed and failed) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert signed[0]["user"] == "alice"
    assert signed[0]["request_id"]
    assert (failed[0]["login"], failed[0]["reason"]) == ("alice", "password")
    text = appliance.log.read_text()
    for secret in (PASSWORD, "wrong-pw", session["token"], session["refresh_token"]):
        assert secret not in text


def test_a_hash_with_older_parameters_is_upgraded_at_sign_in(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "alice")
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    database = appliance.data_dir / "private" / "registry.db"
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("UPDATE users SET password_hash = ? WHERE name = 'alice'", (weak,))
        connection.commit()
    sign_in(appliance, "alice", PASSWORD)
    with closing(sqlite3.connect(database)) as connection:
        [stored] = connection.execute("SELECT password_hash FROM users").fetchone()
    assert stored != weak
    assert "m=65536,t=3,p=4" in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    sign_in(appliance, "alice", PASSWORD)  # and the new hash verifies


async def test_sessions_work_over_h2c(start_appliance: StartAppliance) -> None:
    """The session routes, handed from the h2c lane to aiohttp, answer as over HTTP/1.1."""
    appliance = start_appliance()
    add_password_user(appliance, "alice")
    client = await RawH2.connect(appliance.port)

    async def ask(
        method: str, path: str, *, token: str | None = None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        extra = [(b"authorization", f"Bearer {token}".encode())] if token else []
        if body is not None:
            extra.append((b"content-type", b"application/json"))
        stream_id = client.request(
            path.encode(), method=method.encode(), extra=extra, end=body is None
        )
        if body is not None:
            client.h2.send_data(stream_id, body, end_stream=True)
        await client.drain()
        status, answer, reset = answers_of(await client.until_done(stream_id), stream_id)
        assert reset is None
        return status, answer

    try:
        document = json.dumps({"name": "alice", "password": PASSWORD}).encode()
        status, body = await ask("POST", "/api/v1/session", body=document)
        assert status == 200, body
        session = json.loads(body)
        status, body = await ask("GET", "/api/v1/me", token=session["token"])
        assert (status, json.loads(body)["user"]["login"]) == (200, "alice")
        refresh = json.dumps({"refresh_token": session["refresh_token"]}).encode()
        status, body = await ask("POST", "/api/v1/session/refresh", body=refresh)
        assert status == 200, body
        token = json.loads(body)["token"]
        assert (await ask("DELETE", "/api/v1/session", token=token))[0] == 200
        status, body = await ask("GET", "/api/v1/me", token=token)
        assert status == 403
        assert "the session has ended" in errors(body)
    finally:
        await client.close()


def test_a_session_token_reads_where_tokens_are_required_and_a_new_password_ends_it(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(tables={"auth": {"required": True}})
    add_password_user(appliance, "alice")
    session = sign_in(appliance, "alice", PASSWORD)
    assert appliance.get("/index/config.json")[0] == 401
    status, body = appliance.get("/index/config.json", bearer(session["token"]))
    assert status == 200, body
    assert json.loads(body)["auth-required"] is True

    changed = appliance.run(
        "user", "set-password", "alice", "--password-stdin", input="a new password\n"
    )
    assert changed.returncode == 0, changed.stderr
    time.sleep(1.0)
    assert appliance.get("/index/config.json", bearer(session["token"]))[0] == 403
    status, body = post_json(
        appliance, "/api/v1/session/refresh", {"refresh_token": session["refresh_token"]}
    )
    assert status == 403
    assert "has ended" in errors(body)
    status, _ = post_json(appliance, "/api/v1/session", {"name": "alice", "password": PASSWORD})
    assert status == 403
    sign_in(appliance, "alice", "a new password")
