"""The container image and the compose pair, built and run for real with podman.

hadolint lints the Containerfiles everywhere; the rest skips (saying why) where
podman cannot run containers. The images are built once per session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.appliance import free_port
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import CORPUS_APP_DEPS, corpus_registry, make_workspace
from tests.support.podman import (
    DOCKER,
    IMAGE,
    S3_IMAGE,
    Build,
    container,
    ensure_base_image,
    inspect,
    podman,
    podman_problem,
    wait_http,
)
from tests.support.upstream import FakeUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # cold (base and both images): ~3.5 min

BIN = Path(sys.executable).parent
DATA = "/var/lib/ghostcrate"
#: The appliance's [server] shutdown_timeout default, and what `podman stop` is given.
STOP_TIMEOUT = 30


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hadolint"), str(path)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("name", ["Containerfile", "s3.Containerfile"])
def test_hadolint_passes_on_the_containerfiles(name: str) -> None:
    result = hadolint(DOCKER / name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_report_a_bad_containerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # an untagged base image


@pytest.fixture(scope="session")
def builds() -> Iterator[dict[str, Build]]:
    """Both images, built once per session side by side (podman's layer cache keeps a
    rebuild quick); the S3 server's image is only waited for by the compose test."""
    problem = podman_problem()
    if problem is not None:
        pytest.skip(problem)
    ensure_base_image()
    started = {
        IMAGE: Build(IMAGE, DOCKER / "Containerfile"),
        S3_IMAGE: Build(S3_IMAGE, DOCKER / "s3.Containerfile"),
    }
    yield started
    for build in started.values():
        with contextlib.suppress(AssertionError):
            build.wait()  # never leave a build running


@pytest.fixture(scope="session")
def image(builds: dict[str, Build]) -> str:
    """The GhostCrate image."""
    print(f"{IMAGE} ready {builds[IMAGE].wait():.1f} s after its build began")
    return IMAGE


@pytest.fixture(scope="session")
def s3_image(builds: dict[str, Build]) -> str:
    """The compose file's S3 server image (moto on the same base)."""
    print(f"{S3_IMAGE} ready {builds[S3_IMAGE].wait():.1f} s after its build began")
    return S3_IMAGE


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_the_image_is_non_root_with_a_data_volume_health_check_and_sigterm(image: str) -> None:
    config = inspect(image, "image")["Config"]
    user = config["User"].split(":")[0]
    assert user.isdigit(), f"USER should be a fixed numeric UID, not {config['User']!r}"
    assert int(user) != 0
    assert DATA in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"
    assert "GHOSTCRATE_DATA_DIR=/var/lib/ghostcrate" in config["Env"]
    assert "GHOSTCRATE_SERVER__LISTEN=0.0.0.0:8080" in config["Env"]
    health = inspect(image, "image")["Healthcheck"]
    assert health["Test"][0] == "CMD"
    assert "healthcheck.py" in " ".join(health["Test"])


def test_the_image_holds_no_compiler_and_no_source_tree(image: str) -> None:
    probe = "command -v gcc || command -v cc || test -e /src || echo slim"
    result = podman("run", "--rm", "--entrypoint", "sh", image, "-c", probe, check=False)
    assert result.stdout.strip() == "slim", result.stdout


@pytest.fixture
def volume() -> Iterator[str]:
    """A named volume's name; removed at the end."""
    name = unique("ghostcrate-test-data")
    yield name
    podman("volume", "rm", "--force", name, check=False)


def test_it_runs_read_only_as_non_root_and_its_health_check_passes(image: str, volume: str) -> None:
    port = free_port()
    with container(
        unique("ghostcrate-test"),
        "--init",
        "--read-only",
        "-v",
        f"{volume}:{DATA}",
        "-p",
        f"127.0.0.1:{port}:8080",
    ) as name:
        assert json.loads(wait_http(f"http://127.0.0.1:{port}/healthz")) == {"status": "alive"}
        assert podman("exec", name, "id", "-u").stdout.strip() not in ("", "0")
        outside = podman("exec", name, "touch", "/opt/ghostcrate/written", check=False)
        assert outside.returncode != 0
        assert "Read-only file system" in outside.stderr
        podman("exec", name, "touch", f"{DATA}/written")  # the volume is writable
        assert podman("exec", name, "test", "-s", f"{DATA}/private/registry.db").returncode == 0
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        assert inspect(name)["State"]["Health"]["Status"] == "healthy"


def test_its_health_check_fails_when_the_server_does_not_answer(image: str) -> None:
    # The same image with `sleep` in place of the server: the check must say unhealthy.
    with container(
        unique("ghostcrate-test"),
        "--init",
        "--read-only",
        "--entrypoint",
        "sleep",
        command=["infinity"],
    ) as name:
        assert podman("healthcheck", "run", name, check=False).returncode != 0


