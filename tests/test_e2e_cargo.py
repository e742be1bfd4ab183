"""The real cargo, through a running `ghostcrate serve`, in front of the fake upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import (
    CORPUS_APP_DEPS,
    CRATES_IO_SOURCE,
    CrateSpec,
    make_workspace,
    parse_app_output,
)
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def fresh_cargo(root: Path, appliance: Appliance) -> CargoEnv:
    env = CargoEnv(root)
    env.configure_replacement(appliance.index_url)
    return env


def test_cargo_generate_lockfile_fetch_and_build_through_the_mirror(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo = fresh_cargo(tmp_path / "cargo", appliance)

    cargo.run(["generate-lockfile"], app)
    locked = {p.name: p for p in read_lockfile(app) if p.source is not None}
    for package in locked.values():
        assert package.source == CRATES_IO_SOURCE
        crate = upstream.registry.crate(package.name, package.version)
        assert crate is not None
        assert package.checksum == crate.cksum, package.name
    assert locked["multi"].version == "1.1.0"  # 1.2.0 is yanked

    cargo.run(["fetch"], app)
    cargo.run(["build"], app)
    output = parse_app_output(cargo.run(["run", "-q"], app).stdout)
    assert output["MixedCase"][0] == "MixedCase@1.0.0"
    assert output["ds"][0] == "dash-name@0.3.0"

    downloaded = upstream.downloaded()
    assert {(p.name.lower(), p.version) for p in locked.values()} >= downloaded
    for name, version in downloaded:
        assert upstream.download_count(name, version) == 1, name
    # cargo took the h2c upgrade, so its crates came in HTTP/2 DATA frames (read in
    # chunks: no sendfile in HTTP/2), not through aiohttp.
    assert appliance.metric("ghostcrate_file_bytes_sent_total", method="copy") > 3_000_000
    assert appliance.metric("ghostcrate_file_bytes_sent_total", method="sendfile") == 0


def test_a_second_run_succeeds_from_the_cache_with_the_upstream_stopped(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance(index_ttl=0)
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    first = fresh_cargo(tmp_path / "first", appliance)
    first.run(["fetch"], app)
    lockfile = (app / "Cargo.lock").read_text()

    upstream.stop()
    (app / "Cargo.lock").unlink()
    second = fresh_cargo(tmp_path / "second", appliance)  # empty CARGO_HOME: all from the mirror
    second.run(["generate-lockfile"], app)
    assert (app / "Cargo.lock").read_text() == lockfile
    second.run(["build"], app)
    assert appliance.metric("ghostcrate_stale_index_served_total") > 0


def test_cargo_update_sees_a_new_upstream_version_after_the_ttl(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance(index_ttl=1)
    app = make_workspace(tmp_path / "app", {"multi": "1"})
    cargo = fresh_cargo(tmp_path / "cargo", appliance)
    cargo.run(["generate-lockfile"], app)

    def locked_multi() -> str:
        return next(p.version for p in read_lockfile(app) if p.name == "multi")

    assert locked_multi() == "1.1.0"
    upstream.publish(CrateSpec("multi", "1.5.0"))
    time.sleep(1.2)
    cargo.run(["update"], app)
    assert locked_multi() == "1.5.0"
    cargo.run(["build"], app)
    revalidations = [
        r for r in upstream.requests if r.kind == "index" and "If-None-Match" in r.headers
    ]
    assert revalidations, "the mirror revalidated without a conditional request"


def test_a_hung_upstream_never_makes_cargo_wait_for_what_is_cached(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    stale_after = 2.0
    appliance = start_appliance(index_ttl=1, stale_after=stale_after, read_timeout=30)
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    fresh_cargo(tmp_path / "warm", appliance).run(["fetch"], app)  # the mirror has it all

    def timed_fetch(name: str) -> float:
        """A fetch with an empty CARGO_HOME once every cached index file has expired."""
        cargo = fresh_cargo(tmp_path / name, appliance)
        time.sleep(1.1)
        started = time.monotonic()
        cargo.run(["fetch"], app)
        return time.monotonic() - started

    healthy = timed_fetch("healthy")
    upstream.set_latency(40)  # cargo gives up after 30 s without a byte
    hung = timed_fetch("hung")
    print(f"cargo fetch: {healthy:.2f} s, healthy upstream; {hung:.2f} s, hung upstream")
    assert hung <= healthy + stale_after + 1
    assert appliance.metric("ghostcrate_stale_index_served_total") > 0
    assert appliance.metric("ghostcrate_upstream_breaker_open") == 1

    started = time.monotonic()
    assert appliance.stop() == 0  # revalidations still wait for the upstream: not for them
    assert time.monotonic() - started < 3


def test_cargo_reports_a_corrupt_upstream_crate_and_nothing_is_cached(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    app = make_workspace(tmp_path / "app", {"z": "0.1"})
    cargo = fresh_cargo(tmp_path / "cargo", appliance)
    upstream.set_corrupt(scope="download", crate="z")
    failed = cargo.run(["fetch"], app, check=False)
    assert failed.returncode != 0
    assert "502" in failed.stderr
    assert "checksum differs from its index entry" in failed.stderr
    assert not list((appliance.data_dir / "cache").rglob("*.crate"))

    upstream.clear_faults()
    cargo.run(["fetch"], app)
    assert len(list((appliance.data_dir / "cache").rglob("*.crate"))) == 1
