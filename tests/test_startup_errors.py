"""Start-up errors are one line that names the setting, never a traceback, and exit 2."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.appliance import Appliance, free_port
from tests.support.s3 import MotoServer
from tests.support.upstream import FakeUpstream

#: Every command, with the arguments it needs besides --config.
COMMANDS: list[tuple[str, ...]] = [
    ("serve",),
    ("check-config",),
    ("verify",),
    ("gc",),
    ("warm", "--crate", "abc"),
    ("export", "--output", "bundle.tar"),
    ("import", "bundle.tar"),
]


def assert_one_line(result_stderr: str, *parts: str) -> None:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, result_stderr
    assert "Traceback" not in result_stderr
    assert lines[0].startswith("ghostcrate: "), lines
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_data_dir_that_is_a_file_stops_every_command(
    tmp_path: Path, upstream: FakeUpstream, command: tuple[str, ...]
) -> None:
    appliance = Appliance(tmp_path, upstream.url)
    appliance.data_dir.write_text("not a directory")
    result = appliance.run(*command)
    assert result.returncode == 2
    assert_one_line(result.stderr, "data_dir", "is not a directory", str(appliance.config))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_configuration_problem_stops_every_command_at_once(
    tmp_path: Path, upstream: FakeUpstream, command: tuple[str, ...]
) -> None:
    appliance = Appliance(tmp_path, upstream.url, indx="x", offline="yes")
    result = appliance.run(*command, env={"GHOSTCRATE_SERVER__WORKERS": "many"})
    assert result.returncode == 2
    expected = [
        f"{appliance.config}: unknown key 'upstream.indx'",
        "GHOSTCRATE_SERVER__WORKERS: 'server.workers' must be a whole number",
        f"{appliance.config}: 'upstream.offline' must be true or false",
    ]
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, part in zip(lines, expected, strict=True):
        assert line.startswith("ghostcrate: configuration error: ")
        assert part in line


def test_a_data_dir_that_cannot_be_created_names_the_setting(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    appliance = Appliance(tmp_path, upstream.url)
    (tmp_path / "file").write_text("")
    result = appliance.run("check-config", "--data-dir", str(tmp_path / "file" / "data"))
    assert result.returncode == 2
    assert_one_line(result.stderr, "data_dir", "is not writable", "command line")


def test_a_ca_bundle_without_certificates_names_the_setting(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("this is not a certificate\n")
    appliance = Appliance(tmp_path, upstream.url, ca_bundle=str(bundle))
    result = appliance.run("serve")
    assert result.returncode == 2
    assert_one_line(result.stderr, "[upstream] ca_bundle", str(bundle), str(appliance.config))


def test_aws_credentials_that_cannot_be_read_name_the_file(
    tmp_path: Path, upstream: FakeUpstream, bucket: str, moto: MotoServer
) -> None:
    unreadable = tmp_path / "credentials"
    unreadable.mkdir()  # reading it fails, also for root
    appliance = Appliance(
        tmp_path,
        upstream.url,
        tables={"s3": {"bucket": bucket, "endpoint_url": moto.endpoint_url}},
    )
    result = appliance.run("check-config", env={"AWS_SHARED_CREDENTIALS_FILE": str(unreadable)})
    assert result.returncode == 2
    assert_one_line(result.stderr, str(unreadable), "cannot be read", "[s3]")


def test_importing_a_file_that_is_not_there_is_a_usage_error(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    absent = tmp_path / "absent.tar"
    result = Appliance(tmp_path, upstream.url).run("import", str(absent))
    assert result.returncode == 2
    assert result.stderr == f"ghostcrate import: {absent} is not a file\n"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", free_port()))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_is_one_line(
    tmp_path: Path, upstream: FakeUpstream, taken_port: int, workers: int
) -> None:
    appliance = Appliance(
        tmp_path, upstream.url, server={"listen": f"127.0.0.1:{taken_port}", "workers": workers}
    )
    result = appliance.run("serve")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ghostcrate: cannot listen on 127.0.0.1:{taken_port}: address already in use "
        "(is another GhostCrate running? see [server] listen)"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_appliance_cannot_join_the_port(
    start_appliance: Callable[..., Appliance], tmp_path: Path, upstream: FakeUpstream, workers: int
) -> None:
    first = start_appliance(server={"workers": workers})
    for second_workers in (1, 2):
        second = Appliance(
            tmp_path / f"second-{second_workers}",
            upstream.url,
            server={"listen": f"127.0.0.1:{first.port}", "workers": second_workers},
        )
        result = second.run("serve")
        assert result.returncode == 2
        assert "address already in use" in result.stderr
    assert first.get("/health")[0] == 200


def test_start_up_says_what_the_appliance_is_doing(
    start_appliance: Callable[..., Appliance], upstream: FakeUpstream
) -> None:
    appliance = start_appliance(
        server={"workers": 2},
        tables={"cache": {"memory_bytes": "32MiB", "disk_max_bytes": "2GiB"}},
        only_cached=True,
    )
    [starting] = [e for e in appliance.events() if e["msg"].startswith("starting: ")]
    assert starting["msg"] == (
        f"starting: only-cached mirror of {upstream.url} (offers and serves only cached "
        f"crates), listening on 127.0.0.1:{appliance.port} as {appliance.url} with 2 workers; "
        f"tiers: memory 32 MiB per worker, disk 2 GiB; data in {appliance.data_dir}"
    )
    assert (starting["mode"], starting["workers"], starting["s3_bucket"]) == (
        "only-cached",
        2,
        None,
    )


def test_a_process_that_joins_the_port_gets_no_connections(
    start_appliance: Callable[..., Appliance],
) -> None:
    appliance = start_appliance(server={"workers": 2})
    with socket.socket() as intruder:  # the same user, and SO_REUSEPORT: the kernel lets it in
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        intruder.bind(("127.0.0.1", appliance.port))
        intruder.listen()
        for _ in range(60):
            with socket.create_connection(("127.0.0.1", appliance.port), timeout=5) as client:
                client.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
                assert client.recv(64).startswith(b"HTTP/1.0 200 "), "not answered"
        assert select.select([intruder], [], [], 0)[0] == [], "a connection went to it"
