"""Single sign-on against a real OpenID provider (oidc-provider), through a running appliance.

The browser signs in through the provider's own login and consent forms; the
appliance runs two workers, so the callback may reach another worker than the
login did. Every tampered callback or ID token is refused with a 4xx naming
what failed, and registers nobody.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.hostile.test_h2_relay import answers_of
from tests.support.appliance import Appliance
from tests.support.github_fake import FakeGitHub, GitHubUser
from tests.support.h2attack import RawH2
from tests.support.oidc_provider import Browser, OidcProvider
from tests.support.rawhttp import exchange
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

ACCOUNTS = {"alice": {"email": "alice@example.com", "groups": ["eng", "ops"]}}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def add_provider(appliance: Appliance, **entry: object) -> None:
    """Append an `[[auth.oidc]]` entry to the appliance's config file."""
    lines = ["[[auth.oidc]]", *(f"{key} = {toml_value(value)}" for key, value in entry.items())]
    with appliance.config.open("a") as config:
        config.write("\n".join(lines) + "\n")


def sso_appliance(
    workdir: Path, upstream: FakeUpstream, provider: OidcProvider, **entry: object
) -> Appliance:
    """An appliance (two workers) with the provider as `corp`, its client registered there."""
    appliance = Appliance(workdir, upstream.url, server={"workers": 2})
    client = provider.register(f"{appliance.url}/api/v1/sso/corp/callback")
    add_provider(
        appliance,
        name="corp",
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        scopes=["openid", "profile", "email", "groups"],
        **entry,
    )
    return appliance.start()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with OidcProvider(tmp_path_factory.mktemp("oidc"), ACCOUNTS) as started:
        yield started


@pytest.fixture
def appliance(
    tmp_path: Path, upstream: FakeUpstream, provider: OidcProvider
) -> Iterator[Appliance]:
    started = sso_appliance(
        tmp_path / "appliance", upstream, provider, org_roles={"eng": "acme:member"}
    )
    yield started
    started.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    opened = Browser()
    yield opened
    await opened.close()


def users(appliance: Appliance) -> list[str]:
    listed = appliance.run("user", "list")
    assert listed.returncode == 0, listed.stderr
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def members(appliance: Appliance, org: str) -> dict[str, str]:
    """user -> role in `org`, as `ghostcrate org show` lists them."""
    shown = appliance.run("org", "show", org)
    assert shown.returncode == 0, shown.stderr
    rows = [line.split("\t") for line in shown.stdout.splitlines()]
    return {row[1]: row[2] for row in rows if row[0] == "member"}


def add_org(appliance: Appliance, org: str) -> None:
    assert appliance.run("user", "add", f"{org}-admin").returncode == 0
    added = appliance.run("org", "add", org, "--owner", f"{org}-admin")
    assert added.returncode == 0, added.stderr


async def callback_url(appliance: Appliance, browser: Browser, login: str = "alice") -> str:
    return await browser.sign_in(
        f"{appliance.url}/api/v1/sso/corp/login",
        f"{appliance.url}/api/v1/sso/corp/callback",
        login=login,
    )


def refusal(answer: tuple[int, dict[str, Any] | str]) -> tuple[int, str]:
    status, body = answer
    assert isinstance(body, dict), body
    return status, str(body["errors"][0]["detail"])


