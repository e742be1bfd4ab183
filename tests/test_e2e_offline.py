"""Offline mode with the real cargo: only what is cached is offered, the upstream is never asked."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import make_workspace
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]


def test_offline_cargo_resolves_only_to_cached_versions(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    online = start_appliance()
    pinned = make_workspace(tmp_path / "pinned", {"multi": "=1.0.0", "abc": "0.2"})
    cargo = CargoEnv(tmp_path / "cargo-online")
    cargo.configure_replacement(online.index_url)
    cargo.run(["fetch"], pinned)
    online.stop()

    offline = Appliance(tmp_path / "offline", upstream.url, offline=True)
    shutil.copytree(online.data_dir, offline.data_dir)  # the cache, carried over
    offline.start()
    upstream.reset_counts()
    try:
        fresh = make_workspace(tmp_path / "fresh", {"multi": "1", "abc": "0.2"})
        cargo = CargoEnv(tmp_path / "cargo-offline")
        cargo.configure_replacement(offline.index_url)
        cargo.run(["generate-lockfile"], fresh)
        locked = {p.name: p.version for p in read_lockfile(fresh) if p.source}
        assert locked["multi"] == "1.0.0"  # 1.1.0 is newer but not cached
        cargo.run(["build"], fresh)

        wants_uncached = make_workspace(tmp_path / "uncached", {"featly": "0.1"})
        failed = cargo.run(["generate-lockfile"], wants_uncached, check=False)
        assert failed.returncode != 0
        assert "featly" in failed.stderr
        assert upstream.requests == []  # offline: never contacted, though it is up
    finally:
        offline.stop()
