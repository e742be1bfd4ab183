"""Driving the private registry as its users do: packages on disk, cargo publish, tokens."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv
from tests.support.crates import CrateSpec, crate_files
from tests.support.leaks import LEAKS

REGISTRY = "ghostcrate"


def configure_registry(cargo: CargoEnv, appliance: Appliance, token: str | None = None) -> None:
    """The README's snippet: crates-io replaced by the appliance, which is also a registry."""
    cargo.configure_replacement(appliance.index_url)
    with cargo.config_path.open("a") as config:
        config.write(f'\n[registries.{REGISTRY}]\nindex = "sparse+{appliance.index_url}"\n')
        # cargo sends a token to a registry that asks for one (`auth-required`, or a 401)
        # only through a credential provider it is told to use.
        config.write('\n[registry]\nglobal-credential-providers = ["cargo:token"]\n')
    if token is not None:
        (cargo.home / "credentials.toml").write_text(
            f'[registries.{REGISTRY}]\ntoken = "{token}"\n'
        )


def write_package(root: Path, spec: CrateSpec, registry_deps: tuple[str, ...] = ()) -> Path:
    """The package's source tree at `root` (what `cargo publish` packs).

    Dependencies named in `registry_deps` are written with `registry = "ghostcrate"`;
    the others as plain crates.io dependencies (which the mirror replaces).
    """
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in crate_files(spec).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    manifest = (root / "Cargo.toml").read_text()
    for dep in registry_deps:
        manifest = manifest.replace(f"{dep} = {{ ", f'{dep} = {{ registry = "{REGISTRY}", ', 1)
    (root / "Cargo.toml").write_text(manifest + "\n[workspace]\n")
    return root


def publish(
    cargo: CargoEnv,
    package: Path,
    *,
    check: bool = True,
    verify: bool = False,
    token: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`cargo publish --no-verify` of `package`; `token` instead of the configured one."""
    args = ["publish", "--registry", REGISTRY, "--allow-dirty"]
    if not verify:
        args.append("--no-verify")
    return cargo.run(args, package, check=check, env=token_env(token))


def yank(
    cargo: CargoEnv,
    crate: str,
    version: str,
    *,
    undo: bool = False,
    check: bool = True,
    token: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`cargo yank [--undo] --version VERSION CRATE`; `token` instead of the configured one."""
    args = ["yank", "--registry", REGISTRY, "--version", version, crate]
    if undo:
        args.insert(1, "--undo")
    return cargo.run(args, cargo.root, check=check, env=token_env(token))


def owner(
    cargo: CargoEnv, crate: str, *options: str, check: bool = True, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`cargo owner OPTIONS CRATE` (`--add bob`, `--remove bob`, `--list`)."""
    args = ["owner", "--registry", REGISTRY, *options, crate]
    return cargo.run(args, cargo.root, check=check, env=token_env(token))


def token_env(token: str | None) -> dict[str, str]:
    """The environment that makes cargo use `token` for this registry (none: the configured one)."""
    return {} if token is None else {f"CARGO_REGISTRIES_{REGISTRY.upper()}_TOKEN": token}


def add_user(appliance: Appliance, name: str, *, admin: bool = False) -> None:
    result = appliance.run("user", "add", name, *(["--admin"] if admin else []))
    assert result.returncode == 0, result.stderr


def create_token(appliance: Appliance, user: str, *options: str) -> str:
    result = appliance.run("token", "create", "--user", user, *options)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    LEAKS.secret("API token", token, shown_in=result.stdout)
    assert token.startswith("gcr_"), result.stdout
    assert "\n" not in token, result.stdout  # the token alone on standard output
    return token


def errors(body: bytes) -> str:
    """The `detail` of cargo's error format."""
    return str(json.loads(body)["errors"][0]["detail"])


def stored(appliance: Appliance) -> tuple[int, list[str]]:
    """Versions in the registry database, and every file below `private/crates`."""
    private = appliance.data_dir / "private"
    with closing(sqlite3.connect(private / "registry.db")) as db:
        (versions,) = db.execute("SELECT count(*) FROM versions").fetchone()
    files = sorted(p.name for p in (private / "crates").rglob("*") if p.is_file())
    return versions, files


def crate_rows(appliance: Appliance) -> list[str]:
    """The names of the private crates, as recorded."""
    with closing(sqlite3.connect(appliance.data_dir / "private" / "registry.db")) as db:
        return sorted(row[0] for row in db.execute("SELECT name FROM crates"))


def json_call(
    appliance: Appliance, method: str, path: str, token: str | None, body: object = None
) -> tuple[int, Any]:
    """Status and JSON answer of one API request (`body` sent as JSON)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    data = None if body is None else json.dumps(body).encode()
    status, answer = appliance.request(method, path, data, headers)
    return status, json.loads(answer)