async def test_first_sign_in_registers_the_user_and_later_ones_find_it(
    appliance: Appliance, provider: OidcProvider, browser: Browser
) -> None:
    add_org(appliance, "acme")
    before = users(appliance)
    back = await callback_url(appliance, browser)
    # The appliance sent the browser to the provider with PKCE (S256), state and nonce.
    authorization = parse_qs(urlsplit(browser.visited[1]).query)
    assert browser.visited[1].startswith(f"{provider.issuer}/auth?")
    assert authorization["code_challenge_method"] == ["S256"]
    assert len(authorization["code_challenge"][0]) == 43
    assert authorization["state"][0]
    assert authorization["nonce"][0]
    assert authorization["redirect_uri"] == [f"{appliance.url}/api/v1/sso/corp/callback"]
    assert "code_verifier" not in browser.visited[1]
    assert parse_qs(urlsplit(back).query)["state"] == authorization["state"]

    status, body = await browser.get(back)
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["user"]["login"] == "alice"
    assert set(body) == {"token", "refresh_token", "expires_in", "refresh_expires_in", "user"}
    assert users(appliance) == sorted([*before, "alice"])
    audited = appliance.run("audit", "--json", "--user", "alice").stdout.splitlines()
    records = [json.loads(line) for line in audited]
    assert ("register-user", "via corp") in [(r["action"], r["detail"]) for r in records]
    assert records[-1]["action"] == "sign-in"
    assert records[-1]["detail"] == "via sso:corp"
    assert records[-1]["actor"] == "alice"
    # The session is one like POST /api/v1/session gives: it signs API requests in.
    me = appliance.get("/api/v1/me", {"Authorization": f"Bearer {body['token']}"})
    assert me[0] == 200, me
    assert json.loads(me[1])["user"]["login"] == "alice"
    signed_in = [e for e in appliance.events() if e.get("msg") == "signed in"]
    assert signed_in[-1]["registered"] is True
    # The groups claim (eng, ops) made her a member of acme (org_roles: eng -> acme:member).
    assert signed_in[-1]["org_roles"] == {"acme": "member"}
    assert members(appliance, "acme") == {"acme-admin": "owner", "alice": "member"}
    # A role changed by hand is set back to what the groups give at the next sign-in.
    assert appliance.run("org", "member", "add", "acme", "alice", "--role", "admin").returncode == 0
    assert members(appliance, "acme")["alice"] == "admin"

    again = await browser.get(await callback_url(appliance, browser))
    assert again[0] == 200, again
    assert isinstance(again[1], dict)
    assert again[1]["user"]["id"] == body["user"]["id"]
    assert again[1]["token"] != body["token"]
    assert users(appliance) == sorted([*before, "alice"])
    latest = [e for e in appliance.events() if e.get("msg") == "signed in"][-1]
    assert latest["registered"] is False
    assert latest["org_roles"] == {"acme": "member"}
    assert members(appliance, "acme")["alice"] == "member"
    # The callback's one-time code and state never reach the log (its access line says so).
    await workers_of_sign_ins(appliance, 2)
    log = appliance.log.read_text()
    callback_query = parse_qs(urlsplit(back).query)
    assert callback_query["code"][0] not in log
    assert callback_query["state"][0] not in log
    assert "/api/v1/sso/corp/callback?(query not logged)" in log


async def workers_of_sign_ins(appliance: Appliance, count: int) -> list[tuple[int, int]]:
    """(worker that began the login, worker that finished it) of the first `count` sign-ins;
    access lines are written just after their answers, so they are waited for."""
    for _ in range(100):
        events = appliance.events()
        begun = [int(e["pid"]) for e in events if e.get("path") == "/api/v1/sso/corp/login"]
        finished = [int(e["pid"]) for e in events if e.get("msg") == "signed in"]
        if len(begun) >= count and len(finished) >= count:
            return list(zip(begun[:count], finished[:count], strict=True))
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access lines for {count} sign-ins")


async def test_a_login_begun_on_one_worker_is_finished_by_the_other(
    appliance: Appliance, browser: Browser
) -> None:
    """The login's state is in the registry database, not in the worker that began it."""
    for done in range(1, 17):  # each request on a new connection: the kernel picks the worker
        status, body = await browser.get(await callback_url(appliance, browser))
        assert status == 200, body
        if any(a != b for a, b in await workers_of_sign_ins(appliance, done)):
            return
    raise AssertionError("every callback reached the worker that began its login")


async def test_a_local_user_of_the_same_name_is_never_taken_over(
    appliance: Appliance, browser: Browser
) -> None:
    assert appliance.run("user", "add", "bob", "--admin").returncode == 0
    status, body = await browser.get(await callback_url(appliance, browser, login="bob"))
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["user"]["login"] == "bob-corp"
    assert body["user"]["admin"] is False


