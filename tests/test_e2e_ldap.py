"""LDAP sign-in against a real OpenLDAP `slapd` and a running appliance: the directory's
password signs in through `POST /api/v1/session`, the first sign-in registers the user,
groups give org roles and team memberships again at each sign-in, and every refusal
is the local sign-in's refusal."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.test_h2_relay import answers_of
from tests.support.appliance import Appliance
from tests.support.h2attack import RawH2
from tests.support.ldap_server import (
    GROUPS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    LdapServer,
    group_dn,
    slapd_missing,
    user_dn,
)
from tests.support.private import create_token, errors
from tests.support.sessions import me, post_json, sign_in
from tests.support.tls import make_pki

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(slapd_missing() is not None, reason=str(slapd_missing())),
]

StartAppliance = Callable[..., Appliance]
ALICE_PASSWORD = "alice's directory password"
BOB_PASSWORD = "bob's directory password"
LOCAL_PASSWORD = "a local password, long enough"
REFUSED = "sign-in failed: the name or the password is wrong"
MAPPING = {
    "developers": ["acme:member"],
    "platform": ["acme:platform"],
    "leads": ["acme:admin"],
}


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LdapServer]:
    server = LdapServer(
        tmp_path / "slapd",
        {"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD, "carol": "carol's password"},
        {"developers": ["alice", "bob"], "platform": ["alice"], "leads": ["bob"]},
    ).start()
    yield server
    server.stop()


def ldap_appliance(
    start_appliance: StartAppliance,
    directory: LdapServer,
    ldap: Mapping[str, object] | None = None,
    **auth: object,
) -> Appliance:
    """An appliance signing in through `directory`; `ldap` sets more [auth.ldap] keys
    (None: leaves the key out)."""
    keys: dict[str, object] = {
        "url": directory.url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "timeout": 2,
        **(ldap or {}),
    }
    return start_appliance(
        tables={
            "auth": {"login_failures": 50, **auth},
            "auth.ldap": {key: value for key, value in keys.items() if value is not None},
            "auth.ldap.groups": MAPPING,
        }
    )


def run_ok(appliance: Appliance, *args: str) -> str:
    result = appliance.run(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def org(appliance: Appliance) -> dict[str, Any]:
    status, body = appliance.get("/api/v1/orgs/acme")
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def roles(appliance: Appliance) -> dict[str, str]:
    return {member["login"]: member["role"] for member in org(appliance)["members"]}


def teams(appliance: Appliance) -> dict[str, list[str]]:
    return {team["name"]: team["members"] for team in org(appliance)["teams"]}


def refusal(appliance: Appliance, name: str, password: str) -> tuple[int, str]:
    status, body = post_json(appliance, "/api/v1/session", {"name": name, "password": password})
    return status, errors(body)


def failures(appliance: Appliance, offset: int) -> list[tuple[str, str]]:
    return [
        (str(event.get("login")), str(event.get("reason")))
        for event in appliance.events(offset)
        if event.get("msg") == "sign-in failed"
    ]


def test_directory_password_registers_the_user_and_groups_follow_the_directory(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    appliance = ldap_appliance(start_appliance, directory)
    run_ok(appliance, "user", "add", "root", "--admin")
    run_ok(appliance, "org", "add", "acme", "--namespace", "acme-*", "--owner", "root")
    run_ok(appliance, "team", "add", "acme:platform")
    run_ok(appliance, "team", "add", "acme:docs")
    assert "alice" not in run_ok(appliance, "user", "list")

    session = sign_in(appliance, "alice", ALICE_PASSWORD)
    assert session["user"]["login"] == "alice"
    assert session["user"]["admin"] is False
    status, body = me(appliance, session["token"])
    assert status == 200, body
    assert json.loads(body)["user"]["login"] == "alice"
    # Registered by the first sign-in; the directory's password stays the directory's.
    assert "alice" in run_ok(appliance, "user", "list")
    audited = run_ok(appliance, "audit", "--json", "--user", "alice").splitlines()
    actions = [(record["action"], record["detail"]) for record in map(json.loads, audited)]
    assert actions[:3] == [
        ("register-user", "via ldap"),
        ("directory-groups", None),
        ("sign-in", "via ldap"),
    ]
    refused = appliance.run("user", "set-password", "alice", "--password-stdin", input="x" * 20)
    assert refused.returncode != 0
    assert "directory" in refused.stderr
    # developers -> acme:member, platform -> team acme:platform; bob (leads) -> admin.
    assert roles(appliance) == {"root": "owner", "alice": "member"}
    assert teams(appliance) == {"docs": [], "platform": ["alice"]}
    sign_in(appliance, "bob", BOB_PASSWORD)
    assert roles(appliance) == {"root": "owner", "alice": "member", "bob": "admin"}

    # An administrator puts alice in docs by hand: the mapping never touches that.
    run_ok(appliance, "team", "member", "add", "acme:docs", "alice")
    # The directory changes: alice leaves platform and joins leads.
    directory.remove_member("platform", "alice")
    directory.add_member("leads", "alice")
    offset = appliance.log.stat().st_size
    sign_in(appliance, "alice", ALICE_PASSWORD)
    assert roles(appliance) == {"root": "owner", "alice": "admin", "bob": "admin"}
    assert teams(appliance) == {"docs": ["alice"], "platform": []}
    changed = {
        (event["change"], event.get("team") or event.get("role"))
        for event in appliance.events(offset)
        if event.get("msg") == "directory membership"
    }
    assert changed == {("team removed", "acme:platform"), ("role changed", "admin")}

    # Out of every mapped group: the mapped role goes, the hand-made team and the role
    # it needs stay (said in the log).
    for group in ("developers", "leads"):
        directory.remove_member(group, "alice")
    offset = appliance.log.stat().st_size
    sign_in(appliance, "alice", ALICE_PASSWORD)
    assert roles(appliance)["alice"] == "admin"
    assert teams(appliance)["docs"] == ["alice"]
    kept = [e["change"] for e in appliance.events(offset) if e.get("msg") == "directory membership"]
    assert kept == ["role kept (in a team of it by hand)"]
    run_ok(appliance, "team", "member", "remove", "acme:docs", "alice")
    sign_in(appliance, "alice", ALICE_PASSWORD)
    assert "alice" not in roles(appliance)


def test_wrong_empty_and_injected_sign_ins_get_the_local_refusal(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    appliance = ldap_appliance(start_appliance, directory)
    unknown_local = refusal(appliance, "nobody-at-all", "whatever it is")
    assert unknown_local == (403, REFUSED)
    offset = appliance.log.stat().st_size

    assert refusal(appliance, "alice", "not alice's password") == (403, REFUSED)
    binds_before = directory.binds()
    assert refusal(appliance, "alice", "") == (403, REFUSED)
    # No bind at all for an empty password (an unauthenticated bind would succeed).
    assert directory.binds() == binds_before
    # The filter gets the name escaped (RFC 4515): the injection finds nobody.
    assert refusal(appliance, "*)(uid=*", ALICE_PASSWORD) == (403, REFUSED)
    assert refusal(appliance, "*", ALICE_PASSWORD) == (403, REFUSED)
    sent = [text.lower() for text in directory.filters()]  # slapd logs \2A for \2a
    assert r"(uid=\2a\29\28uid=\2a)" in sent
    assert r"(uid=\2a)" in sent
    assert user_dn("alice") not in directory.binds()[len(binds_before) :]

    assert failures(appliance, offset) == [
        ("alice", "password"),
        ("alice", "empty password"),
        ("*)(uid=*", "unknown user"),
        ("*", "unknown user"),
    ]
    log = appliance.log.read_text()
    for secret in (ALICE_PASSWORD, "not alice's password", SERVICE_PASSWORD):
        assert secret not in log
    assert run_ok(appliance, "user", "list").count("alice") == 0


def test_failed_directory_sign_ins_count_in_the_same_throttle(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    appliance = ldap_appliance(start_appliance, directory, login_failures=2)
    assert refusal(appliance, "alice", "wrong once")[0] == 403
    assert refusal(appliance, "alice", "wrong twice")[0] == 403
    status, detail = refusal(appliance, "alice", ALICE_PASSWORD)
    assert status == 429
    assert "too many failed sign-ins" in detail


def test_local_accounts_come_first_and_are_not_taken_over(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    appliance = ldap_appliance(start_appliance, directory)
    # bob has a local password: the local one signs in, the directory's does not.
    added = appliance.run("user", "add", "bob", "--password-stdin", input=LOCAL_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert sign_in(appliance, "bob", LOCAL_PASSWORD)["user"]["login"] == "bob"
    assert refusal(appliance, "bob", BOB_PASSWORD) == (403, REFUSED)
    # carol exists here without a password (tokens only): the directory's carol does not
    # take that account over, she gets one of her own (as single sign-on does).
    run_ok(appliance, "user", "add", "carol")
    local_token = create_token(appliance, "carol")
    assert sign_in(appliance, "carol", "carol's password")["user"]["login"] == "carol-ldap"
    assert sign_in(appliance, "carol", "carol's password")["user"]["login"] == "carol-ldap"
    status, body = appliance.get("/api/v1/me", {"Authorization": local_token})
    assert (status, json.loads(body)["user"]["login"]) == (200, "carol")
    # The local carol keeps the right to a password of her own; carol-ldap has none.
    added = appliance.run("user", "set-password", "carol", "--password-stdin", input="y" * 20)
    assert added.returncode == 0, added.stderr
    refused = appliance.run(
        "user", "set-password", "carol-ldap", "--password-stdin", input="y" * 20
    )
    assert refused.returncode != 0
    # A disabled directory user is refused like a disabled local one.
    sign_in(appliance, "alice", ALICE_PASSWORD)
    run_ok(appliance, "user", "disable", "alice")
    offset = appliance.log.stat().st_size
    assert refusal(appliance, "alice", ALICE_PASSWORD) == (403, REFUSED)
    assert failures(appliance, offset) == [("alice", "disabled")]


def test_directory_down_is_a_clean_refusal_that_the_log_explains(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    appliance = ldap_appliance(start_appliance, directory)
    added = appliance.run("user", "add", "dave", "--password-stdin", input=LOCAL_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    directory.stop()
    offset = appliance.log.stat().st_size

    status, detail = refusal(appliance, "alice", ALICE_PASSWORD)
    assert status == 503
    assert detail.startswith("sign-in is not possible right now: the directory (LDAP) server")
    events = [e for e in appliance.events(offset) if e.get("msg") == "sign-in failed"]
    assert [(e["login"], e["reason"]) for e in events] == [("alice", "directory unavailable")]
    assert "LDAPSocketOpenError" in str(events[0]["error"])
    assert ALICE_PASSWORD not in appliance.log.read_text()
    # Local accounts do not need the directory.
    assert sign_in(appliance, "dave", LOCAL_PASSWORD)["user"]["login"] == "dave"


def test_start_tls_and_ldaps_trust_the_configured_ca_only(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    directory = LdapServer(
        tmp_path / "slapd-tls", {"alice": ALICE_PASSWORD}, {"developers": ["alice"]}, pki
    ).start()
    try:
        assert directory.ldaps_url is not None
        for ldap in (
            {"start_tls": True, "ca_file": str(pki.ca_path)},
            {"url": directory.ldaps_url, "ca_file": str(pki.ca_path)},
        ):
            appliance = ldap_appliance(start_appliance, directory, ldap)
            assert sign_in(appliance, "alice", ALICE_PASSWORD)["user"]["login"] == "alice"
            appliance.stop()
        starttls = "oid=1.3.6.1.4.1.1466.20037"  # RFC 4511 4.14.1, as slapd logs it
        assert directory.log.read_text().count(starttls) == 2  # service account and user
        # Without the CA, the directory's certificate is not trusted: nothing is decided.
        appliance = ldap_appliance(start_appliance, directory, {"url": directory.ldaps_url})
        offset = appliance.log.stat().st_size
        assert refusal(appliance, "alice", ALICE_PASSWORD)[0] == 503
        assert failures(appliance, offset) == [("alice", "directory unavailable")]
        assert "CERTIFICATE_VERIFY_FAILED" in appliance.log.read_text()
    finally:
        directory.stop()


async def test_directory_sign_in_answers_alike_over_h2c(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    """POST /api/v1/session, handed from the h2c lane to aiohttp, signs in through the
    directory and refuses exactly as over HTTP/1.1."""
    appliance = ldap_appliance(start_appliance, directory)
    client = await RawH2.connect(appliance.port)

    async def ask(path: str, document: object = None, token: str = "") -> tuple[int, bytes]:
        body = None if document is None else json.dumps(document).encode()
        extra = [(b"authorization", f"Bearer {token}".encode())] if token else []
        if body is not None:
            extra.append((b"content-type", b"application/json"))
        method = b"GET" if body is None else b"POST"
        stream_id = client.request(path.encode(), method=method, extra=extra, end=body is None)
        if body is not None:
            client.h2.send_data(stream_id, body, end_stream=True)
        await client.drain()
        status, answer, reset = answers_of(await client.until_done(stream_id), stream_id)
        assert reset is None
        return status, answer

    try:
        status, body = await ask("/api/v1/session", {"name": "alice", "password": ALICE_PASSWORD})
        assert status == 200, body
        status, body = await ask("/api/v1/me", token=json.loads(body)["token"])
        assert (status, json.loads(body)["user"]["login"]) == (200, "alice")
        wrong = {"name": "alice", "password": "not it"}
        over_h2c = await ask("/api/v1/session", wrong)
        assert over_h2c == post_json(appliance, "/api/v1/session", wrong)
        assert over_h2c[0] == 403
    finally:
        await client.close()


def test_groups_from_an_attribute_of_the_user_as_active_directory_s_member_of(
    start_appliance: StartAppliance, directory: LdapServer
) -> None:
    # OpenLDAP has no memberOf without an overlay: inetOrgPerson's seeAlso (DNs) stands in.
    directory.modify(
        f"dn: {user_dn('carol')}\nchangetype: modify\nadd: seeAlso\n"
        f"seeAlso: {group_dn('leads')}\nseeAlso: {group_dn('platform')}\n"
    )
    appliance = ldap_appliance(
        start_appliance, directory, {"groups_attribute": "seeAlso", "group_base": None}
    )
    run_ok(appliance, "user", "add", "root")
    run_ok(appliance, "org", "add", "acme", "--owner", "root")
    run_ok(appliance, "team", "add", "acme:platform")
    sign_in(appliance, "carol", "carol's password")
    # Only the attribute counts: carol is in no group's member list, alice's groups
    # are not searched for at all.
    assert roles(appliance) == {"root": "owner", "carol": "admin"}
    assert teams(appliance) == {"platform": ["carol"]}
    sign_in(appliance, "alice", ALICE_PASSWORD)
    assert "alice" not in roles(appliance)
