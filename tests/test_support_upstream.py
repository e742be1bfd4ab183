"""The test fixtures themselves: crate archives, the fake crates.io and the cargo driver.

The cargo tests talk straight to `FakeUpstream` (no GhostCrate), so a failure here is a
fixture bug, not a proxy bug.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest

from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import (
    CORPUS_APP_DEPS,
    CRATES_IO_SOURCE,
    CrateSpec,
    Dep,
    Registry,
    build_crate,
    corpus,
    corpus_registry,
    dumps_line,
    index_line,
    index_path,
    make_workspace,
    parse_app_output,
    sha256_hex,
    split_features,
)
from tests.support.upstream import FakeUpstream

# --- crates.py --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("z", "1/z"),
        ("ab", "2/ab"),
        ("abc", "3/a/abc"),
        ("MixedCase", "mi/xe/mixedcase"),
        ("dash-name", "da/sh/dash-name"),
        ("under_score", "un/de/under_score"),
    ],
)
def test_index_path(name: str, path: str) -> None:
    assert index_path(name) == path


RICH = CrateSpec(
    "Rich-Crate",
    "1.2.3",
    deps=(
        Dep("alias", "0.1", package="real_dep", default_features=False, features=("x",)),
        Dep("opt", "1", optional=True),
        Dep("unixy", "0.2", target="cfg(unix)"),
        Dep("helper", "0.1", kind="build"),
        Dep("tester", "0.3", kind="dev"),
    ),
    features={"default": ["std"], "std": [], "o": ["dep:opt"], "w": ["opt?/w"], "all": ["o"]},
    links="rich",
    rust_version="1.70",
    extra_bytes=1000,
)


def test_build_crate_is_deterministic_and_well_formed() -> None:
    data = build_crate(RICH)
    assert data == build_crate(RICH)
    assert data[:2] == b"\x1f\x8b"
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert names == [
            "Rich-Crate-1.2.3/Cargo.toml",
            "Rich-Crate-1.2.3/build.rs",
            "Rich-Crate-1.2.3/data.bin",
            "Rich-Crate-1.2.3/src/lib.rs",
        ]
        assert all(m.mtime == 0 and m.mode == 0o644 and m.uid == m.gid == 0 for m in members)
        manifest_file = tar.extractfile("Rich-Crate-1.2.3/Cargo.toml")
        data_file = tar.extractfile("Rich-Crate-1.2.3/data.bin")
        assert manifest_file is not None
        assert data_file is not None
        manifest = tomllib.loads(manifest_file.read().decode())
        assert len(data_file.read()) == 1000
    package = manifest["package"]
    assert (package["name"], package["version"], package["edition"]) == (
        "Rich-Crate",
        "1.2.3",
        "2021",
    )
    assert (package["links"], package["rust-version"], package["build"]) == (
        "rich",
        "1.70",
        "build.rs",
    )
    assert manifest["lib"] == {"path": "src/lib.rs"}
    assert manifest["dependencies"]["alias"] == {
        "version": "0.1",
        "package": "real_dep",
        "default-features": False,
        "features": ["x"],
    }
    assert manifest["dependencies"]["opt"] == {"version": "1", "optional": True}
    assert manifest["target"]["cfg(unix)"]["dependencies"] == {"unixy": {"version": "0.2"}}
    assert manifest["build-dependencies"] == {"helper": {"version": "0.1"}}
    assert manifest["dev-dependencies"] == {"tester": {"version": "0.3"}}
    assert manifest["features"]["w"] == ["opt?/w"]


def test_index_line_matches_crates_io() -> None:
    line = index_line(RICH, "ab" * 32)
    assert list(line) == [
        "name",
        "vers",
        "deps",
        "cksum",
        "features",
        "features2",
        "yanked",
        "links",
        "rust_version",
        "v",
    ]
    assert line["features"] == {"default": ["std"], "std": []}
    assert line["features2"] == {"all": ["o"], "o": ["dep:opt"], "w": ["opt?/w"]}
    assert line["v"] == 2
    deps = line["deps"]
    assert isinstance(deps, list)
    assert [d["name"] for d in deps] == ["alias", "helper", "opt", "tester", "unixy"]
    assert deps[0] == {
        "name": "alias",
        "req": "^0.1",
        "features": ["x"],
        "optional": False,
        "default_features": False,
        "target": None,
        "kind": "normal",
        "package": "real_dep",
    }
    assert all("package" not in d for d in deps[1:])
    assert deps[4]["target"] == "cfg(unix)"
    assert [d["kind"] for d in deps] == ["normal", "build", "normal", "dev", "normal"]
    plain = index_line(CrateSpec("p", "0.1.0", features={"a": []}), "00" * 32)
    assert list(plain) == ["name", "vers", "deps", "cksum", "features", "yanked"]
    assert " " not in dumps_line(line)


def test_split_features_moves_dependents_of_new_syntax() -> None:
    plain, extended = split_features({"a": ["b"], "b": ["c"], "c": ["dep:x"], "d": []})
    assert plain == {"d": []}
    assert extended == {"a": ["b"], "b": ["c"], "c": ["dep:x"]}


def test_corpus_covers_the_test_world() -> None:
    specs = corpus()
    names = {s.name for s in specs}
    assert len(names) >= 14
    assert {"z", "ab", "abc", "MixedCase", "dash-name", "under_score", "bigdata"} <= names
    multi = [s for s in specs if s.name == "multi"]
    assert len(multi) >= 3
    assert multi[-1].yanked
    assert not any(s.yanked for s in multi[:-1])
    registry = corpus_registry()
    assert all(c.cksum == sha256_hex(c.data) for c in registry)
    big = registry.crate("bigdata", "0.1.0")
    assert big is not None
    assert len(big.data) > 3_000_000
    featly = registry.crate("featly", "0.1.0")
    assert featly is not None
    assert featly.index_line()["v"] == 2
    renamer = registry.crate("renamer", "0.1.0")
    assert renamer is not None
    assert renamer.index_line()["deps"] == [
        {
            "name": "short",
            "req": "^0.2",
            "features": [],
            "optional": False,
            "default_features": True,
            "target": None,
            "kind": "normal",
            "package": "under_score",
        }
    ]


def test_registry_index_files_and_yanks() -> None:
    registry = corpus_registry()
    other = corpus_registry()
    index = registry.index_file("MULTI")
    assert index is not None
    assert index.endswith(b"\n")
    lines = [json.loads(x) for x in index.decode().splitlines()]
    assert [(x["vers"], x["yanked"]) for x in lines] == [
        ("1.0.0", False),
        ("1.1.0", False),
        ("1.2.0", True),
    ]
    mixed = registry.index_file("mixedcase")
    assert mixed is not None
    assert json.loads(mixed)["name"] == "MixedCase"
    assert registry.index_file("nope") is None
    before = registry.crate("multi", "1.1.0")
    assert before is not None
    data = before.data
    registry.yank("multi", "1.1.0")
    assert registry.index_file("multi") != index
    assert before.data == data
    assert other.index_file("multi") == index  # registries do not share yank state
    newest = registry.newest("multi")
    assert newest is not None
    assert newest.version == "1.0.0"
    with pytest.raises(ValueError, match="already published"):
        registry.add(CrateSpec("multi", "1.0.0"))
    assert ("Multi", "1.0.0") in registry
    assert len(Registry([CrateSpec("q", "0.1.0")])) == 1


# --- upstream.py --------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(corpus_registry()) as up:
        yield up


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def test_config_json(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.get(upstream.url + "config.json") as response:
        assert response.status == 200
        assert await response.json() == {
            "dl": upstream.url + "crates",
            "api": upstream.url.rstrip("/"),
        }
    with FakeUpstream(dl_template="{url}files/{crate}/{crate}-{version}.crate") as other:
        async with session.get(other.url + "config.json") as response:
            config = await response.json()
    assert config["dl"] == other.url + "files/{crate}/{crate}-{version}.crate"


def test_serves_sync_clients(upstream: FakeUpstream) -> None:
    with urllib.request.urlopen(upstream.url + "1/z", timeout=5) as response:
        body = response.read()
    assert [json.loads(x)["vers"] for x in body.decode().splitlines()] == ["0.1.0", "0.1.1"]
    assert upstream.index_count("z") == 1


async def test_index_files_and_conditional_requests(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    url = upstream.url + "mi/xe/mixedcase"
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain"
        assert await response.read() == upstream.registry.index_file("MixedCase")
        etag = response.headers["ETag"]
        last_modified = response.headers["Last-Modified"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    async with session.get(url, headers={"If-None-Match": etag}) as response:
        assert response.status == 304
        assert response.headers["ETag"] == etag
    async with session.get(url, headers={"If-Modified-Since": last_modified}) as response:
        assert response.status == 304
    stale = {"If-None-Match": '"stale"', "If-Modified-Since": last_modified}
    async with session.get(url, headers=stale) as response:
        assert response.status == 200  # If-None-Match wins over If-Modified-Since
    earlier = email.utils.formatdate(time.time() - 3600, usegmt=True)
    async with session.get(url, headers={"If-Modified-Since": earlier}) as response:
        assert response.status == 200
    assert upstream.index_count("MixedCase") == 5
    assert upstream.count("/mi/xe/mixedcase", status=304) == 2


async def test_publish_and_yank_change_the_index(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    url = upstream.url + "1/z"
    async with session.get(url) as response:
        etag, last_modified = response.headers["ETag"], response.headers["Last-Modified"]
    upstream.publish(CrateSpec("z", "0.1.2"))
    async with session.get(url, headers={"If-None-Match": etag}) as response:
        assert response.status == 200
        versions = [json.loads(x)["vers"] for x in (await response.text()).splitlines()]
        assert versions == ["0.1.0", "0.1.1", "0.1.2"]
        assert response.headers["ETag"] != etag
        assert response.headers["Last-Modified"] != last_modified
        etag, last_modified = response.headers["ETag"], response.headers["Last-Modified"]
    upstream.yank("z", "0.1.2")
    async with session.get(url, headers={"If-Modified-Since": last_modified}) as response:
        assert response.status == 200
        assert json.loads((await response.text()).splitlines()[-1])["yanked"] is True
        assert response.headers["ETag"] != etag


@pytest.mark.parametrize("status", [404, 410, 451])
async def test_missing_crates(
    upstream: FakeUpstream, session: aiohttp.ClientSession, status: Literal[404, 410, 451]
) -> None:
    upstream.set_missing_status(status)
    async with session.get(upstream.url + "no/pe/nope") as response:
        assert response.status == status
    async with session.get(upstream.url + "Mi/xe/MixedCase") as response:
        assert response.status == 404  # cargo always asks for the lowercase path
    async with session.get(upstream.url + "crates/nope/1.0.0/download") as response:
        assert response.status == 404


async def test_downloads(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    crate = upstream.registry.crate("MixedCase", "1.0.0")
    assert crate is not None
    async with session.get(upstream.url + "crates/MixedCase/1.0.0/download") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/gzip"
        assert response.headers["Content-Length"] == str(len(crate.data))
        assert await response.read() == crate.data
    async with session.get(upstream.url + "crates/MixedCase/9.9.9/download") as response:
        assert response.status == 404
    assert upstream.download_count("mixedcase") == 2
    assert upstream.download_count("MixedCase", "1.0.0") == 1
    assert upstream.downloaded() == {("mixedcase", "1.0.0")}
    upstream.reset_counts()
    assert upstream.requests == []


async def test_download_template_markers(session: aiohttp.ClientSession) -> None:
    template = "dl/{lowerprefix}/{prefix}/{crate}/{crate}-{version}.crate?c={sha256-checksum}"
    with FakeUpstream(corpus_registry(), dl_template=template) as up:
        crate = up.registry.crate("MixedCase", "1.0.0")
        assert crate is not None
        good = f"dl/mi/xe/Mi/xe/MixedCase/MixedCase-1.0.0.crate?c={crate.cksum}"
        async with session.get(up.url + good) as response:
            assert response.status == 200
            assert await response.read() == crate.data
        bad = f"dl/mi/xe/mi/xe/MixedCase/MixedCase-1.0.0.crate?c={crate.cksum}"
        async with session.get(up.url + bad) as response:
            assert response.status == 404
        async with session.get(up.url + good.replace(crate.cksum, "0" * 64)) as response:
            assert response.status == 404
        async with session.get(up.url + "crates/MixedCase/1.0.0/download") as response:
            assert response.status == 404
        assert up.download_count("MixedCase", "1.0.0") == 3


async def test_fault_status(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.set_status(503, "index", crate="z")
    async with session.get(upstream.url + "1/z") as response:
        assert response.status == 503
        assert await response.read() == b"injected failure\n"
    async with session.get(upstream.url + "2/ab") as response:
        assert response.status == 200  # other crates unaffected
    async with session.get(upstream.url + "crates/z/0.1.1/download") as response:
        assert response.status == 200  # other scopes unaffected
    upstream.set_status(500, "config", times=1)
    async with session.get(upstream.url + "config.json") as response:
        assert response.status == 500
    async with session.get(upstream.url + "config.json") as response:
        assert response.status == 200  # `times` used up
    upstream.clear_faults()
    async with session.get(upstream.url + "1/z") as response:
        assert response.status == 200
    assert [r.fault for r in upstream.requests].count("status") == 2


async def test_fault_latency(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.set_latency(0.5, "download", crate="z")
    started = time.monotonic()
    async with session.get(upstream.url + "crates/z/0.1.1/download") as response:
        assert response.status == 200
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    async with session.get(upstream.url + "crates/ab/0.1.0/download") as response:
        assert response.status == 200
    assert time.monotonic() - started < 0.3


async def test_fault_drop(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.set_drop("index")
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        async with session.get(upstream.url + "1/z") as response:
            await response.read()
    assert upstream.count("/1/z", status=0) >= 1
    async with session.get(upstream.url + "config.json") as response:
        assert response.status == 200


async def _stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], sink: bytearray
) -> None:
    """GET `url`, keeping the headers and every body chunk that arrives."""
    async with session.get(url) as response:
        headers.update(response.headers)
        async for chunk in response.content.iter_any():
            sink += chunk


async def test_fault_truncate(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.set_truncate("download", crate="bigdata")
    crate = upstream.registry.crate("bigdata", "0.1.0")
    assert crate is not None
    received = bytearray()
    headers: dict[str, str] = {}
    with pytest.raises(aiohttp.ClientPayloadError):
        await _stream(session, upstream.url + "crates/bigdata/0.1.0/download", headers, received)
    assert headers["Content-Length"] == str(len(crate.data))
    assert 0 < len(received) < len(crate.data)
    assert crate.data.startswith(bytes(received))


async def test_fault_corrupt(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.set_corrupt("download")
    crate = upstream.registry.crate("z", "0.1.1")
    assert crate is not None
    async with session.get(upstream.url + "crates/z/0.1.1/download") as response:
        assert response.status == 200
        body = await response.read()
    assert len(body) == len(crate.data)
    assert hashlib.sha256(body).hexdigest() != crate.cksum
    async with session.get(upstream.url + "1/z") as response:
        assert await response.read() == upstream.registry.index_file("z")


async def test_stop_is_quick_and_restart_keeps_the_port(session: aiohttp.ClientSession) -> None:
    up = FakeUpstream(corpus_registry()).start()
    port = up.port
    up.set_latency(30, "index")
    pending = asyncio.ensure_future(session.get(up.url + "1/z"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    up.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientError):
        await pending
    up.start()
    try:
        assert up.port == port
        up.clear_faults()
        async with session.get(up.url + "1/z") as response:
            assert response.status == 200
    finally:
        up.stop()
    with FakeUpstream(corpus_registry(), port=port) as again:
        assert again.url == f"http://127.0.0.1:{port}/"


# --- cargo against the fake upstream ----------------------------------------


@pytest.mark.e2e
def test_cargo_builds_the_corpus(upstream: FakeUpstream, tmp_path: Path) -> None:
    env = CargoEnv(tmp_path / "env")
    env.configure_replacement(upstream.url)
    ws = make_workspace(tmp_path / "ws", CORPUS_APP_DEPS)
    env.run(["generate-lockfile"], ws)
    locked = {(p.name, p.version): p for p in read_lockfile(ws) if p.source is not None}
    registry = upstream.registry
    for (name, version), package in locked.items():
        crate = registry.crate(name, version)
        assert crate is not None
        assert package.checksum == crate.cksum
        assert package.source == CRATES_IO_SOURCE
    names = {name for name, _ in locked}
    assert ("multi", "1.1.0") in locked
    assert ("multi", "1.2.0") not in locked  # yanked
    assert {"winonly", "bigdata", "MixedCase", "z", "ab", "abc", "optdep"} <= names
    assert not {"lazy", "devonly"} & names  # optional dep not enabled; dev-dep of a dependency

    env.run(["build"], ws)
    downloaded = upstream.downloaded()
    assert downloaded == {(n.lower(), v) for n, v in locked if n != "winonly"}
    assert all(upstream.download_count(n, v) == 1 for n, v in downloaded)
    assert upstream.download_count("winonly") == 0  # cfg(windows)
    assert len(env.cached_crates()) == len(downloaded)

    run = subprocess.run([env.binary("app")], capture_output=True, text=True, check=True)
    out = parse_app_output(run.stdout)
    assert out["multi"][0] == "multi@1.1.0"
    assert out["ds"][0] == "dash-name@0.3.0"
    assert out["renamer"][1] == ["under_score@0.2.0"]
    assert out["featly"][1] == ["optdep@0.1.0", "multi@1.1.0"]
    assert out["featly"][2] == ["default", "extra", "fancy", "std"]
    assert out["platform"][1] == ["unixonly@0.1.0"]
    assert out["MixedCase"][1] == ["z@0.1.1"]


@pytest.mark.e2e
@pytest.mark.parametrize("validator", ["etag", "last_modified"])
def test_cargo_revalidates_index_files(tmp_path: Path, validator: str) -> None:
    etag = validator == "etag"
    with FakeUpstream(corpus_registry(), etag=etag, last_modified=not etag) as up:
        env = CargoEnv(tmp_path / "env")
        env.configure_replacement(up.url)
        ws = make_workspace(tmp_path / "ws", {"abc": "0.2", "z": "0.1"})
        env.run(["generate-lockfile"], ws)
        assert up.index_count("z", status=200) == 1
        up.reset_counts()
        up.publish(CrateSpec("z", "0.1.2"))
        (ws / "Cargo.lock").unlink()
        env.run(["generate-lockfile"], ws)
        header = "If-None-Match" if validator == "etag" else "If-Modified-Since"
        index_requests = [r for r in up.requests if r.kind == "index"]
        assert index_requests
        assert all(header in r.headers for r in index_requests)
        assert up.index_count("abc", status=304) == 1
        assert up.index_count("ab", status=304) == 1
        assert up.index_count("z", status=200) == 1
        assert ("z", "0.1.2") in {(p.name, p.version) for p in read_lockfile(ws)}


@pytest.mark.e2e
def test_cargo_follows_a_dl_template(tmp_path: Path) -> None:
    template = "{url}f/{lowerprefix}/{prefix}/{crate}/{crate}-{version}.crate?s={sha256-checksum}"
    with FakeUpstream(corpus_registry(), dl_template=template) as up:
        env = CargoEnv(tmp_path / "env")
        env.configure_replacement(up.url)
        ws = make_workspace(tmp_path / "ws", {"MixedCase": "1", "abc": "0.2"})
        env.run(["fetch"], ws)
        assert up.downloaded() == {
            ("mixedcase", "1.0.0"),
            ("z", "0.1.1"),
            ("abc", "0.2.0"),
            ("ab", "0.1.0"),
        }
        assert up.count("/f/mi/xe/Mi/xe/MixedCase/MixedCase-1.0.0.crate", prefix=True) == 1


@pytest.mark.e2e
def test_cargo_rejects_faults(upstream: FakeUpstream, tmp_path: Path) -> None:
    env = CargoEnv(tmp_path / "env")
    env.configure_replacement(upstream.url)
    ws = make_workspace(tmp_path / "ws", {"z": "0.1"})
    upstream.set_corrupt("download", crate="z")
    result = env.run(["fetch"], ws, check=False)
    assert result.returncode != 0
    assert "failed to verify the checksum of `z v0.1.1" in result.stderr
    upstream.clear_faults()
    upstream.set_status(503, "index", crate="z")
    env.clear_registry_cache()
    result = env.run(["update"], ws, check=False)
    assert "got 503" in result.stderr
    with pytest.raises(AssertionError, match="got 503"):
        env.run(["update"], ws)
