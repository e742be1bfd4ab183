"""A real forward HTTP proxy (tinyproxy) on 127.0.0.1, the way a corporate network has one.

`TinyProxy` runs `tinyproxy -d -c CONF` in the foreground with its own configuration
and log, optionally with Basic authentication, and reads the log back so a test can
assert which requests really went through the proxy (an HTTPS request is one CONNECT
`host:port`; a plain HTTP one is `GET http://...`). `scripts/bootstrap-tests` installs
tinyproxy.

tinyproxy drops privileges (to `nobody` when started as root) *before* it opens its log
file, so the log lives in a directory of its own that `nobody` owns, outside pytest's
private temporary directories.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

from tests.support.appliance import free_port
from tests.support.lifecycle import Service

#: `Request (file descriptor 5): CONNECT 127.0.0.1:8443 HTTP/1.1`
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (?P<method>\S+) (?P<target>\S+) HTTP/")
#: `Established connection to host "127.0.0.1" using file descriptor 6.`
_ESTABLISHED = re.compile(r'Established connection to host "(?P<host>[^"]*)"')
#: What tinyproxy's configuration parser accepts for a BasicAuth user or password.
_CREDENTIAL = re.compile(r"[-A-Za-z0-9._]+")

MISSING = (
    "tinyproxy is not installed, and the egress tests send upstream traffic through it: "
    "run scripts/bootstrap-tests as root (it installs the Debian package tinyproxy-bin), "
    "or install tinyproxy yourself, e.g. `sudo apt-get install tinyproxy`."
)


def tinyproxy_binary() -> str:
    """The tinyproxy executable; AssertionError saying what to install when there is none."""
    found = shutil.which("tinyproxy")
    if found is None:
        found = next(
            (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)),
            None,
        )
    if found is None:
        raise AssertionError(MISSING)
    return found


@dataclass(frozen=True)
class ProxiedRequest:
    """One request line tinyproxy logged: `CONNECT host:port` or `GET http://...`."""

    method: str
    target: str


class TinyProxy(Service):
    """A tinyproxy process on a free 127.0.0.1 port; `stop()` ends it by its own PID."""

    def __init__(self, *, auth: tuple[str, str] | None = None, timeout: int = 30) -> None:
        """`auth` = (user, password) makes the proxy demand Basic authentication."""
        self.auth = auth
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ghostcrate-tinyproxy-"))
        self.config = self.dir / "tinyproxy.conf"
        self.log = self.dir / "tinyproxy.log"
        self.output = self.dir / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            f"Timeout {timeout}",
            f'LogFile "{self.log}"',
            # Info logs every request line, CONNECT target and upstream connection.
            "LogLevel Info",
            "MaxClients 64",
            # No ConnectPort lines: CONNECT is allowed to any port, as the fakes use random ones.
        ]
        if os.geteuid() == 0:
            # As root tinyproxy refuses to keep root privileges; it runs as this user.
            nobody = pwd.getpwnam("nobody")
            group = grp.getgrgid(nobody.pw_gid).gr_name
            lines += ["User nobody", f"Group {group}"]
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self.dir.chmod(0o755)
        if auth is not None:
            user, password = auth
            if not all(_CREDENTIAL.fullmatch(part) for part in auth):
                raise ValueError("tinyproxy's BasicAuth takes only letters, digits and -._")
            lines.append(f"BasicAuth {user} {password}")
        self.config.write_text("\n".join(lines) + "\n")

    # --- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (no credentials)."""
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """`http://user:password@127.0.0.1:PORT`, both parts percent-encoded."""
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        """The URL with the configured credentials (the plain URL without `auth`)."""
        return self.url_with(*self.auth) if self.auth is not None else self.url

    def start(self, timeout: float = 5.0) -> Self:
        """Start tinyproxy; return once it accepts connections."""
        try:
            binary = tinyproxy_binary()
        except AssertionError:
            self.stop()
            raise
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                [binary, "-d", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                failure = (
                    f"tinyproxy exited at start with status {self.process.returncode}:\n"
                    f"{self.diagnostics()}"
                )
                self.stop()
                raise AssertionError(failure)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.01)
        failure = f"tinyproxy did not listen within {timeout} s:\n{self.diagnostics()}"
        self.stop()
        raise AssertionError(failure)

    def stop(self) -> None:
        """Stop this tinyproxy (SIGTERM to its PID, SIGKILL if it lingers); remove its files."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- what went through --------------------------------------------------

    def log_text(self, since: int = 0) -> str:
        """tinyproxy's log from byte `since` on ("" before its first line)."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(since)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """The log's current size: pass it as `since` to see only what comes after."""
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def diagnostics(self) -> str:
        """Configuration, output and log, for assertion messages."""
        output = self.output.read_text(errors="replace") if self.output.exists() else ""
        return (
            f"--- {self.config} ---\n{self.config.read_text()}"
            f"--- output ---\n{output}--- log ---\n{self.log_text()}"
        )

    def requests(self, since: int = 0) -> list[ProxiedRequest]:
        """Every request line the proxy received, oldest first (refused ones included)."""
        return [
            ProxiedRequest(m["method"], m["target"])
            for m in _REQUEST.finditer(self.log_text(since))
        ]

    def connects(self, port: int | None = None, since: int = 0) -> list[str]:
        """The `host:port` targets of CONNECT requests (only those to `port`, if given)."""
        targets = [r.target for r in self.requests(since) if r.method == "CONNECT"]
        if port is not None:
            targets = [t for t in targets if t.rsplit(":", 1)[-1] == str(port)]
        return targets

    def established(self, since: int = 0) -> list[str]:
        """Hosts the proxy opened a connection to on a client's behalf (after auth)."""
        return [m["host"] for m in _ESTABLISHED.finditer(self.log_text(since))]
