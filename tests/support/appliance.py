"""Run `ghostcrate serve` as a real process, the way an operator does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support.metrics import sample_value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Appliance:
    """A `ghostcrate serve` process with its own config file and data directory."""

    def __init__(self, workdir: Path, upstream_url: str, **upstream: object) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.index_url = f"{self.url}/index/"
        self.config = workdir / "ghostcrate.toml"
        self.log = workdir / "ghostcrate.log"
        lines = [
            f'data_dir = "{self.data_dir}"',
            "[server]",
            f'listen = "127.0.0.1:{self.port}"',
            "shutdown_timeout = 5",
            "[upstream]",
            f'index = "{upstream_url}"',
            "connect_timeout = 2",
            "read_timeout = 5",
        ]
        lines += [f"{key} = {value!r}" for key, value in upstream.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Appliance:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTCRATE_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ghostcrate", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ghostcrate exited at start:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"ghostcrate did not become healthy:\n{self.log.read_text()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the process with `sig` and return its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"ghostcrate ignored {sig.name}:\n{self.log.read_text()}"
            ) from None

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def metric(self, name: str, **labels: str) -> float:
        """The current value of one sample on /metrics (0 if absent)."""
        _, body = self.get("/metrics")
        return sample_value(body.decode(), name, **labels)

    def __enter__(self) -> Appliance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
