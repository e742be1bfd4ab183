"""Well-behaved clients that keep asking while an attack runs, in a process of their own.

`Bystanders` starts a process (so that the attack's Python never holds up its
clocks) with two clients, each asking every `INTERVAL` seconds and timing the
answers:

- HTTP/1.1 with keep-alive: one connection, an index file each time;
- h2c, as cargo: one upgraded connection, alternately an index file (the
  lane's own route) and `/health` (relayed to aiohttp).

It also samples the resident memory of the appliance's worker processes. The
test asserts, after the attack, that every answer came within `max_seconds`
and that no worker grew by `max_growth` bytes or more.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Protocol

import h2.config
import h2.connection
import h2.events

#: Seconds between two requests of one client.
INTERVAL = 0.05
#: A request not answered in this long counts as a failure (and the client reconnects).
GIVE_UP_SECONDS = 10.0


@dataclass
class Report:
    """What the bystanders saw: the slowest answer of each client, failures, memory."""

    slowest: dict[str, float] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    #: Per worker pid: resident bytes when the attack started, and the most seen since.
    rss_before: dict[int, int] = field(default_factory=dict)
    rss_peak: dict[int, int] = field(default_factory=dict)

    def growth(self) -> int:
        return max(
            (self.rss_peak.get(pid, 0) - before for pid, before in self.rss_before.items()),
            default=0,
        )


def worker_pids(pid: int, workers: int) -> list[int]:
    """The processes that serve: `pid` itself, or the supervisor's children."""
    if workers == 1:
        return [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


class Bystanders:
    """`with Bystanders(port, path, pids) as watch: <attack>`, then `watch.check()`."""

    def __init__(self, port: int, index_path: str, pids: list[int]) -> None:
        self._port = port
        self._path = index_path
        self._pids = pids
        self._parent, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_watch, args=(port, index_path, pids, child), daemon=True
        )
        self.report: Report | None = None

    def __enter__(self) -> Bystanders:
        self._process.start()
        if not self._parent.poll(30) or self._parent.recv() != "ready":
            self._process.kill()
            raise AssertionError("the well-behaved clients could not get a first answer")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._parent.send("stop")
        if self._parent.poll(GIVE_UP_SECONDS + 10):
            self.report = self._parent.recv()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()

    def check(self, *, max_seconds: float = 1.0, max_growth: int = 64 * 2**20) -> Report:
        """Assert that both clients were answered in time throughout and memory stayed put."""
        report = self.report
        assert report is not None, "the well-behaved clients sent no report"
        print(  # shown with -s, and on failure
            f"bystanders: slowest {report.slowest}, answered {report.answered}, "
            f"worker growth {report.growth() / 2**20:.1f} MiB"
        )
        assert not report.failures, f"well-behaved clients failed: {report.failures[:5]}"
        for client in ("http/1.1", "h2c"):
            assert report.answered.get(client, 0) >= 2, f"{client} was hardly answered: {report}"
            assert report.slowest[client] < max_seconds, (
                f"{client} waited {report.slowest[client]:.2f} s for an answer during the attack"
            )
        assert report.growth() < max_growth, (
            f"a worker grew by {report.growth() / 2**20:.0f} MiB during the attack"
        )
        return report


def _watch(port: int, path: str, pids: list[int], pipe: Connection) -> None:
    report = Report(rss_before={pid: rss(pid) for pid in pids})
    stop = threading.Event()
    lock = threading.Lock()
    clients = [
        _Client("http/1.1", lambda: _Http1(port, path), report, lock),
        _Client("h2c", lambda: _H2c(port, path), report, lock),
    ]
    for client in clients:
        client.first()
    if report.failures:
        pipe.send("failed")
        return
    pipe.send("ready")
    threads = [threading.Thread(target=client.loop, args=(stop,)) for client in clients]
    for thread in threads:
        thread.start()
    while not pipe.poll(0.05):
        for pid in pids:
            report.rss_peak[pid] = max(report.rss_peak.get(pid, 0), rss(pid))
    pipe.recv()
    stop.set()
    for thread in threads:
        thread.join()
    pipe.send(report)


class _Session(Protocol):
    def ask(self) -> None: ...

    def close(self) -> None: ...


class _Client:
    def __init__(
        self, name: str, connect: Callable[[], _Session], report: Report, lock: threading.Lock
    ) -> None:
        self._name = name
        self._connect = connect
        self._report = report
        self._lock = lock
        self._session: _Session | None = None

    def first(self) -> None:
        try:
            self._session = self._connect()
            self._session.ask()
        except (OSError, AssertionError) as error:
            self._report.failures.append(f"{self._name}: first request: {error!r}")

    def loop(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL):
            started = time.monotonic()
            try:
                if self._session is None:
                    self._session = self._connect()
                self._session.ask()
            except (OSError, AssertionError) as error:
                with self._lock:
                    self._report.failures.append(f"{self._name}: {error!r}")
                if self._session is not None:
                    self._session.close()
                self._session = None
                continue
            took = time.monotonic() - started
            with self._lock:
                report = self._report
                report.slowest[self._name] = max(report.slowest.get(self._name, 0.0), took)
                report.answered[self._name] = report.answered.get(self._name, 0) + 1
        if self._session is not None:
            self._session.close()


class _Http1:
    def __init__(self, port: int, path: str) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP_SECONDS)
        self._request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self._buffer = b""

    def ask(self) -> None:
        self._sock.sendall(self._request)
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self._buffer) < length:
            self._buffer += self._recv()
        self._buffer = self._buffer[length:]
        assert status == 200, f"status {status}"

    def _recv(self) -> bytes:
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def close(self) -> None:
        self._sock.close()


class _H2c:
    def __init__(self, port: int, path: str) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP_SECONDS)
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._paths = [path, "/health"]
        self._turn = 0
        settings = self._h2.initiate_upgrade_connection()
        assert settings is not None
        self._sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                f"Upgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n"
            ).encode()
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("closed during the upgrade")
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n", 1)[0], f"no upgrade: {head[:80]!r}"
        self._send()
        self._wait(1, rest)

    def ask(self) -> None:
        path = self._paths[self._turn % 2]
        self._turn += 1
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":path", path.encode()),
                (b":scheme", b"http"),
                (b":authority", b"127.0.0.1"),
            ],
            end_stream=True,
        )
        self._send()
        self._wait(stream_id, b"")

    def _wait(self, stream_id: int, data: bytes) -> None:
        status = 0
        while True:
            for event in self._h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    raise AssertionError(f"stream reset ({event.error_code!r})")
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    self._send()
                    assert status == 200, f"status {status}"
                    return
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {event.error_code!r}")
            self._send()
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")

    def _send(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._sock.sendall(data)

    def close(self) -> None:
        self._sock.close()
