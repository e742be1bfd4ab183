"""Build and run GhostCrate's container images with the real podman.

No container registry can be reached where the tests run, so the base image is
built from Debian packages with mmdebstrap (its tar cached outside the repository,
in `~/.cache/ghostcrate-tests/`) and imported as `BASE_IMAGE`; the images of
`docker/` are built on it, with the host's CA bundle mounted so pip reaches PyPI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BASE_IMAGE = "localhost/ghostcrate-base:12"
IMAGE = "localhost/ghostcrate-test:latest"
S3_IMAGE = "localhost/ghostcrate-s3-test:latest"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ghostcrate-tests"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
DEFAULT_MIRROR = "deb http://deb.debian.org/debian bookworm main"


def podman_problem() -> str | None:
    """Why podman cannot run containers here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/bootstrap-tests installs it as root)"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"podman info failed: {info.stderr.strip()[-300:]}"
    return None


def podman(
    *args: str, check: bool = True, timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `podman *args`; with `check`, a failure raises with its output."""
    return _run(["podman", *args], check=check, timeout=timeout, env=env)


def _run(
    command: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}"
        )
    return result


def apt_mirrors() -> list[str]:
    """The machine's own Debian 12 `deb` sources, one-line form, for mmdebstrap."""
    lines: list[str] = []
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2].startswith("bookworm"):
                lines.append(" ".join(words))
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            pairs = [line.partition(":") for line in stanza.splitlines() if ":" in line]
            fields = {k.strip(): v.strip() for k, _, v in pairs if not k.startswith("#")}
            if "deb" not in fields.get("Types", "").split():
                continue
            for uri in fields.get("URIs", "").split():
                for suite in fields.get("Suites", "").split():
                    if suite.startswith("bookworm"):
                        lines.append(f"deb {uri} {suite} {fields.get('Components', 'main')}")
    return lines or [DEFAULT_MIRROR]


def ensure_base_image() -> None:
    """Import `BASE_IMAGE` from the cached Debian tar, building the tar if it is missing."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    tar = CACHE / "base.tar"
    if not tar.exists():
        if shutil.which("mmdebstrap") is None:
            raise AssertionError("mmdebstrap is missing: scripts/bootstrap-tests installs it")
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / "base.tar.part"
        _run(
            [
                "mmdebstrap",
                "--quiet",
                "--format=tar",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(partial),
                *apt_mirrors(),
            ],
            timeout=600,
        )
        partial.rename(tar)
    podman("import", "--change", 'CMD ["/bin/bash"]', str(tar), BASE_IMAGE, timeout=300)


class Build:
    """`podman build` of `containerfile` on `BASE_IMAGE` (the repository as context),
    started in the background; `wait()` for it."""

    def __init__(self, tag: str, containerfile: Path) -> None:
        mounts = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.exists() else []
        self.tag = tag
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        self._started = time.monotonic()
        self._result: tuple[float, str] | None = None
        self._process = subprocess.Popen(
            [
                "podman",
                "build",
                "--format",
                "docker",
                "--quiet",
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                *mounts,
                "-t",
                tag,
                "-f",
                str(containerfile),
                str(ROOT),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 600) -> float:
        """Wait until the build ends; the seconds it took. A failure raises with its output."""
        if self._result is None:
            try:
                status = self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                status = self._process.wait()
            self._output.seek(0)
            output = self._output.read().decode(errors="replace")
            self._output.close()
            seconds = time.monotonic() - self._started
            failure = f"podman build of {self.tag} exited {status}\n{output}" if status else ""
            self._result = (seconds, failure)
        seconds, failure = self._result
        if failure:
            raise AssertionError(failure)
        return seconds


def inspect(name: str, kind: str = "container") -> dict[str, Any]:
    """`podman <kind> inspect NAME` as a dict."""
    answer: list[dict[str, Any]] = json.loads(podman(kind, "inspect", name).stdout)
    return answer[0]


@contextmanager
def container(
    name: str, *args: str, image: str = IMAGE, command: Sequence[str] = ()
) -> Iterator[str]:
    """`podman run -d --name NAME *args IMAGE *command`; removed (with its volumes) on exit."""
    podman("run", "-d", "--name", name, *args, image, *command)
    try:
        yield name
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


def wait_http(url: str, timeout: float = 30.0) -> bytes:
    """GET `url` until it answers 200 (no proxy); the body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2) as answer:
                body: bytes = answer.read()
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
