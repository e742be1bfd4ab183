"""What a command needs of the machine, checked before it starts: one line per problem.

A `data_dir` that is a file or not writable, a CA bundle that cannot be read,
AWS credentials that cannot be read, or (for `serve`) an address already in
use would otherwise surface as a traceback from deep inside start-up. Each
problem is one sentence naming the setting and where it was set;
`check-config` and every command report them the same way and exit 2.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sqlite3
import ssl
import tempfile
from pathlib import Path

from ghostcrate.appliance.sso.providers import secret_problem
from ghostcrate.config import LoadedSettings
from ghostcrate.private.db import newer_schema
from ghostcrate.private.ldap_password import bind_password_problem
from ghostcrate.private.registry import registry_database


def problems(loaded: LoadedSettings) -> list[str]:
    """What is wrong with the machine for these settings (the address is not checked)."""
    settings = loaded.settings
    found = _data_dir(settings.data_dir, _origin(loaded, "data_dir"))
    if settings.upstream.ca_bundle is not None:
        found += _ca_bundle(settings.upstream.ca_bundle, _origin(loaded, "upstream.ca_bundle"))
    if settings.s3 is not None and settings.s3.access_key_id is None:
        found += _aws_credentials()
    if settings.auth.ldap is not None:
        problem = bind_password_problem(settings.auth.ldap, dict(os.environ))
        key = "env" if settings.auth.ldap.bind_password_env is not None else "file"
        origin = _origin(loaded, f"auth.ldap.bind_password_{key}")
        found += [] if problem is None else [f"{problem} ({origin})"]
    found += [
        problem
        for provider in settings.auth.oidc
        if (problem := secret_problem(provider, dict(os.environ))) is not None
    ]
    return found + _registry_database(registry_database(settings))


def address_in_use(host: str, port: int) -> str | None:
    """Why `serve` cannot listen on host:port, if it cannot (a test bind, closed at once).

    The bind is made without SO_REUSEPORT, so it also fails while another GhostCrate
    (whose workers share the port with SO_REUSEPORT) is listening there.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((host, port))
        except OSError as error:
            return cannot_listen(host, port, error)
    return None


def cannot_listen(host: str, port: int, error: OSError) -> str:
    """The one line that says why binding host:port failed."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {shown}: address already in use "
            "(is another GhostCrate running? see [server] listen)"
        )
    return f"cannot listen on {shown}: {error.strerror} (see [server] listen)"


def _data_dir(path: Path, origin: str) -> list[str]:
    if path.exists() and not path.is_dir():
        return [f"data_dir {path} is not a directory ({origin})"]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        return [f"data_dir {path} is not writable: {error.strerror} ({origin})"]
    return []


def _registry_database(path: Path) -> list[str]:
    """A registry database that a newer GhostCrate migrated (or that is no database)."""
    if not path.is_file():
        return []  # made on first start
    try:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as error:
        return [f"the registry database {path} cannot be read: {error}"]
    problem = newer_schema(version)
    return [] if problem is None else [f"{problem} ({path})"]


def _ca_bundle(path: Path, origin: str) -> list[str]:
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except OSError as error:
        return [f"[upstream] ca_bundle {path} cannot be read: {error.strerror} ({origin})"]
    except ssl.SSLError:
        return [f"[upstream] ca_bundle {path} holds no PEM certificate ({origin})"]
    return []


def _aws_credentials() -> list[str]:
    """The shared credentials and config files botocore reads when [s3] sets no keys."""
    found = []
    for variable, default in (
        ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        ("AWS_CONFIG_FILE", "~/.aws/config"),
    ):
        path = Path(os.environ.get(variable, default)).expanduser()
        if not path.exists():
            continue  # the chain goes on (environment, instance role)
        try:
            path.read_bytes()
        except OSError as error:
            found.append(
                f"{path} cannot be read ({error.strerror}), and [s3] sets no access_key_id: "
                f"the S3 tier takes its credentials from there (or from {variable})"
            )
    return found


def _origin(loaded: LoadedSettings, key: str) -> str:
    origin = loaded.origins.get(key, "default")
    if origin == "default":
        return "the default; set it in the config file"
    if origin.startswith("environment variable") or origin == "command line":
        return f"set by the {origin}"
    return f"set in {origin}"
