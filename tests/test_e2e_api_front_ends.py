"""The routes issue 17 added answer alike through the HTTP/1.1 fast lane (which hands
them to aiohttp) and the h2c lane (which relays them): status, body and the headers
that matter, for good requests and hostile ones."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Callable

import pytest

from tests.support.appliance import Appliance
from tests.support.h2client import H2Client
from tests.support.private import add_user, create_token

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
#: Headers both front ends must give alike (the rest, such as Date, may differ).
#: A JSON body nested 5,000 deep: far past the 1,000 levels that Python's json follows.
DEEP = b"[" * 5_000
COMPARED = ("content-type", "content-security-policy", "x-content-type-options", "allow")


def cases(admin: str, user: str) -> list[tuple[str, str, bytes, str | None, int]]:
    """(method, path, body, token, the status both must answer)."""
    webhooks = "/api/v1/orgs/acme/webhooks"
    return [
        ("GET", "/api/openapi.json", b"", None, 200),
        ("GET", "/api/docs", b"", None, 200),
        ("GET", "/api/docs/docs.js", b"", None, 200),
        ("GET", "/api/docs/swagger-ui.css", b"", None, 200),
        # 1.5 MB: more than the stream's window, all of it read before the window opens
        # (the h2c lane once ended such a stream with the window's worth).
        ("GET", "/api/docs/swagger-ui-bundle.js", b"", None, 200),
        # Only the page's own files: no path tricks, encoded or not.
        ("GET", "/api/docs/..%2f..%2fopenapi.py", b"", None, 404),
        ("GET", "/api/docs/index.html", b"", None, 404),
        ("GET", "/api/v1/me/tokens", b"", None, 401),
        ("GET", "/api/v1/me/tokens", b"", user, 200),
        ("PUT", "/api/v1/me/tokens", b'{"api_token": ', user, 400),
        ("PUT", "/api/v1/me/tokens", b'{"api_token": {"name": 7}}', user, 400),
        ("GET", "/api/v1/admin/users", b"", user, 403),
        ("GET", "/api/v1/admin/users", b"", admin, 200),
        ("PUT", "/api/v1/admin/users/nobody-here/disable", b"", admin, 404),
        ("GET", webhooks, b"", user, 403),
        ("GET", webhooks, b"", admin, 200),
        # The cloud metadata address and a file URL are no webhook targets.
        ("POST", webhooks, b'{"url": "http://169.254.169.254/latest"}', admin, 400),
        ("POST", webhooks, b'{"url": "file:///etc/passwd"}', admin, 400),
        ("GET", f"{webhooks}/99999999999999999999999/deliveries", b"", admin, 404),
        ("GET", f"{webhooks}/\u00b2/deliveries", b"", admin, 404),
        ("POST", f"{webhooks}/1/retry", b"[]", admin, 404),
        # Nesting deeper than Python's json can follow is a bad body, not a 500.
        ("POST", "/api/v1/session", DEEP, None, 400),
        ("PUT", "/api/v1/me/tokens", DEEP, user, 400),
        ("POST", webhooks, DEEP, admin, 400),
    ]


async def over_h2c(
    appliance: Appliance, requests: list[tuple[str, str, bytes, str | None, int]]
) -> list[tuple[int, dict[str, str], bytes]]:
    client, _ = await H2Client.upgrade("127.0.0.1", appliance.port, "/healthz")
    try:
        answers = []
        for method, path, body, token, _ in requests:
            headers = [("content-type", "application/json")] if body else []
            headers += [("authorization", token)] if token else []
            answer = await asyncio.wait_for(
                client.send(method, _quoted(path), *headers, body=body), 15
            )
            answers.append((answer.status, answer.headers, bytes(answer.body)))
        return answers
    finally:
        await client.close()


def over_http1(
    appliance: Appliance, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", appliance.port, timeout=15)
    try:
        connection.request(method, path, body or None, headers)
        response = connection.getresponse()
        found = {name.lower(): value for name, value in response.getheaders()}
        return response.status, found, response.read()
    finally:
        connection.close()


def _quoted(path: str) -> str:
    return path.replace("\u00b2", "%C2%B2")


def test_new_routes_answer_alike_through_the_fast_lane_and_h2c(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    add_user(appliance, "root", admin=True)
    add_user(appliance, "eve")
    admin, user = create_token(appliance, "root"), create_token(appliance, "eve")
    assert appliance.run("org", "add", "acme", "--owner", "root").returncode == 0
    requests = cases(admin, user)
    h2 = asyncio.run(over_h2c(appliance, requests))
    for (method, path, body, token, expected), (h2_status, h2_headers, h2_body) in zip(
        requests, h2, strict=True
    ):
        headers = {"Content-Type": "application/json"} if body else {}
        headers |= {"Authorization": token} if token else {}
        status, plain_headers, answer = over_http1(appliance, method, _quoted(path), body, headers)
        what = f"{method} {path}"
        assert (status, h2_status) == (expected, expected), (what, answer[:300], h2_body[:300])
        assert answer == h2_body, what
        for name in COMPARED:
            assert plain_headers.get(name) == h2_headers.get(name), (what, name)
        if status >= 400:  # cargo's error form, saying what is wrong
            assert json.loads(answer)["errors"][0]["detail"], what