@pytest.mark.parametrize(
    ("mode", "named"),
    [
        ("forged", "signature does not verify"),
        ("unknown-key", "signed with a key the provider does not publish"),
        ("wrong-aud", "audience 'someone-else'"),
        ("expired", "expired"),
        ("wrong-nonce", "nonce"),
    ],
)
async def test_a_bad_id_token_is_refused_and_registers_nobody(
    appliance: Appliance, provider: OidcProvider, browser: Browser, mode: str, named: str
) -> None:
    before = users(appliance)
    back = await callback_url(appliance, browser)
    provider.tamper(mode)
    status, detail = refusal(await browser.get(back))
    assert status == 400
    assert named in detail, detail
    assert users(appliance) == before


async def test_a_wrong_state_is_refused(appliance: Appliance, browser: Browser) -> None:
    back = await callback_url(appliance, browser)
    code = parse_qs(urlsplit(back).query)["code"][0]
    callback = f"{appliance.url}/api/v1/sso/corp/callback"
    status, detail = refusal(await browser.get(f"{callback}?code={code}&state=made-up"))
    assert status == 400
    assert "`state` is not one of a login begun here" in detail
    status, detail = refusal(await browser.get(f"{callback}?code={code}"))
    assert status == 400
    assert "no `state`" in detail


async def test_a_callback_from_another_browser_is_refused(
    appliance: Appliance, browser: Browser
) -> None:
    """Login CSRF: someone else's callback, opened in this browser, signs nobody in."""
    before = users(appliance)
    theirs = await callback_url(appliance, browser, login="mallory")
    other = Browser()
    try:
        status, detail = refusal(await other.get(theirs))
    finally:
        await other.close()
    assert status == 400
    assert "this browser did not begin this login" in detail
    assert users(appliance) == before


async def test_a_replayed_callback_or_code_is_refused(
    appliance: Appliance, browser: Browser
) -> None:
    back = await callback_url(appliance, browser)
    assert (await browser.get(back))[0] == 200
    # The same callback again: its state was used up by the first.
    status, detail = refusal(await browser.get(back))
    assert status == 400
    assert "used already" in detail
    # The used code with the state of a new login: the provider refuses the code.
    fresh = parse_qs(urlsplit(await callback_url(appliance, browser)).query)["state"][0]
    code = parse_qs(urlsplit(back).query)["code"][0]
    callback = f"{appliance.url}/api/v1/sso/corp/callback"
    status, detail = refusal(await browser.get(f"{callback}?code={code}&state={fresh}"))
    assert status == 400
    assert "refused the authorization code (invalid_grant" in detail


async def test_the_provider_s_refusal_and_an_unknown_provider_are_told(
    appliance: Appliance, browser: Browser
) -> None:
    back = await callback_url(appliance, browser)
    state = parse_qs(urlsplit(back).query)["state"][0]
    callback = f"{appliance.url}/api/v1/sso/corp/callback"
    denied = await browser.get(f"{callback}?error=access_denied&state={state}")
    assert refusal(denied) == (400, "corp did not sign you in: access_denied")
    status, detail = refusal(await browser.get(f"{appliance.url}/api/v1/sso/other/login"))
    assert status == 404
    assert "no single sign-on provider 'other' here (providers: corp)" in detail


async def h2_status(port: int, target: str) -> int:
    client = await RawH2.connect(port)
    try:
        stream_id = client.request(target.encode())
        await client.drain()
        status: int = answers_of(await client.until_done(stream_id), stream_id)[0]
        return status
    finally:
        await client.close()


async def test_the_routes_answer_alike_over_http1_and_h2c(appliance: Appliance) -> None:
    for target, expected in [
        ("/api/v1/sso/corp/login", 302),
        ("/api/v1/sso/corp/callback?state=x&code=y", 400),
        ("/api/v1/sso/nobody/login", 404),
    ]:
        assert await h2_status(appliance.port, target) == expected, target
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        assert (await exchange("127.0.0.1", appliance.port, head)).statuses == [expected]


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    fake = await FakeGitHub("Iv1.test-client", "github-secret").start()
    yield fake
    await fake.close()


