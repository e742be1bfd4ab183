"""The OpenAPI description against the router: the same operations, none missing either way."""

from __future__ import annotations

from pathlib import Path

from openapi_spec_validator import validate

from ghostcrate.appliance.app import create_app
from ghostcrate.appliance.openapi import EXCLUDED_PATHS, document
from tests.conftest import mirror_settings

Operation = tuple[str, str]


def routed(tmp_path: Path) -> set[Operation]:
    """Every (method, path template) `create_app` registers (HEAD comes with GET; `*` is a
    route's 405 for the methods it does not take)."""
    app = create_app(mirror_settings(tmp_path, "http://127.0.0.1:9/"))
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "*") or resource is None:
            continue
        found.add((route.method, resource.canonical))
    return found


def described() -> set[Operation]:
    return {(method.upper(), path) for path, item in document()["paths"].items() for method in item}


def test_every_route_is_described_and_every_described_operation_is_routed(
    tmp_path: Path,
) -> None:
    routes = routed(tmp_path)
    excluded = {(method, path) for method, path in routes if path in EXCLUDED_PATHS}
    assert excluded == {
        ("GET", "/index/config.json"),
        ("GET", "/index/{path}"),
        ("GET", "/api/v1/crates/{name}/{version}/download"),
    }
    undescribed = sorted(routes - excluded - described())
    unrouted = sorted(described() - routes)
    assert (undescribed, unrouted) == ([], []), (
        f"routes missing from ghostcrate/appliance/openapi.py: {undescribed}; "
        f"operations in openapi.py that no route answers: {unrouted}"
    )


def test_the_description_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_operation_ids_are_unique_and_every_api_route_may_answer_429_with_retry_after() -> None:
    ids = [op["operationId"] for item in document()["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/"):
                assert operation["responses"]["429"] == {
                    "$ref": "#/components/responses/TooManyRequests"
                }, (method, path)
    headers = document()["components"]["responses"]["TooManyRequests"]["headers"]
    assert headers["Retry-After"]["required"] is True
