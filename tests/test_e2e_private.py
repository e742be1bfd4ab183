"""The private registry with the real cargo: publish, consume beside mirrored crates, yank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import CRATES_IO_SOURCE, CrateSpec, Dep, make_workspace, parse_app_output
from tests.support.private import (
    add_user,
    configure_registry,
    create_token,
    publish,
    write_package,
)
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]

CORE = CrateSpec("acme-core", "1.0.0")
UTILS = CrateSpec("acme-utils", "1.0.0", deps=(Dep("acme-core", "1"), Dep("z", "0.1")))


def publisher(tmp_path: Path, appliance: Appliance, user: str = "alice") -> CargoEnv:
    add_user(appliance, user, admin=True)
    cargo = CargoEnv(tmp_path / f"cargo-{user}")
    configure_registry(cargo, appliance, create_token(appliance, user))
    return cargo


def test_published_crates_resolve_and_build_beside_mirrored_ones(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "core", CORE))
    publish(cargo, write_package(tmp_path / "utils", UTILS))
    # Each name was asked of the upstream once, to refuse shadowing a public crate.
    assert upstream.index_count("acme-core") == upstream.index_count("acme-utils") == 1
    upstream.reset_counts()

    app = make_workspace(tmp_path / "app", {"acme-utils": "1", "acme-core": "1", "multi": "1"})
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)
    output = parse_app_output(consumer.run(["run", "-q"], app).stdout)
    assert output["acme-utils"][0] == "acme-utils@1.0.0"
    assert output["acme-utils"][1] == ["acme-core@1.0.0", "z@0.1.1"]
    assert output["multi"][0] == "multi@1.1.0"
    locked = {p.name: p for p in read_lockfile(app) if p.source is not None}
    assert locked["acme-core"].source == CRATES_IO_SOURCE  # through the replaced crates-io
    # Once private, a name is never asked of the upstream again.
    assert upstream.index_count("acme-utils") == upstream.index_count("acme-core") == 0
    assert upstream.download_count("acme-core") == 0
