"""Private crates are data, not cache: no publish leaves half of itself, even under kill -9.

A publish either lands whole (its index entry and its `.crate`, also in the bucket
with `[s3]`) or leaves no trace; the mirror's eviction, `gc` and `verify` never
touch private crates; a second node on the same bucket serves them.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, build_crate, index_path, make_workspace, sha256_hex
from tests.support.private import (
    add_user,
    configure_registry,
    create_token,
    errors,
    publish,
    write_package,
)
from tests.support.publish import metadata_bytes, publish_body
from tests.support.s3 import MotoServer, S3FaultProxy, s3_values
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]

#: How many times the kill test kills the server during a publish.
KILLS = 30
#: Size of the incompressible file in each crate the kill test publishes (a wide window).
KILL_CRATE_BYTES = 4 << 20
#: Logged by start-up when it removes `.crate` files left without a version.
ORPHANS_REMOVED = "removed private crate files without a version"


def private_files(appliance: Appliance) -> dict[str, Path]:
    """The files below `data_dir/private/crates`, by name (a checksum and `.crate`)."""
    root = appliance.data_dir / "private" / "crates"
    return {path.name: path for path in root.rglob("*") if path.is_file()}


def index_entries(appliance: Appliance, name: str) -> dict[str, str]:
    """version -> cksum of the private crate's index file (empty if it has none)."""
    status, body = appliance.get(f"/index/{index_path(name)}")
    if status == 404:
        return {}
    assert status == 200, body
    entries = [json.loads(line) for line in body.splitlines() if line.strip()]
    return {entry["vers"]: entry["cksum"] for entry in entries}


def assert_consistent(appliance: Appliance, name: str, *, download: bool = False) -> dict[str, str]:
    """Every index entry has its file (and downloads whole); every file has its entry."""
    entries = index_entries(appliance, name)
    files = private_files(appliance)
    assert set(files) == {f"{cksum}.crate" for cksum in entries.values()}
    for version, cksum in entries.items():
        assert sha256_hex(files[f"{cksum}.crate"].read_bytes()) == cksum, version
        if download:
            status, body = appliance.get(f"/api/v1/crates/{name}/{version}/download")
            assert (status, sha256_hex(body)) == (200, cksum), version
    return entries


def assert_database_intact(appliance: Appliance) -> None:
    path = appliance.data_dir / "private" / "registry.db"
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []


def admin_token(appliance: Appliance, user: str = "alice") -> str:
    add_user(appliance, user, admin=True)
    return create_token(appliance, user)


def publish_request(appliance: Appliance, token: str, body: bytes) -> tuple[int, bytes]:
    """PUT a publish body as cargo does; (0, b"") when the server goes away meanwhile."""
    connection = http.client.HTTPConnection("127.0.0.1", appliance.port, timeout=30)
    try:
        connection.request(
            "PUT",
            "/api/v1/crates/new",
            body,
            {"Authorization": token, "Content-Type": "application/octet-stream"},
        )
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def publish_into(
    answers: list[tuple[int, bytes]], appliance: Appliance, token: str, body: bytes
) -> None:
    answers.append(publish_request(appliance, token, body))


def crate_of(name: str, version: str, extra_bytes: int = 0) -> tuple[bytes, str]:
    """The publish body of a test crate and the sha256 of its `.crate`."""
    spec = CrateSpec(name, version, extra_bytes=extra_bytes)
    crate = build_crate(spec)
    return publish_body(metadata_bytes(spec), crate), sha256_hex(crate)


# --- 1. kill -9 during publishes ------------------------------------------------


@pytest.mark.timeout(300)  # 30 restarts: about 40 s on a quiet machine, twice that under load
def test_kill_9_at_any_point_of_a_publish_leaves_it_whole_or_gone(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    token = admin_token(appliance)
    name = "acme-durable"
    bodies = [crate_of(name, f"0.1.{i}", KILL_CRATE_BYTES) for i in range(KILLS + 1)]

    # One publish without a kill: how long one takes is the range the kills spread over.
    started = time.monotonic()
    assert publish_request(appliance, token, bodies[0][0])[0] == 200
    span = time.monotonic() - started
    rng = random.Random(20240611)
    phases: Counter[str] = Counter()
    for i in range(1, KILLS + 1):
        body, cksum = bodies[i]
        answer: list[tuple[int, bytes]] = []
        sender = threading.Thread(target=publish_into, args=(answer, appliance, token, body))
        delay = span * 1.4 * (i - 1) / KILLS + rng.uniform(0, span / KILLS)
        sender.start()
        time.sleep(delay)
        appliance.stop(signal.SIGKILL)
        sender.join(30)
        offset = appliance.log.stat().st_size
        appliance.start()

        answered = answer[0][0] if answer else 0
        recorded = f"0.1.{i}" in assert_consistent(appliance, name)
        orphans = [e for e in appliance.events(offset) if e.get("msg") == ORPHANS_REMOVED]
        if answered == 200:
            assert recorded, f"publish {i} was answered but is gone after kill -9"
            phases["answered"] += 1
        elif recorded:
            phases["recorded, killed before the answer"] += 1
        elif orphans:
            phases["file written, killed before the commit (orphan removed)"] += 1
        else:
            assert answered == 0, answer
            phases["killed before the file was stored"] += 1
        assert (f"{cksum}.crate" in private_files(appliance)) == recorded
        assert_database_intact(appliance)

    entries = assert_consistent(appliance, name, download=True)
    assert "0.1.0" in entries
    assert list((appliance.data_dir / "private").rglob("*.partial")) == []
    print(f"\n{KILLS} kills over {span * 1.4:.3f} s of a {span:.3f} s publish: {dict(phases)}")
    assert sum(phases.values()) == KILLS
    assert len(phases) >= 2, phases  # the kills did land in different phases


# --- 2. data, not cache ---------------------------------------------------------


def test_gc_verify_and_eviction_never_touch_private_crates(
    start_appliance: StartAppliance, upstream: FakeUpstream
) -> None:
    appliance = start_appliance(tables={"cache": {"disk_max_bytes": 2000}})
    token = admin_token(appliance)
    published: dict[str, str] = {}
    for version in ("1.0.0", "1.1.0"):
        body, cksum = crate_of("acme-data", version, 3000)
        assert publish_request(appliance, token, body)[0] == 200
        published[version] = cksum
    # Mirrored crates past the disk tier's limit: eviction runs while serving.
    for name, version in [("z", "0.1.1"), ("abc", "0.2.0"), ("multi", "1.1.0")]:
        assert appliance.get(f"/api/v1/crates/{name}/{version}/download")[0] == 200
    for command in ("gc", "verify"):
        result = appliance.run(command)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "private" not in result.stdout + result.stderr
    gc = appliance.run("gc")
    assert "limit 2000" in gc.stdout
    usage = int(gc.stdout.split("the disk tier holds ")[1].split()[0])
    assert usage <= 2000, gc.stdout  # the mirror's cache was evicted down to its limit

    assert assert_consistent(appliance, "acme-data", download=True) == published
    appliance.stop()
    appliance.start()  # from disk again, nothing kept in memory
    assert assert_consistent(appliance, "acme-data", download=True) == published


# --- 3. with a bucket -----------------------------------------------------------


def bucket_objects(moto: MotoServer, bucket: str) -> dict[str, bytes]:
    with moto.client() as client:
        listing = client.list_objects_v2(Bucket=bucket)
        return {
            item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listing.get("Contents", [])
        }


@pytest.fixture
def second_node(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Appliance]]:
    """An appliance set up, but not started, so that its data dir can be seeded first."""
    made: list[Appliance] = []

    def make(**settings: Any) -> Appliance:
        made.append(Appliance(tmp_path / "second-node", upstream.url, **settings))
        return made[-1]

    yield make
    for appliance in made:
        if appliance.process is not None and appliance.process.poll() is None:
            appliance.stop()


