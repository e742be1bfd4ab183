"""A small fake of GitHub's OAuth app endpoints and the two API calls GhostCrate makes.

GitHub cannot be reached from the test machines. This answers as GitHub does
(docs.github.com, "Authorizing OAuth apps"): the authorize page (here: the user
`signed_in` has already agreed, so it redirects straight back with a code), the
token endpoint (a code is good once and only with its PKCE verifier; a bad code
is a 200 whose JSON says `bad_verification_code`, as GitHub answers), and
`GET /user` and `GET /user/orgs` under `/api`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.test_utils import TestServer
from authlib.oauth2.rfc7636 import create_s256_code_challenge


@dataclass
class GitHubUser:
    id: int
    login: str
    orgs: list[str] = field(default_factory=list)
    email: str | None = None


@dataclass
class _Grant:
    user: GitHubUser
    challenge: str
    redirect_uri: str


class FakeGitHub:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        #: Who is signed in at "GitHub" when the browser comes to authorize.
        self.signed_in = GitHubUser(583231, "octocat", ["acme"], "octocat@example.com")
        #: The query of each authorize request.
        self.authorize_queries: list[dict[str, str]] = []
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, GitHubUser] = {}
        app = web.Application()
        app.router.add_get("/login/oauth/authorize", self._authorize)
        app.router.add_post("/login/oauth/access_token", self._access_token)
        app.router.add_get("/api/user", self._user)
        app.router.add_get("/api/user/orgs", self._orgs)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> FakeGitHub:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def settings(self) -> dict[str, object]:
        """The `[[auth.oidc]]` keys that point the github preset here."""
        return {
            "preset": "github",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authorize_url": f"{self.url}/login/oauth/authorize",
            "token_url": f"{self.url}/login/oauth/access_token",
            "api_url": f"{self.url}/api",
        }

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorize_queries.append(query)
        if query.get("client_id") != self.client_id:
            return web.Response(status=404, text="no such OAuth app")
        code = secrets.token_hex(10)
        self._codes[code] = _Grant(
            self.signed_in, query.get("code_challenge", ""), query["redirect_uri"]
        )
        back = urlencode({"code": code, "state": query["state"]})
        raise web.HTTPFound(f"{query['redirect_uri']}?{back}")

    async def _access_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return web.json_response({"error": "incorrect_client_credentials"})
        grant = self._codes.pop(str(form.get("code")), None)
        if (
            grant is None
            or grant.redirect_uri != form.get("redirect_uri")
            or create_s256_code_challenge(str(form.get("code_verifier"))) != grant.challenge
        ):
            return web.json_response(
                {
                    "error": "bad_verification_code",
                    "error_description": "The code passed is incorrect or expired.",
                }
            )
        token = "gho_" + secrets.token_hex(18)
        self._tokens[token] = grant.user
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "scope": "read:org,read:user"}
        )

    def _who(self, request: web.Request) -> GitHubUser:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        user = self._tokens.get(token)
        if user is None:
            raise web.HTTPUnauthorized(text='{"message": "Bad credentials"}')
        return user

    async def _user(self, request: web.Request) -> web.Response:
        user = self._who(request)
        body: dict[str, Any] = {"id": user.id, "login": user.login, "email": user.email}
        return web.json_response(body | {"name": user.login.title()})

    async def _orgs(self, request: web.Request) -> web.Response:
        return web.json_response([{"login": org} for org in self._who(request).orgs])