@pytest.fixture
def host_appliance(image: str, upstream: FakeUpstream) -> Iterator[tuple[str, str]]:
    """The image on the host's network, in front of the fake upstream: (name, base URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with container(
        unique("ghostcrate-test"),
        "--init",
        "--read-only",
        "--network=host",
        "-e",
        f"GHOSTCRATE_SERVER__LISTEN=127.0.0.1:{port}",
        "-e",
        f"GHOSTCRATE_SERVER__PUBLIC_URL={url}",
        "-e",
        f"GHOSTCRATE_SERVER__SHUTDOWN_TIMEOUT={STOP_TIMEOUT}",
        "-e",
        f"GHOSTCRATE_UPSTREAM__INDEX={upstream.url}",
    ) as name:
        wait_http(f"{url}/healthz")
        yield name, url


def test_real_cargo_fetches_crates_through_the_container(
    host_appliance: tuple[str, str], upstream: FakeUpstream, cargo: CargoEnv, tmp_path: Path
) -> None:
    name, url = host_appliance
    app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
    cargo.configure_replacement(f"{url}/index/")
    cargo.run(["fetch"], app)
    locked = {(p.name, p.version) for p in read_lockfile(app) if p.source is not None}
    assert locked
    assert {(n.lower(), v) for n, v in locked} <= {(n.lower(), v) for n, v in upstream.downloaded()}
    assert len(cargo.cached_crates()) == len(locked)
    # The health check follows [server] listen (here 127.0.0.1 on another port).
    assert podman("healthcheck", "run", name, check=False).returncode == 0


def test_stop_sends_sigterm_and_the_server_exits_0_well_within_the_timeout(
    host_appliance: tuple[str, str],
) -> None:
    name, _ = host_appliance
    started = time.monotonic()
    podman("stop", "--time", str(STOP_TIMEOUT), name, timeout=STOP_TIMEOUT + 30)
    seconds = time.monotonic() - started
    print(f"podman stop took {seconds:.2f} s (timeout {STOP_TIMEOUT} s)")
    state = inspect(name)["State"]
    assert state["ExitCode"] == 0, state
    assert seconds < 5
    assert '"msg": "stopping"' in podman("logs", name).stderr + podman("logs", name).stdout


def compose(project: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "podman-compose"), "-p", project, "-f", str(DOCKER / "compose.yaml")]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def service_container(project: str, service: str) -> str:
    names = podman(
        "ps",
        "--all",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={service}",
        "--format",
        "{{.Names}}",
    ).stdout.split()
    assert len(names) == 1, names
    return names[0]


LIST_BUCKET = (
    "import boto3, json; "
    "c = boto3.client('s3', endpoint_url='http://127.0.0.1:5000', region_name='us-east-1', "
    "aws_access_key_id='k', aws_secret_access_key='s'); "
    "print(json.dumps({o['Key']: o['Size'] for o in "
    "c.list_objects_v2(Bucket='ghostcrate').get('Contents', [])}))"
)


def test_compose_brings_up_the_appliance_with_its_s3_server_and_takes_them_down(
    image: str, s3_image: str
) -> None:
    project = unique("ghostcrate-test")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Containers on the compose network reach the host's fake upstream at its gateway.
    with FakeUpstream(corpus_registry(), host="0.0.0.0") as upstream:
        upstream.advertised_url = f"http://host.containers.internal:{upstream.port}/"
        env = {
            **os.environ,
            "GHOSTCRATE_IMAGE": image,
            "GHOSTCRATE_S3_IMAGE": s3_image,
            "GHOSTCRATE_PORT": str(port),
            "GHOSTCRATE_PUBLIC_URL": url,
            "GHOSTCRATE_UPSTREAM_INDEX": upstream.advertised_url,
        }
        started = time.monotonic()
        try:
            compose(project, "up", "-d", "--no-build", env=env)
            print(f"compose up took {time.monotonic() - started:.1f} s")
            ready = json.loads(wait_http(f"{url}/readyz", timeout=30))
            assert ready["checks"]["s3"]["ok"] is True
            crate = upstream.registry.crate("abc", "0.2.0")
            assert crate is not None
            body = wait_http(f"{url}/api/v1/crates/abc/0.2.0/download")
            assert hashlib.sha256(body).hexdigest() == crate.cksum
            s3 = service_container(project, "s3")
            key = "crates/abc/abc-0.2.0.crate"
            deadline = time.monotonic() + 10
            while True:
                listing = json.loads(
                    podman("exec", s3, "/opt/s3/bin/python", "-c", LIST_BUCKET).stdout
                )
                if key in listing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert listing.get(key) == len(crate.data), listing
            # podman-compose hands both services' health checks to podman intact.
            for service in ("s3", "ghostcrate"):
                name = service_container(project, service)
                assert podman("healthcheck", "run", name, check=False).returncode == 0, service
        finally:
            compose(project, "down", "--volumes", env=env)
    leftovers = podman(
        "ps", "--all", "--filter", f"label=com.docker.compose.project={project}", "-q"
    ).stdout.split()
    assert leftovers == []
    volumes = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{project}_ghostcrate-data" not in volumes
