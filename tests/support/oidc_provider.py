"""A real OpenID provider (the npm package oidc-provider) on 127.0.0.1, and a browser for it.

`scripts/bootstrap-tests` installs the provider into `tests/support/oidc`. The
browser is an aiohttp client with a cookie jar that follows redirects one at a
time and fills in the provider's development login and consent forms, as a
person would; it stops at the redirect back to GhostCrate, so a test can look
at (or tamper with, or replay) the callback before it is sent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import aiohttp

from tests.support.appliance import free_port
from tests.support.leaks import LEAKS

PROVIDER_DIR = Path(__file__).parent / "oidc"
SCRIPT = PROVIDER_DIR / "provider.mjs"


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str


class OidcProvider:
    """`node provider.mjs PORT ACCOUNTS` in the foreground; stopped by its PID."""

    def __init__(self, workdir: Path, accounts: dict[str, dict[str, Any]] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "oidc-provider.log"
        self._accounts = workdir / "accounts.json"
        self._accounts.write_text(json.dumps(accounts or {}))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> OidcProvider:
        node = shutil.which("node")
        if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise AssertionError("no test OpenID provider: run scripts/bootstrap-tests first")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [node, str(SCRIPT), str(self.port), str(self._accounts)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROVIDER_DIR,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"oidc-provider exited at start:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.discovery_url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"oidc-provider did not answer:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def register(self, redirect_uri: str) -> Client:
        """A new client, registered through the provider's dynamic registration endpoint."""
        body = json.dumps({"redirect_uris": [redirect_uri], "response_types": ["code"]})
        answer = self._post("/reg", body.encode(), "application/json")
        LEAKS.secret("OIDC client secret", answer["client_secret"])
        return Client(answer["client_id"], answer["client_secret"])

    def tamper(self, mode: str) -> None:
        """Make the next ID token `forged`, `unknown-key`, `wrong-aud`, `expired` or
        `wrong-nonce`."""
        assert self._post(f"/__test/tamper?mode={mode}", b"", "text/plain")["tamper"] == mode

    def _post(self, path: str, body: bytes, content_type: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.issuer + path, data=body, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer


_PROMPT = re.compile(r'name="prompt" value="(\w+)"')


class Browser:
    """An HTTP client that signs in as a person would, without JavaScript."""

    def __init__(self) -> None:
        # A new connection for every request, as a browser's may be: with several
        # workers, the login and its callback may then reach different ones.
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        #: Every URL requested, in order.
        self.visited: list[str] = []

    async def close(self) -> None:
        await self.session.close()

    async def sign_in(self, login_url: str, back_to: str, *, login: str) -> str:
        """Follow `login_url` through the provider's forms; the URL of the redirect to
        `back_to` (GhostCrate's callback), which is not requested."""
        url = login_url
        for _ in range(20):
            self.visited.append(url)
            async with self.session.get(url, allow_redirects=False) as response:
                if response.status in (302, 303):
                    url = urljoin(url, response.headers["Location"])
                    if url.startswith(back_to):
                        return url
                    continue
                page = await response.text()
                assert response.status == 200, (url, response.status, page[:500])
            url = await self._submit(url, page, login)
            if url.startswith(back_to):
                return url
        raise AssertionError(f"no redirect to {back_to} after {self.visited}")

    async def _submit(self, url: str, page: str, login: str) -> str:
        """Fill in the login or consent form of `page`; where the answer redirects."""
        found = _PROMPT.search(page)
        assert found is not None, page[:500]
        form = {"prompt": found.group(1)}
        if form["prompt"] == "login":
            form |= {"login": login, "password": "any password"}
        async with self.session.post(url, data=form, allow_redirects=False) as response:
            assert response.status in (302, 303), (response.status, await response.text())
            return urljoin(url, response.headers["Location"])

    async def get(self, url: str) -> tuple[int, dict[str, Any] | str]:
        """Status and body (JSON if it is JSON) of a GET, redirects not followed."""
        async with self.session.get(url, allow_redirects=False) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text