def test_a_published_crate_is_in_the_bucket_before_the_answer_and_a_second_node_serves_it(
    start_appliance: StartAppliance,
    second_node: Callable[..., Appliance],
    moto: MotoServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3 = s3_values(bucket, moto.endpoint_url, prefix="node")
    first = start_appliance(tables={"s3": s3})
    cargo = CargoEnv(tmp_path / "cargo-publisher")
    configure_registry(cargo, first, admin_token(first))
    publish(cargo, write_package(tmp_path / "pkg", CrateSpec("acme-shared", "1.0.0")))
    cksum = index_entries(first, "acme-shared")["1.0.0"]
    key = f"node/private/crates/{cksum}.crate"
    stored = bucket_objects(moto, bucket)  # right after cargo publish returned
    assert sha256_hex(stored[key]) == cksum
    body, tampered = crate_of("acme-tampered", "1.0.0")
    assert publish_request(first, admin_token(first, "bob"), body)[0] == 200
    with moto.client() as client:
        client.put_object(Bucket=bucket, Key=f"node/private/crates/{tampered}.crate", Body=b"bad")

    # verify lists the bucket: the mirror's keys only, never the private crates.
    assert first.get("/api/v1/crates/abc/0.2.0/download")[0] == 200
    result = first.run("verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert key in bucket_objects(moto, bucket)

    # A second node: its own, empty data dir; the same bucket; and the same registry
    # database, copied, since the database is per node until it moves to PostgreSQL.
    second = second_node(tables={"s3": s3})
    copy = second.data_dir / "private" / "registry.db"
    copy.parent.mkdir(parents=True)
    with (
        closing(sqlite3.connect(first.data_dir / "private" / "registry.db")) as source,
        closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    second.start()
    status, body = second.get("/api/v1/crates/acme-shared/1.0.0/download")
    assert (status, sha256_hex(body)) == (200, cksum)
    assert f"{cksum}.crate" in private_files(second)  # fetched from the bucket, kept
    # What the bucket holds is checked against the database's checksum before it is served.
    assert second.get("/api/v1/crates/acme-tampered/1.0.0/download")[0] == 404
    assert f"{tampered}.crate" not in private_files(second)
    consumer = CargoEnv(tmp_path / "cargo-consumer")
    configure_registry(consumer, second)
    app = make_workspace(tmp_path / "app", {"acme-shared": "1"})
    consumer.run(["fetch"], app)


def test_a_publish_the_bucket_refuses_is_a_503_that_leaves_nothing(
    start_appliance: StartAppliance, moto: MotoServer, proxy: S3FaultProxy, bucket: str
) -> None:
    appliance = start_appliance(tables={"s3": s3_values(bucket, proxy.endpoint_url)})
    token = admin_token(appliance)
    body, cksum = crate_of("acme-refused", "1.0.0")
    proxy.set_status(500)
    status, answer = publish_request(appliance, token, body)
    assert status == 503, answer
    assert "could not be stored in the S3 bucket, so it was not published" in errors(answer)
    assert index_entries(appliance, "acme-refused") == {}
    assert private_files(appliance) == {}
    assert bucket_objects(moto, bucket) == {}
    path = appliance.data_dir / "private" / "registry.db"
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT count(*) FROM versions").fetchone() == (0,)

    proxy.clear_faults()
    time.sleep(0.6)  # the tier's retry_after
    assert publish_request(appliance, token, body)[0] == 200
    assert assert_consistent(appliance, "acme-refused", download=True) == {"1.0.0": cksum}
    assert list(bucket_objects(moto, bucket)) == [f"private/crates/{cksum}.crate"]
