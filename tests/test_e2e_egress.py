"""Corporate egress: an HTTPS upstream signed by a private CA, reached through a real proxy.

The upstream is the fake crates.io serving TLS with a certificate from a throw-away CA;
the proxy is a real tinyproxy (installed by scripts/bootstrap-tests), whose log shows
which requests went through it; GhostCrate runs as a real process, cargo is the real one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import CORPUS_APP_DEPS, CRATES_IO_SOURCE, corpus_registry, make_workspace
from tests.support.forward_proxy import TinyProxy
from tests.support.tls import TestPKI, make_pki
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

Launch = Callable[..., Appliance]

DOWNLOAD = "/api/v1/crates/z/0.1.1/download"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_upstream(pki: TestPKI) -> Iterator[FakeUpstream]:
    """The fake crates.io over HTTPS, with a certificate only `pki.ca_path` vouches for."""
    with FakeUpstream(corpus_registry(), ssl_context=pki.server_context()) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        yield fake


@pytest.fixture
def tinyproxy() -> Iterator[TinyProxy]:
    with TinyProxy() as proxy:
        yield proxy


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `ghostcrate serve` in front of `upstream_url`; `env` is added to its environment.

    Keyword arguments are [upstream] keys. The autouse fixture in conftest.py has removed
    the machine's proxy variables, so the process sees only the ones a test gives it.
    """
    started: list[Appliance] = []

    def start(upstream_url: str, env: Mapping[str, str] | None = None, **keys: Any) -> Appliance:
        appliance = Appliance(tmp_path / f"appliance-{len(started)}", upstream_url, **keys)
        started.append(appliance)
        with _environment(env or {}):
            return appliance.start()

    yield start
    for appliance in started:
        if appliance.process is not None and appliance.process.poll() is None:
            appliance.stop()


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ while the block runs (a child started in it inherits them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def error_detail(body: bytes) -> str:
    """The `errors[0].detail` of cargo's JSON error format."""
    detail: str = json.loads(body)["errors"][0]["detail"]
    return detail


def assert_serves_the_crate(appliance: Appliance, upstream: FakeUpstream) -> None:
    status, body = appliance.get(DOWNLOAD)
    assert status == 200, body[:500]
    crate = upstream.registry.crate("z", "0.1.1")
    assert crate is not None
    assert hashlib.sha256(body).hexdigest() == crate.cksum


def cached_crates(appliance: Appliance) -> list[Path]:
    root = appliance.data_dir / "cache" / "crates"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def fresh_cargo(root: Path, appliance: Appliance) -> CargoEnv:
    env = CargoEnv(root)
    env.configure_replacement(appliance.index_url)
    return env


def assert_lockfile_matches(app: Path, upstream: FakeUpstream) -> None:
    locked = [p for p in read_lockfile(app) if p.source is not None]
    assert len(locked) >= len(CORPUS_APP_DEPS)
    for package in locked:
        assert package.source == CRATES_IO_SOURCE
        crate = upstream.registry.crate(package.name, package.version)
        assert crate is not None, package.name
        assert package.checksum == crate.cksum, package.name


def test_cargo_builds_through_the_proxy_with_the_private_ca_in_ca_bundle(
    launch: Launch,
    tls_upstream: FakeUpstream,
    tinyproxy: TinyProxy,
    pki: TestPKI,
    tmp_path: Path,
) -> None:
    appliance = launch(tls_upstream.url, proxy=tinyproxy.url, ca_bundle=str(pki.ca_path))
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo = fresh_cargo(tmp_path / "cargo", appliance)

    cargo.run(["generate-lockfile"], app)
    cargo.run(["build"], app)

    assert_lockfile_matches(app, tls_upstream)
    # Every upstream request went through tunnels to the upstream's port, and only there.
    tunnels = tinyproxy.connects()
    assert tunnels, tinyproxy.diagnostics()
    assert set(tunnels) == {f"127.0.0.1:{tls_upstream.port}"}
    assert tinyproxy.established(), tinyproxy.diagnostics()
    assert tls_upstream.config_count() >= 1
    assert tls_upstream.index_count("bigdata") >= 1
    assert ("bigdata", "0.1.0") in tls_upstream.downloaded()

    # Without the proxy there is no way out: a crate not cached yet cannot be fetched.
    tinyproxy.stop()
    status, body = appliance.get("/api/v1/crates/multi/1.0.0/download")
    assert status == 502, body[:500]
    detail = error_detail(body)
    assert f"cannot connect to the outbound proxy 127.0.0.1:{tinyproxy.port}" in detail
    assert "[upstream] proxy" in detail
    assert tls_upstream.download_count("multi", "1.0.0") == 0


def test_without_ca_bundle_the_private_ca_is_not_trusted_and_nothing_is_cached(
    launch: Launch, tls_upstream: FakeUpstream, tinyproxy: TinyProxy
) -> None:
    appliance = launch(tls_upstream.url, proxy=tinyproxy.url)

    status, body = appliance.get(DOWNLOAD)

    assert status == 502, body[:500]
    detail = error_detail(body)
    assert "TLS certificate" in detail
    assert "not trusted" in detail
    assert "[upstream] ca_bundle" in detail
    assert f"127.0.0.1:{tls_upstream.port}" in detail
    assert cached_crates(appliance) == []
    # The tunnel was opened; the TLS handshake is what failed, before any HTTP request.
    assert tinyproxy.connects(tls_upstream.port), tinyproxy.diagnostics()
    assert tls_upstream.requests == []


def test_https_proxy_and_no_proxy_from_the_environment(
    launch: Launch, tls_upstream: FakeUpstream, tinyproxy: TinyProxy, pki: TestPKI
) -> None:
    ca = str(pki.ca_path)

    # HTTPS_PROXY alone, no [upstream] proxy: the traffic goes through the proxy.
    proxied = launch(tls_upstream.url, env={"HTTPS_PROXY": tinyproxy.url}, ca_bundle=ca)
    assert_serves_the_crate(proxied, tls_upstream)
    assert tinyproxy.connects(tls_upstream.port), tinyproxy.diagnostics()

    # NO_PROXY exempts the upstream host: direct, and the proxy sees nothing.
    mark = tinyproxy.mark()
    served_before = len(tls_upstream.requests)
    env = {"HTTPS_PROXY": tinyproxy.url, "NO_PROXY": "127.0.0.1"}
    direct = launch(tls_upstream.url, env=env, ca_bundle=ca)
    assert_serves_the_crate(direct, tls_upstream)
    assert len(tls_upstream.requests) > served_before
    assert tinyproxy.requests(since=mark) == []

    # NO_PROXY exempts the host from [upstream] proxy as well.
    exempt = launch(
        tls_upstream.url, env={"NO_PROXY": "127.0.0.1"}, proxy=tinyproxy.url, ca_bundle=ca
    )
    assert_serves_the_crate(exempt, tls_upstream)
    assert tinyproxy.requests(since=mark) == []


def test_proxy_credentials_from_the_proxy_url(
    launch: Launch, tls_upstream: FakeUpstream, pki: TestPKI
) -> None:
    ca = str(pki.ca_path)
    password = "crate-pass.7"
    with TinyProxy(auth=("ghost", password)) as proxy:
        good = launch(tls_upstream.url, proxy=proxy.url_with("ghost", password), ca_bundle=ca)
        assert_serves_the_crate(good, tls_upstream)
        assert proxy.established(), proxy.diagnostics()
        downloads = tls_upstream.download_count("z")

        wrong = launch(
            tls_upstream.url, proxy=proxy.url_with("ghost", "not-the-password"), ca_bundle=ca
        )
        status, body = wrong.get(DOWNLOAD)
        assert status == 502, body[:500]
        detail = error_detail(body)
        # 407 is the standard answer; tinyproxy before 1.11.2 answers a wrong password
        # with 401 (tinyproxy/tinyproxy#532), and GhostCrate reports either the same way.
        assert (
            "refused the credentials (407)" in detail or "refused the credentials (401)" in detail
        )
        assert "put user:password in [upstream] proxy" in detail
        assert "not-the-password" not in detail
        assert cached_crates(wrong) == []

        anonymous = launch(tls_upstream.url, proxy=proxy.url, ca_bundle=ca)
        status, body = anonymous.get(DOWNLOAD)
        assert status == 502, body[:500]
        detail = error_detail(body)
        assert "refused the credentials (407): none were sent" in detail
        assert "[upstream] proxy" in detail

        assert tls_upstream.download_count("z") == downloads
        assert password not in good.log.read_text()
        assert "not-the-password" not in wrong.log.read_text()


def test_a_ghostcrate_can_mirror_another_ghostcrate(
    launch: Launch, upstream: FakeUpstream, tmp_path: Path
) -> None:
    central = launch(upstream.url)
    branch = launch(central.index_url)
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo = fresh_cargo(tmp_path / "cargo", branch)

    cargo.run(["generate-lockfile"], app)
    cargo.run(["build"], app)

    assert_lockfile_matches(app, upstream)
    status, body = branch.get("/index/config.json")
    assert status == 200
    assert json.loads(body)["dl"].startswith(branch.url)
    # The branch fetched everything from the central mirror, which fetched it upstream.
    assert ("bigdata", "0.1.0") in upstream.downloaded()
    assert central.metric("ghostcrate_crate_lookups_total", result="miss") >= 1
    assert branch.metric("ghostcrate_crate_lookups_total", result="miss") >= 1
