"""Every secret the tests make, and every log and answer they saw: none may hold any secret.

The support code records each secret it makes or reads (API tokens, passwords, session
and refresh tokens, signing keys, client secrets, secrets in a config file) and each
place output lands (an appliance's log file, a CLI's captured stdout and stderr, an
error answer's body). `tests/conftest.py` scans them all when the pytest process ends
(each xdist worker its own) and fails the run naming the place and the kind of secret
that leaked, never the secret itself.

A secret may appear where it is meant to be shown: `token create` prints the token it
made. That output is named when the secret is recorded (`shown_in`) and not scanned for
it. Secrets shorter than `MIN_LENGTH` are not recorded: tests use `alice` as Alice's
password too, and a name is no leak.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIN_LENGTH = 8
#: Config keys whose values are secrets (`bind_password`, `client_secret`, `secret_access_key`).
SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
#: Keys that name where a secret is, not the secret (`client_secret_file`, `bind_password_env`).
POINTER_KEY = re.compile(r"_(file|env)$")


@dataclass(frozen=True)
class Leak:
    """A secret of kind `kind` found in `where` (a file path or a described output)."""

    where: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} found in {self.where}"


@dataclass
class LeakRegistry:
    """The secrets and outputs of one pytest process."""

    #: value -> (kind, ids of the outputs that may show it)
    secrets: dict[str, tuple[str, set[int]]] = field(default_factory=dict)
    log_files: set[Path] = field(default_factory=set)
    #: (description, text) of captured outputs and error answers
    outputs: list[tuple[str, str]] = field(default_factory=list)
    #: data directories whose `keys/` hold signing keys, read when scanning
    key_dirs: set[Path] = field(default_factory=set)

    def secret(self, kind: str, value: str, shown_in: str | None = None) -> None:
        """Record `value`, a secret of `kind`; `shown_in` is the output that prints it."""
        if len(value) < MIN_LENGTH:
            return
        _, shown = self.secrets.setdefault(value, (kind, set()))
        if shown_in is not None:
            shown.add(id(shown_in))

    def config_secrets(self, where: str, tables: Mapping[str, object]) -> None:
        """Record every value under a secret-sounding key of a config's tables (nested)."""
        for key, value in tables.items():
            if isinstance(value, Mapping):
                self.config_secrets(f"{where}.{key}" if where else key, value)
            elif (
                isinstance(value, str | int)
                and SECRET_KEY.search(key)
                and not POINTER_KEY.search(key)
            ):
                self.secret(f"config value {where}.{key}", str(value))

    def log_file(self, path: Path) -> None:
        self.log_files.add(path)

    def output(self, where: str, text: str) -> None:
        """Record output that must hold no secret (but those it is named as showing)."""
        if text:
            self.outputs.append((where, text))

    def data_dir(self, path: Path) -> None:
        """An appliance's data directory: its signing keys are secrets, read at the end."""
        self.key_dirs.add(path / "keys")

    def leaks(self) -> list[Leak]:
        """Every (place, kind) where a recorded secret appears."""
        for directory in sorted(self.key_dirs):
            for key_file in sorted(directory.glob("*.pem")) if directory.is_dir() else []:
                for material in key_material(key_file.read_text(errors="replace")):
                    self.secret("session signing key", material)
        found: list[Leak] = []
        for path in sorted(self.log_files):
            if path.is_file():
                found += self._scan(str(path), path.read_text(errors="replace"), None)
        for where, text in self.outputs:
            found += self._scan(where, text, text)
        return list(dict.fromkeys(found))

    def _scan(self, where: str, text: str, output: str | None) -> list[Leak]:
        return [
            Leak(where, kind)
            for value, (kind, shown) in self.secrets.items()
            if value in text and (output is None or id(output) not in shown)
        ]


def key_material(pem: str) -> list[str]:
    """What of a PEM private key would show in a leak: each line of its base64 body, and
    its raw bytes in the URL-safe base64 of a JWK's `d`."""
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    found = [line for line in body if len(line) >= MIN_LENGTH]
    try:
        der = base64.b64decode("".join(body))
    except ValueError:
        return found
    if len(der) >= 32:  # PKCS#8 Ed25519: the 32-byte seed ends the structure
        found.append(base64.urlsafe_b64encode(der[-32:]).decode().rstrip("="))
    return found


def session_secrets(answer: Mapping[str, object]) -> list[tuple[str, str]]:
    """(kind, value) of the tokens in a sign-in or refresh answer."""
    kinds = {
        "token": "session JWT",
        "access_token": "session JWT",
        "refresh_token": "refresh token",
    }
    found = [
        (kind, value) for key, kind in kinds.items() if isinstance(value := answer.get(key), str)
    ]
    made = answer.get("api_token")  # PUT /api/v1/me/tokens shows the new token once
    if isinstance(made, Mapping) and isinstance(value := made.get("token"), str):
        found.append(("API token", value))
    return found


#: A webhook's signing secret, as `webhook add` and `POST .../webhooks` show it once.
WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9_-]{16,}")


def webhook_secrets(text: str) -> list[str]:
    return WEBHOOK_SECRET.findall(text)


def report(leaks: list[Leak]) -> str:
    lines = [f"{len(leaks)} secret(s) leaked into logs, CLI output or error answers:"]
    lines += [f"  - {leak}" for leak in leaks]
    return "\n".join(lines)


#: The secrets and outputs of this pytest process (each xdist worker has its own).
LEAKS = LeakRegistry()
