"""Signing in over HTTP as a web client does: sessions, refresh, logout."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.support.appliance import Appliance
from tests.support.leaks import LEAKS


def sign_in(appliance: Appliance, name: str, password: str, *, key: str = "name") -> dict[str, Any]:
    LEAKS.secret("password", password)
    status, body = post_json(appliance, "/api/v1/session", {key: name, "password": password})
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def post_json(
    appliance: Appliance, path: str, document: object, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    return appliance.request(
        "POST",
        path,
        json.dumps(document).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(appliance: Appliance, token: str) -> tuple[int, bytes]:
    return appliance.get("/api/v1/me", bearer(token))


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """The header (0) or the claims (1) of a JWT, unverified."""
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded
