"""`ghostcrate warm`: fill the cache from Cargo.lock files and crate specs, then build offline."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CORPUS_APP_DEPS, make_workspace
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def warm(appliance: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    """`ghostcrate warm` on the appliance's config, always online."""
    return appliance.run("warm", *args, env={"GHOSTCRATE_UPSTREAM__OFFLINE": "false"})


def test_warm_from_a_lockfile_then_build_offline_with_no_upstream(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    direct = CargoEnv(tmp_path / "direct")
    direct.configure_replacement(upstream.url)
    direct.run(["generate-lockfile"], app)

    appliance = Appliance(tmp_path / "appliance", upstream.url, offline=True)
    result = warm(appliance, str(tmp_path))  # a directory: Cargo.lock files are found in it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "16 fetched, 0 already cached, 0 failed" in result.stdout
    assert "warm: " in result.stderr  # progress

    again = warm(appliance, str(app / "Cargo.lock"))
    assert "0 fetched, 16 already cached, 0 failed" in again.stdout  # resumable

    upstream.stop()
    appliance.start()
    try:
        offline = CargoEnv(tmp_path / "offline")
        offline.configure_replacement(appliance.index_url)
        offline.run(["build"], app)
    finally:
        appliance.stop()


def test_warm_a_spec_fetches_the_closure_cargo_could_need(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = Appliance(tmp_path / "appliance", upstream.url)
    result = warm(appliance, "--crate", "featly@0.1", "--crate", "platform", "--crate", "builder")
    assert result.returncode == 0, result.stdout + result.stderr
    assert appliance.cached_crates() == {
        "featly-0.1.0.crate",
        "optdep-0.1.0.crate",  # optional, behind a feature
        "multi-1.1.0.crate",  # newest non-yanked match of "1"
        "platform-0.1.0.crate",
        "unixonly-0.1.0.crate",  # every target's dependencies
        "winonly-0.1.0.crate",
        "builder-0.1.0.crate",
        "buildhelper-0.1.0.crate",  # build-dependency; its dev-dependency is left out
    }


def test_warm_reports_failures_and_exits_1(upstream: FakeUpstream, tmp_path: Path) -> None:
    specs = tmp_path / "specs.txt"
    specs.write_text("# wanted\nz\nnosuchcrate@1\nmulti@9\n")
    appliance = Appliance(tmp_path / "appliance", upstream.url)
    result = warm(appliance, "--crates-file", str(specs))
    assert result.returncode == 1
    assert "1 fetched, 0 already cached, 2 failed" in result.stdout
    assert "failed multi@9: no version matches '9'" in result.stdout
    assert "failed nosuchcrate@1: no such crate upstream" in result.stdout
    # Progress counts what the summary counts: 1 + 0 + 2 items.
    assert result.stderr.splitlines()[-1] == "warm: 3/3 (100%)", result.stderr
    bad = warm(appliance, "--crate", "not a spec")
    assert bad.returncode == 2
    assert "crate spec 'not a spec'" in bad.stderr


def test_warm_beside_a_running_server_shares_its_cache(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance()
    result = warm(appliance, "--crate", "featly")
    assert result.returncode == 0, result.stderr
    assert appliance.get("/api/v1/crates/featly/0.1.0/download")[0] == 200
    assert upstream.download_count("featly", "0.1.0") == 1  # served from what warm cached
