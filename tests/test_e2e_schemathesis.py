"""schemathesis fuzzes every described operation of a live appliance, with every check.

The appliance holds what the operations act on: an administrator with a token,
an ordinary user, a private crate with two versions, an organisation with
teams. schemathesis must find no server error and no answer outside the
description, and the appliance's log must hold no unhandled exception.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.crates import CrateSpec, build_crate
from tests.support.private import add_user, create_token
from tests.support.publish import metadata_bytes, publish_body

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]

#: Examples per operation and phase (docs/api.md records what a run tries).
EXAMPLES = 40
SEED = 17
#: Fewer would mean that operations went untested.
MINIMUM_CASES = 1500
#: Tokens 2 to 9, which schemathesis may revoke; it sends token 1.
SPARE_TOKENS = 8
CONFIG = Path(__file__).with_name("support") / "schemathesis.toml"
#: What the appliance logs for an exception no handler expected, or any error.
LOGGED_FAILURE = re.compile(r"Traceback|unhandled|\"level\": ?\"(error|critical)\"| ERROR ")


def seed(appliance: Appliance) -> str:
    """An administrator's token, and something for each operation to find (made through
    the API, which is quicker than a command per thing)."""
    add_user(appliance, "admin", admin=True)
    token = create_token(appliance, "admin")

    def call(method: str, path: str, body: object) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, answer = appliance.request(method, path, data, {"Authorization": token})
        assert status in (200, 201), answer

    for version in ("1.0.0", "1.1.0"):
        spec = CrateSpec("acme-core", version)
        call("PUT", "/api/v1/crates/new", publish_body(metadata_bytes(spec), build_crate(spec)))
    for _ in range(SPARE_TOKENS):  # for DELETE /api/v1/me/tokens/{id} (schemathesis.toml)
        call("PUT", "/api/v1/me/tokens", {"api_token": {"name": "spare"}})
    for user in ("alice", "bob"):
        add_user(appliance, user)
    call("POST", "/api/v1/orgs", {"name": "acme", "namespaces": ["acme-*"], "owner": "admin"})
    call("PUT", "/api/v1/orgs/acme/members", {"users": [{"login": "alice"}]})
    for team in ("platform", "tools", "infra"):  # removing one leaves others to work on
        call("POST", "/api/v1/orgs/acme/teams", {"name": team})
        call("PUT", f"/api/v1/orgs/acme/teams/{team}/members", {"users": ["alice"]})
    return token


def test_schemathesis_finds_nothing(start_appliance: StartAppliance, tmp_path: Path) -> None:
    appliance = start_appliance()
    token = seed(appliance)
    offset = appliance.log.stat().st_size
    started = time.monotonic()
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            f"--config-file={CONFIG}",
            "run",
            f"{appliance.url}/api/openapi.json",
            "--checks=all",
            f"--max-examples={EXAMPLES}",
            f"--seed={SEED}",
            "--workers=1",
            "--request-timeout=10",
            f"--header=Authorization: {token}",
        ],
        cwd=tmp_path,  # it writes .hypothesis/ where it runs
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.monotonic() - started
    generated = re.search(r"(\d+) generated", result.stdout)
    print(f"schemathesis: {generated and generated[1]} test cases in {seconds:.0f} s")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert generated is not None, result.stdout
    assert int(generated[1]) >= MINIMUM_CASES, result.stdout
    logged = appliance.log.read_bytes()[offset:].decode(errors="replace")
    failures = [line for line in logged.splitlines() if LOGGED_FAILURE.search(line)]
    assert not failures, "\n".join(failures[:20])
