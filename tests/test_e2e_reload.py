"""SIGHUP (systemd's ExecReload): a new configuration without dropping what is in flight.

Observable change used throughout: `[auth] required = true` makes config.json say
`auth-required` and refuses requests without a token, so every new connection shows
which configuration answered it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
BIG = "/api/v1/crates/bigdata/0.1.0/download"
SLOW = "/api/v1/crates/abc/0.2.0/download"
DOWNLOAD = "/api/v1/crates/{name}/{version}/download"


def status_of_new_connection(appliance: Appliance, path: str) -> int:
    client = http.client.HTTPConnection("127.0.0.1", appliance.port, timeout=10)
    try:
        client.request("GET", path)
        return client.getresponse().status
    finally:
        client.close()


def all_new_connections_say(appliance: Appliance, status: int, within: float = 10.0) -> bool:
    """Whether, within `within` seconds, 10 new connections in a row get `status`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(
            status_of_new_connection(appliance, "/index/config.json") == status for _ in range(10)
        ):
            return True
        time.sleep(0.1)
    return False


def slow_read(appliance: Appliance, path: str, into: list[bytes]) -> None:
    """GET `path` and read the body slowly (64 KiB every 20 ms), like a client on a thin link."""
    with socket.create_connection(("127.0.0.1", appliance.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = bytearray()
        while chunk := sock.recv(64 * 1024):
            received += chunk
            time.sleep(0.02)
    into.append(bytes(received))


def reconfigure(appliance: Appliance, text: str) -> None:
    appliance.config.write_text(appliance.config.read_text() + text)


def reloaded_events(
    appliance: Appliance, offset: int, message: str, at_least: int = 1
) -> list[dict[str, object]]:
    """The log's `message` events after `offset`, once there are `at_least` (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        found = [event for event in appliance.events(offset) if event.get("msg") == message]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_applies_a_new_configuration_and_in_flight_transfers_finish(
    start_appliance: StartAppliance, upstream: FakeUpstream, workers: int
) -> None:
    appliance = start_appliance(server={"workers": workers})
    assert appliance.process is not None
    big = upstream.registry.crate("bigdata", "0.1.0")
    slow = upstream.registry.crate("abc", "0.2.0")
    assert big is not None
    assert slow is not None
    assert appliance.get(BIG) == (200, big.data)  # cached: the slow reader gets it from disk
    requests_before = appliance.metric(
        "ghostcrate_http_requests_total", route=DOWNLOAD, status="200"
    )
    upstream.set_latency(1.5, scope="download", crate="abc")  # a miss in flight meanwhile
    offset = appliance.log.stat().st_size

    transfers: list[bytes] = []
    miss: list[tuple[int, bytes]] = []
    threads = [
        threading.Thread(target=slow_read, args=(appliance, BIG, transfers)),
        threading.Thread(target=lambda: miss.append(appliance.get(SLOW))),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.4)  # both under way
    reconfigure(appliance, "[auth]\nrequired = true\n")
    appliance.process.send_signal(signal.SIGHUP)

    assert all_new_connections_say(appliance, 401)  # the new configuration answers
    for thread in threads:
        thread.join(30)
    assert miss == [(200, slow.data)]
    [response] = transfers
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(big.data).hexdigest()

    assert appliance.process.poll() is None
    expected = workers + (1 if workers > 1 else 0)  # each worker, and the supervisor
    reloads = reloaded_events(appliance, offset, "configuration reloaded", expected)
    assert len(reloads) == expected
    assert all(event["changed"] == ["auth.required"] for event in reloads)
    done = reloaded_events(appliance, offset, "the old configuration's requests are done", workers)
    assert len(done) == workers
    # The metrics go on across the reload (not reset to zero): read with a token now.
    assert appliance.metric("ghostcrate_http_requests_total", route=DOWNLOAD, status="200") > (
        requests_before
    )
    assert appliance.stop() == 0


def test_settings_that_need_a_restart_are_reported_and_the_rest_applied(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(server={"workers": 2})
    assert appliance.process is not None
    offset = appliance.log.stat().st_size
    text = appliance.config.read_text()
    text = text.replace(f"127.0.0.1:{appliance.port}", "127.0.0.1:1")
    text = text.replace("workers = 2", "workers = 3")
    text = text.replace(str(appliance.data_dir), str(tmp_path / "elsewhere"))
    appliance.config.write_text(text + "[auth]\nrequired = true\n")
    appliance.process.send_signal(signal.SIGHUP)

    assert all_new_connections_say(appliance, 401)  # applied, on the same port
    waiting = reloaded_events(
        appliance, offset, "these settings change only at a restart; they keep their running values"
    )
    assert waiting
    assert waiting[0]["keys"] == ["data_dir", "server.listen", "server.workers"]
    assert not (tmp_path / "elsewhere").exists()
    assert appliance.stop() == 0


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("[cache]\ndisk_max_bytes = 'lots'\n", "cache.disk_max_bytes"),
        ("[auth\nrequired = true\n", "not valid TOML"),
    ],
)
def test_a_bad_configuration_is_refused_and_the_running_one_stays(
    start_appliance: StartAppliance, bad: str, named: str
) -> None:
    appliance = start_appliance(server={"workers": 2})
    assert appliance.process is not None
    offset = appliance.log.stat().st_size
    reconfigure(appliance, "[auth]\nrequired = true\n" + bad)
    appliance.process.send_signal(signal.SIGHUP)
    refused = reloaded_events(
        appliance, offset, "configuration reload refused; the running configuration stays"
    )
    assert refused, appliance.log.read_text()[-2000:]
    assert named in json.dumps(refused[0]["problems"])
    time.sleep(0.5)
    assert all_new_connections_say(appliance, 200, within=1)  # the old configuration still
    assert appliance.process.poll() is None
    assert appliance.stop() == 0
