"""Run the real `cargo` with a throw-away CARGO_HOME pointed at a test registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@dataclass(frozen=True)
class LockedPackage:
    """One `[[package]]` entry of a Cargo.lock."""

    name: str
    version: str
    source: str | None
    checksum: str | None


def read_lockfile(path: Path) -> list[LockedPackage]:
    """The packages recorded in the Cargo.lock at `path` (a file or its directory)."""
    if path.is_dir():
        path = path / "Cargo.lock"
    data = tomllib.loads(path.read_text())
    return [
        LockedPackage(p["name"], p["version"], p.get("source"), p.get("checksum"))
        for p in data.get("package", [])
    ]


def _clean_env(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without proxies or cargo settings that would leak into the test."""
    return {
        k: v
        for k, v in base.items()
        if k.lower() not in _PROXY_VARS
        and not k.startswith("CARGO_")
        and k not in ("RUSTC_WRAPPER", "RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER")
    }


class CargoEnv:
    """A private CARGO_HOME and target directory; `run()` invokes cargo inside them."""

    def __init__(self, root: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cargoenv-")
            root = Path(self._tmp.name)
        self.root = root
        self.home = root / "cargo-home"
        self.target_dir = root / "target"
        self.home.mkdir(parents=True, exist_ok=True)
        self.target_dir.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        """`$CARGO_HOME/config.toml`."""
        return self.home / "config.toml"

    def configure_replacement(
        self, index_url: str, *, retry: int = 0, http_timeout: int | None = None
    ) -> None:
        """Send all crates.io traffic to the sparse index at `index_url`."""
        if not index_url.endswith("/"):
            index_url += "/"
        lines = [
            "[source.crates-io]",
            'replace-with = "mirror"',
            "",
            "[source.mirror]",
            f'registry = "sparse+{index_url}"',
            "",
            "[registries.crates-io]",
            'protocol = "sparse"',
            "",
            "[net]",
            f"retry = {retry}",
            "git-fetch-with-cli = false",
        ]
        if http_timeout is not None:
            lines += ["", "[http]", f"timeout = {http_timeout}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment cargo runs with."""
        env = _clean_env(os.environ)
        env.update(
            CARGO_HOME=str(self.home),
            CARGO_TARGET_DIR=str(self.target_dir),
            CARGO_TERM_COLOR="never",
            CARGO_TERM_PROGRESS_WHEN="never",
            CARGO_INCREMENTAL="0",
        )
        env.update(extra or {})
        return env

    def run(
        self,
        args: Sequence[str],
        cwd: Path,
        *,
        check: bool = True,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cargo *args` in `cwd` (`stdin` as its input); with `check`, a failure raises."""
        cmd = ["cargo", *args]
        try:
            result = subprocess.run(
                cmd,
                cwd=cwd,
                env=self.env(env),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{' '.join(cmd)} timed out after {timeout}s\n"
                f"--- stderr ---\n{_text(exc.stderr)}\n--- stdout ---\n{_text(exc.stdout)}"
            ) from exc
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed with exit status {result.returncode}\n"
                f"--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}"
            )
        return result

    def binary(self, name: str, profile: str = "debug") -> Path:
        """The path of a built binary in the shared target directory."""
        return self.target_dir / profile / name

    def cached_crates(self) -> list[str]:
        """File names of the `.crate` archives cargo has downloaded into CARGO_HOME."""
        cache = self.home / "registry" / "cache"
        return sorted(p.name for p in cache.glob("*/*.crate"))

    def clear_registry_cache(self) -> None:
        """Forget downloaded crates and index caches, so the next run fetches again."""
        shutil.rmtree(self.home / "registry", ignore_errors=True)

    def close(self) -> None:
        """Remove the temporary directory, if this env created it."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> CargoEnv:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
