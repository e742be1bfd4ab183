"""systemd's notify protocol, as a `Type=notify` unit sees `ghostcrate serve`.

The test plays systemd: it binds the datagram socket named in `NOTIFY_SOCKET`,
starts the server with it and a watchdog interval, and checks that READY=1
comes only once every worker answers, watchdog pings keep coming, and SIGTERM
brings STOPPING=1 and a clean exit.
"""

from __future__ import annotations

import http.client
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

#: The watchdog interval the test asks for: pings every half of it.
WATCHDOG_USEC = 600_000


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def receive(sock: socket.socket, timeout: float) -> list[str]:
    """The fields of the next message, or [] if none came within `timeout`."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode().split("\n")
    except TimeoutError:
        return []


def answers(appliance: Appliance, connections: int) -> bool:
    """Whether `connections` new connections each get an answer within a second.

    With workers, each connection lands on one worker's socket at random: one that
    is not served yet would leave its connection unanswered.
    """
    for _ in range(connections):
        client = http.client.HTTPConnection("127.0.0.1", appliance.port, timeout=1.0)
        try:
            client.request("GET", "/health")
            if client.getresponse().status != 200:
                return False
        except OSError:
            return False
        finally:
            client.close()
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_comes_once_every_worker_answers_then_pings_then_stopping(
    tmp_path: Path, upstream: FakeUpstream, notify_socket: socket.socket, workers: int
) -> None:
    appliance = Appliance(tmp_path / "appliance", upstream.url, server={"workers": workers})
    appliance.launch(
        {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )
    assert appliance.process is not None
    try:
        seen: list[list[str]] = []
        deadline = time.monotonic() + 20
        while not any("READY=1" in fields for fields in seen):
            assert time.monotonic() < deadline, f"no READY=1; got {seen}"
            seen.append(receive(notify_socket, 1.0))
        # Right when READY=1 arrives, every worker answers at once.
        assert answers(appliance, 8 * workers)
        ready = next(fields for fields in seen if "READY=1" in fields)
        assert f"STATUS=serving {appliance.url}" in ready
        assert not [fields for fields in seen if "STOPPING=1" in fields]

        pings = 0
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            pings += "WATCHDOG=1" in receive(notify_socket, 0.5)
        assert pings >= 3, "the watchdog is pinged every half interval (0.3 s)"

        appliance.process.send_signal(signal.SIGTERM)
        after_term: list[list[str]] = []
        while fields := receive(notify_socket, 2.0):
            after_term.append(fields)
            if "STOPPING=1" in fields:
                break
        assert ["STOPPING=1"] in after_term
        assert appliance.process.wait(15) == 0
    finally:
        if appliance.process.poll() is None:
            appliance.stop()
