"""Fixtures: the fake upstream, GhostCrate in-process and as a real process, cargo."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from ghostcrate.appliance.app import create_app
from ghostcrate.appliance.runner import FastLaneRunner
from ghostcrate.config import CacheSettings, ServerSettings, Settings, UpstreamSettings
from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import corpus_registry, index_path
from tests.support.leaks import LEAKS, report
from tests.support.s3 import MotoServer, S3FaultProxy
from tests.support.upstream import FakeUpstream

MirrorClient = TestClient[Any, Any]


class FastLaneTestServer(TestServer):
    """aiohttp's test server, running the app behind the fast lane as `serve` does."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return FastLaneRunner(self.app, **kwargs)


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="session", autouse=True)
def no_secret_leaks() -> Iterator[None]:
    """When this pytest process ends, no secret a test made may be in any log, CLI
    output or error answer it saw (`tests/support/leaks.py`); fails the run otherwise."""
    yield
    leaks = LEAKS.leaks()
    assert not leaks, report(leaks)


@pytest.fixture(autouse=True)
def no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests reach 127.0.0.1 directly unless a test sets a proxy itself."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(corpus_registry()) as fake:
        yield fake


def mirror_settings(
    data_dir: Path,
    upstream_url: str,
    server: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
    **upstream: Any,
) -> Settings:
    values: dict[str, Any] = {"connect_timeout": 2, "read_timeout": 2, **upstream}
    return Settings(
        data_dir=data_dir,
        server=ServerSettings(**(server or {})),
        upstream=UpstreamSettings(index=upstream_url, **values),
        cache=CacheSettings(**(cache or {})),
    )


async def stored_index_file(data_dir: Path, name: str) -> Path:
    """The disk tier's copy of `name`'s index file, once stored (the mirror answers first)."""
    stored = data_dir / "cache" / "index" / index_path(name)
    for _ in range(100):
        if stored.exists():
            # The store that renamed it into place holds the file in memory until it
            # returns (readers get that copy meanwhile): let it finish.
            await asyncio.sleep(0.05)
            return stored
        await asyncio.sleep(0.02)
    raise AssertionError(f"{stored} was never stored")


@pytest.fixture
def make_mirror(
    aiohttp_client: Callable[..., Any], tmp_path: Path, upstream: FakeUpstream
) -> Callable[..., Any]:
    """Start GhostCrate in-process in front of `upstream`; keyword arguments set [upstream]."""

    async def make(
        server: dict[str, Any] | None = None,
        cache: dict[str, Any] | None = None,
        **upstream_settings: Any,
    ) -> MirrorClient:
        """Behind the fast lane, as `ghostcrate serve` runs it; `index` defaults to `upstream`."""
        index = upstream_settings.pop("index", upstream.url)
        settings = mirror_settings(tmp_path / "data", index, server, cache, **upstream_settings)
        client: MirrorClient = await aiohttp_client(FastLaneTestServer(create_app(settings)))
        return client

    return make


@pytest.fixture
def start_appliance(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Appliance]]:
    """Start `ghostcrate serve` processes in front of `upstream`; all stopped at the end."""
    started: list[Appliance] = []

    def start(**settings: Any) -> Appliance:
        appliance = Appliance(tmp_path / f"appliance-{len(started)}", upstream.url, **settings)
        started.append(appliance)
        return appliance.start()

    yield start
    for appliance in started:
        if appliance.process is not None and appliance.process.poll() is None:
            appliance.stop()


@pytest.fixture
def cargo(tmp_path: Path) -> Iterator[CargoEnv]:
    with CargoEnv(tmp_path / "cargo") as env:
        yield env


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A real S3-compatible server (moto) over HTTP on 127.0.0.1, for the whole session."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A fresh bucket on the shared moto server."""
    name = f"ghostcrate-{uuid.uuid4().hex[:16]}"
    moto.create_bucket(name)
    return name


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[S3FaultProxy]:
    """A fault-injecting proxy in front of the moto server."""
    with S3FaultProxy(moto.endpoint_url) as started:
        yield started
