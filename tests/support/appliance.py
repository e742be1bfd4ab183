"""Run `ghostcrate serve` as a real process, the way an operator does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.leaks import LEAKS, session_secrets, webhook_secrets
from tests.support.metrics import sample_value
from tests.support.textlog import parse_text_line

#: Prefixes of environment variables a started server does not inherit from the tests.
_NOT_INHERITED = ("GHOSTCRATE_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Appliance:
    """A `ghostcrate serve` process with its own config file and data directory."""

    def __init__(
        self,
        workdir: Path,
        upstream_url: str,
        *,
        server: Mapping[str, object] | None = None,
        tables: Mapping[str, Mapping[str, object]] | None = None,
        **upstream: object,
    ) -> None:
        """`upstream` sets [upstream] keys, `server` [server] keys, `tables` any other table."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.index_url = f"{self.url}/index/"
        self.config = workdir / "ghostcrate.toml"
        self.log = workdir / "ghostcrate.log"
        self.workers = int(str((server or {}).get("workers", 1)))
        config: dict[str, Mapping[str, object]] = {
            "server": {"listen": f"127.0.0.1:{self.port}", "shutdown_timeout": 5, **(server or {})},
            "upstream": {
                "index": upstream_url,
                "connect_timeout": 2,
                "read_timeout": 5,
                **upstream,
            },
            **(tables or {}),
        }
        lines = [f"data_dir = {_toml(str(self.data_dir))}"]
        for table, values in config.items():
            lines.append(f"[{table}]")
            lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        LEAKS.config_secrets("", config)
        LEAKS.log_file(self.log)
        LEAKS.data_dir(self.data_dir)

    def launch(self, env: Mapping[str, str] | None = None) -> int:
        """Start the process with `env` added to the environment; the log's offset then.

        The test's own GHOSTCRATE_ and systemd variables are not passed on.
        """
        base = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        LEAKS.config_secrets("environment", env or {})
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ghostcrate", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base, **(env or {})},
            )
        return offset

    def start(self, timeout: float = 15.0) -> Appliance:
        """Start the process; return once every worker is listening."""
        offset = self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ghostcrate exited at start:\n{self.log.read_text()}")
            listening = [e for e in self.events(offset) if e.get("msg") == "listening"]
            if len(listening) >= self.workers and self.get("/health")[0] == 200:
                return self
            time.sleep(0.05)
        raise AssertionError(f"ghostcrate did not become healthy:\n{self.log.read_text()}")

    def run(
        self,
        command: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`ghostcrate COMMAND --config <this config> ARGS`, as an operator runs it
        (`input`: its standard input)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTCRATE_")}
        LEAKS.config_secrets("environment", env or {})
        if input is not None and any(arg.startswith("--password") for arg in args):
            for line in input.splitlines():
                LEAKS.secret("password", line)
        result = subprocess.run(
            [sys.executable, "-m", "ghostcrate", command, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**base, **(env or {})},
            input=input,
        )
        shown = " ".join(["ghostcrate", command, *args])
        for secret in (
            webhook_secrets(result.stdout) if (command, *args[:1]) == ("webhook", "add") else []
        ):
            LEAKS.secret("webhook secret", secret, shown_in=result.stdout)
        LEAKS.output(f"the standard output of `{shown}` ({self.workdir})", result.stdout)
        LEAKS.output(f"the standard error of `{shown}` ({self.workdir})", result.stderr)
        return result

    def cached_crates(self) -> set[str]:
        """File names of the crates in the disk tier."""
        return {p.name for p in (self.data_dir / "cache" / "crates").rglob("*.crate")}

    def events(self, offset: int = 0) -> list[dict[str, Any]]:
        """The log lines written from byte `offset` on, JSON or text (values as text)."""
        with self.log.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
        parsed = (
            json.loads(line) if line.startswith("{") else parse_text_line(line) for line in lines
        )
        return [event for event in parsed if event is not None]

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
        return self.request("GET", path, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Status and body of one request (0 and the error when there is no answer)."""
        request = urllib.request.Request(
            self.url + path, data=body, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read()
        except (urllib.error.URLError, ConnectionError) as error:
            return 0, str(error).encode()
        _record(method, path, status, answer)
        return status, answer

    def metric(self, name: str, **labels: str) -> float:
        """The current value of one sample on /metrics (0 if absent)."""
        _, body = self.get("/metrics")
        return sample_value(body.decode(), name, **labels)


def _record(method: str, path: str, status: int, answer: bytes) -> None:
    """Tokens an answer hands out are secrets; an error answer must hold none."""
    if status >= 400:
        LEAKS.output(f"the {status} answer to {method} {path}", answer.decode(errors="replace"))
        return
    for secret in webhook_secrets(answer.decode(errors="replace")):
        LEAKS.secret("webhook secret", secret)
    if answer.startswith(b"{") and b"token" in answer:
        with contextlib.suppress(ValueError):
            document = json.loads(answer)
            if isinstance(document, dict):
                for kind, value in session_secrets(document):
                    LEAKS.secret(kind, value)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