@pytest.fixture
def two_providers(
    tmp_path: Path,
    upstream: FakeUpstream,
    provider: OidcProvider,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Appliance]:
    """`corp` (the OpenID provider) and `github` (the fake), side by side."""
    appliance = Appliance(tmp_path / "appliance", upstream.url, server={"workers": 2})
    client = provider.register(f"{appliance.url}/api/v1/sso/corp/callback")
    add_provider(
        appliance,
        name="corp",
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret_env="CORP_SSO_SECRET",
    )
    add_provider(
        appliance, name="github", org_roles={"acme": "acme:contributor"}, **github.settings()
    )
    monkeypatch.setenv("CORP_SSO_SECRET", client.client_secret)
    appliance.start()
    yield appliance
    appliance.stop()


async def test_github_sign_in_registers_the_github_user_beside_another_provider_s(
    two_providers: Appliance, github: FakeGitHub, browser: Browser
) -> None:
    appliance = two_providers
    add_org(appliance, "acme")
    back = await browser.sign_in(
        f"{appliance.url}/api/v1/sso/github/login",
        f"{appliance.url}/api/v1/sso/github/callback",
        login="unused",
    )
    asked = github.authorize_queries[-1]
    assert asked["scope"] == "read:user user:email read:org"
    assert asked["code_challenge_method"] == "S256"
    assert asked["redirect_uri"] == f"{appliance.url}/api/v1/sso/github/callback"
    status, body = await browser.get(back)
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["user"]["login"] == "octocat"
    signed_in = [e for e in appliance.events() if e.get("msg") == "signed in"][-1]
    assert signed_in["provider"] == "github"
    assert signed_in["org_roles"] == {"acme": "contributor"}
    assert members(appliance, "acme")["octocat"] == "contributor"
    # The other provider (its secret from an environment variable) works beside it.
    corp = await browser.get(await callback_url(appliance, browser, login="carol"))
    assert corp[0] == 200, corp
    assert users(appliance) == ["acme-admin", "carol", "octocat"]
    # A replayed code: GitHub says bad_verification_code; a fresh state does not help.
    again = await browser.sign_in(
        f"{appliance.url}/api/v1/sso/github/login",
        f"{appliance.url}/api/v1/sso/github/callback",
        login="unused",
    )
    fresh = parse_qs(urlsplit(again).query)["state"][0]
    code = parse_qs(urlsplit(back).query)["code"][0]
    callback = f"{appliance.url}/api/v1/sso/github/callback?code={code}&state={fresh}"
    status, detail = refusal(await browser.get(callback))
    assert status == 400
    assert "github refused the authorization code (bad_verification_code" in detail
    # Having left the organisation on GitHub, the next sign-in takes the role away.
    github.signed_in.orgs = []
    left = await browser.get(
        await browser.sign_in(
            f"{appliance.url}/api/v1/sso/github/login",
            f"{appliance.url}/api/v1/sso/github/callback",
            login="unused",
        )
    )
    assert left[0] == 200, left
    assert "octocat" not in members(appliance, "acme")
    listed = refusal(await browser.get(f"{appliance.url}/api/v1/sso/gitlab/login"))
    assert listed == (404, "no single sign-on provider 'gitlab' here (providers: corp, github)")


async def test_allowed_groups_keep_out_users_of_other_organisations(
    tmp_path: Path, upstream: FakeUpstream, github: FakeGitHub, browser: Browser
) -> None:
    appliance = Appliance(tmp_path / "appliance", upstream.url)
    add_provider(appliance, name="github", allowed_groups=["acme"], **github.settings())
    appliance.start()
    try:
        github.signed_in = GitHubUser(9, "mallory", ["evil-corp"])
        back = await browser.sign_in(
            f"{appliance.url}/api/v1/sso/github/login",
            f"{appliance.url}/api/v1/sso/github/callback",
            login="unused",
        )
        status, detail = refusal(await browser.get(back))
        assert status == 403
        assert "mallory is not in a group allowed to sign in here through github" in detail
        assert users(appliance) == []
    finally:
        appliance.stop()
