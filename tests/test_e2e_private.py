"""The private registry with the real cargo: publish, consume beside mirrored crates, yank."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ghostcrate.appliance.namespace import SEARCH_TIMEOUT
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
CRATES_IO_INDEX_URL = CRATES_IO_SOURCE.removeprefix("registry+")

CORE = CrateSpec("acme-core", "1.0.0")
UTILS = CrateSpec("acme-utils", "1.0.0", deps=(Dep("acme-core", "1"), Dep("z", "0.1")))


def searched(cargo: CargoEnv, cwd: Path, query: str) -> list[str]:
    """The names `cargo search` lists, in its order."""
    found = cargo.run(["search", "--registry", "ghostcrate", query], cwd).stdout
    return [line.split(" = ")[0] for line in found.splitlines() if " = " in line]


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


def test_yank_and_unyank_change_what_cargo_resolves(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    for version in ("1.0.0", "1.1.0"):
        publish(cargo, write_package(tmp_path / version, CrateSpec("acme-core", version)))
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)

    def resolved(name: str) -> str:
        app = make_workspace(tmp_path / name, {"acme-core": "1"})
        consumer.run(["generate-lockfile"], app)
        return {p.name: p.version for p in read_lockfile(app)}["acme-core"]

    assert resolved("before") == "1.1.0"
    cargo.run(["yank", "--registry", "ghostcrate", "--version", "1.1.0", "acme-core"], tmp_path)
    assert resolved("yanked") == "1.0.0"
    undo = ["yank", "--registry", "ghostcrate", "--version", "1.1.0", "--undo", "acme-core"]
    cargo.run(undo, tmp_path)
    assert resolved("unyanked") == "1.1.0"


def test_owners_are_listed_added_and_removed_with_cargo_owner(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    add_user(appliance, "bob")
    publish(cargo, write_package(tmp_path / "core", CORE))
    owner = ["owner", "--registry", "ghostcrate"]
    assert "alice" in cargo.run([*owner, "--list", "acme-core"], tmp_path).stdout
    added = cargo.run([*owner, "--add", "bob", "acme-core"], tmp_path)
    assert "bob" in added.stderr
    assert cargo.run([*owner, "--list", "acme-core"], tmp_path).stdout.split() == [
        "alice",
        "(alice)",
        "bob",
        "(bob)",
    ]
    cargo.run([*owner, "--remove", "bob", "acme-core"], tmp_path)
    assert "bob" not in cargo.run([*owner, "--list", "acme-core"], tmp_path).stdout
    missing = cargo.run([*owner, "--add", "carol", "acme-core"], tmp_path, check=False)
    assert missing.returncode != 0
    assert "could not find user with login `carol`" in missing.stderr


def test_search_shows_private_crates_first_then_the_upstreams(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "core", CrateSpec("multitool", "0.3.0")))
    assert searched(cargo, tmp_path, "multi") == ["multitool", "multi"]
    assert upstream.count("/api/v1/crates", prefix=True) == 1

    upstream.set_latency(30, scope="search")
    started = time.monotonic()
    assert searched(cargo, tmp_path, "multi") == ["multitool"]
    assert time.monotonic() - started < SEARCH_TIMEOUT + 2


def test_cargo_info_and_the_crate_api_describe_a_private_crate(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "core", CORE))
    status, body = appliance.get("/api/v1/crates/acme-core")
    assert status == 200
    info = json.loads(body)
    assert info["crate"]["max_version"] == "1.0.0"
    assert info["versions"][0]["published_by"] == {"login": "alice"}
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)
    shown = consumer.run(["info", "--registry", "ghostcrate", "acme-core"], tmp_path)
    assert "acme-core" in shown.stdout
    assert "1.0.0" in shown.stdout


def test_a_name_the_upstream_has_is_refused_unless_shadowing_is_allowed(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    refused = publish(
        cargo, write_package(tmp_path / "multi", CrateSpec("multi", "9.0.0")), check=False
    )
    assert refused.returncode != 0
    assert "crate `multi` exists upstream" in refused.stderr
    assert upstream.index_count("multi") == 1  # the registry asked, and was told
    # Nor under another spelling that crates.io would treat as the same name.
    spelled = publish(
        cargo, write_package(tmp_path / "dash", CrateSpec("dash_name", "9.0.0")), check=False
    )
    assert "crate `dash-name` exists upstream" in spelled.stderr
    assert appliance.get("/index/mu/lt/multi")[1].count(b'"vers"') == 3  # the mirror's


def test_allow_shadowing_lets_a_private_crate_take_a_public_name_for_good(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance(tables={"private": {"allow_shadowing": ["multi"]}})
    cargo = publisher(tmp_path, appliance)
    assert appliance.get("/index/mu/lt/multi")[1].count(b'"vers"') == 3  # mirrored, now kept
    publish(cargo, write_package(tmp_path / "multi", CrateSpec("multi", "9.0.0")))
    upstream.reset_counts()
    status, body = appliance.get("/index/mu/lt/multi")
    assert status == 200
    assert [json.loads(line)["vers"] for line in body.splitlines()] == ["9.0.0"]
    assert appliance.get("/api/v1/crates/multi/1.0.0/download")[0] == 404
    assert upstream.index_count("multi") == upstream.download_count("multi") == 0


def test_reserved_names_are_never_fetched_from_the_upstream(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.publish(CrateSpec("acme-evil", "99.0.0"))  # the attacker's
    appliance = start_appliance(tables={"private": {"reserved": ["acme-*"]}})
    app = make_workspace(tmp_path / "app", {"acme-evil": "99"})
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)
    failed = consumer.run(["generate-lockfile"], app, check=False)
    assert failed.returncode != 0
    assert "acme-evil" in failed.stderr
    assert appliance.get("/api/v1/crates/acme-evil/99.0.0/download")[0] == 404
    assert upstream.index_count("acme-evil") == upstream.download_count("acme-evil") == 0
    # A reserved name is published without asking the upstream either.
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "evil", CrateSpec("acme-evil", "1.0.0")))
    assert upstream.index_count("acme-evil") == 0
    consumer.run(["generate-lockfile"], make_workspace(tmp_path / "ok", {"acme-evil": "1"}))


def test_a_publish_is_in_the_index_of_every_worker_before_it_is_answered(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(server={"workers": 2})
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "v1", CORE))
    # Every worker's hot set holds the index file (each request on a new connection).
    for _ in range(20):
        assert appliance.get("/index/ac/me/acme-core")[0] == 200
    publish(cargo, write_package(tmp_path / "v2", CrateSpec("acme-core", "1.1.0")))
    for _ in range(20):  # no wait: the answer to the publish came after every worker knew
        assert b'"1.1.0"' in appliance.get("/index/ac/me/acme-core")[1]
    cargo.run(["yank", "--registry", "ghostcrate", "--version", "1.1.0", "acme-core"], tmp_path)
    for _ in range(20):
        line = appliance.get("/index/ac/me/acme-core")[1].splitlines()[1]
        assert json.loads(line)["yanked"] is True


def test_both_ways_of_naming_a_private_dependency_give_one_crate(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "core", CORE))
    # acme-utils names acme-core as a ghostcrate dependency, z (mirrored) plainly.
    publish(cargo, write_package(tmp_path / "utils", UTILS, registry_deps=("acme-core",)))
    status, body = appliance.get("/index/ac/me/acme-utils")
    assert status == 200
    deps = {dep["name"]: dep for dep in json.loads(body)["deps"]}
    assert deps["acme-core"]["registry"] == deps["z"]["registry"] == CRATES_IO_INDEX_URL

    mixed = {"acme-core": "1", "acme-utils": '{ version = "1", registry = "ghostcrate" }'}
    app = make_workspace(tmp_path / "app", mixed)
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)
    output = parse_app_output(consumer.run(["run", "-q"], app).stdout)
    assert output["acme-utils"][1] == ["acme-core@1.0.0", "z@0.1.1"]
    locked = [p for p in read_lockfile(app) if p.source is not None]
    assert [p.source for p in locked if p.name == "acme-core"] == [CRATES_IO_SOURCE]
    assert [p.source for p in locked if p.name == "acme-utils"] == [f"sparse+{appliance.index_url}"]


def test_a_workspace_is_published_in_dependency_order(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    root = tmp_path / "workspace"
    members = {
        "acme-top": CrateSpec("acme-top", "0.1.0", deps=(Dep("acme-mid", "0.1"),)),
        "acme-mid": CrateSpec("acme-mid", "0.1.0", deps=(Dep("acme-base", "0.1"),)),
        "acme-base": CrateSpec("acme-base", "0.1.0", deps=(Dep("z", "0.1"),)),
    }
    for name, spec in members.items():
        write_package(root / name, spec)
        manifest = root / name / "Cargo.toml"
        text = manifest.read_text().replace("\n[workspace]\n", "\n")
        for dep in spec.deps:
            if dep.name.startswith("acme-"):  # a path dependency inside the workspace
                text = text.replace(
                    f'{dep.name} = {{ version = "{dep.req}"',
                    f'{dep.name} = {{ path = "../{dep.name}", version = "{dep.req}"',
                )
        manifest.write_text(text)
    (root / "Cargo.toml").write_text(
        '[workspace]\nresolver = "2"\nmembers = ["acme-top", "acme-mid", "acme-base"]\n'
    )
    done = cargo.run(
        ["publish", "--workspace", "--registry", "ghostcrate", "--allow-dirty", "--no-verify"],
        root,
    )
    order = [line.split()[1] for line in done.stderr.splitlines() if "Uploaded" in line]
    assert order == ["acme-base", "acme-mid", "acme-top"], done.stderr
    app = make_workspace(tmp_path / "app", {"acme-top": "0.1"})
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)
    output = parse_app_output(consumer.run(["run", "-q"], app).stdout)
    assert output["acme-top"][1] == ["acme-mid@0.1.0"]


def test_private_index_files_and_crates_are_hot_set_hits_in_the_lanes(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "core", CORE))
    for target in ("/index/ac/me/acme-core", "/api/v1/crates/acme-core/1.0.0/download"):
        assert appliance.get(target)[0] == 200  # kept now
    hits = appliance.metric("ghostcrate_fast_lane_requests_total", result="hit")
    for _ in range(10):
        for target in ("/index/ac/me/acme-core", "/api/v1/crates/acme-core/1.0.0/download"):
            assert appliance.get(target)[0] == 200
    assert appliance.metric("ghostcrate_fast_lane_requests_total", result="hit") >= hits + 20
    events = [e for e in appliance.events() if e.get("msg") == "published"]
    assert [(e["crate"], e["version"], e["user"]) for e in events] == [
        ("acme-core", "1.0.0", "alice")
    ]
    # Which credential was used is recorded (for the audit log): alice's first token.
    assert events[0]["credential"] == "token 1"


def test_warm_never_asks_the_upstream_about_private_names(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance()
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "core", CORE))
    app = make_workspace(tmp_path / "app", {"acme-core": "1", "z": "0.1"})
    consumer = CargoEnv(tmp_path / "consumer")
    configure_registry(consumer, appliance)
    consumer.run(["generate-lockfile"], app)
    upstream.publish(CrateSpec("acme-core", "1.0.0"))  # someone takes the name upstream
    upstream.reset_counts()
    warmed = appliance.run("warm", str(app / "Cargo.lock"), "--crate", "acme-core@1")
    assert warmed.returncode == 0, warmed.stderr
    assert "1 private left alone" in warmed.stdout
    assert upstream.index_count("acme-core") == upstream.download_count("acme-core") == 0
    assert upstream.download_count("z") == 1


def test_offline_search_shows_private_crates_only_and_asks_nobody(
    start_appliance: StartAppliance, upstream: FakeUpstream, tmp_path: Path
) -> None:
    appliance = start_appliance(offline=True)
    cargo = publisher(tmp_path, appliance)
    publish(cargo, write_package(tmp_path / "tool", CrateSpec("multitool", "0.3.0")))
    found = cargo.run(["search", "--registry", "ghostcrate", "multi"], tmp_path).stdout
    assert [line.split(" = ")[0] for line in found.splitlines() if " = " in line] == ["multitool"]
    assert upstream.requests == []
