"""The Ed25519 keys that sign session tokens, one PEM file each in `data_dir/keys`.

A key's id (`kid`, in each token's header) begins with its creation time in
nanoseconds (hex), so the newest key sorts last: it signs, and the older ones
only verify until the tokens they signed have expired (their lifetime after the
next key was made, and a minute for clocks that differ); then `rotate` or the
next start removes them. The
directory is 0700 and each file is written 0600 from its first byte, under a
temporary name, then renamed: no key is ever readable by others, or half written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

PREFIX, SUFFIX = "session-", ".pem"
#: Kept beyond the lifetime of the tokens a retired key signed, for clocks that differ.
LEEWAY_SECONDS = 60.0


def keep_seconds(token_lifetime: float) -> float:
    """How long a retired key must still verify, for tokens that live `token_lifetime` s."""
    return token_lifetime + LEEWAY_SECONDS


#: Least time between two reloads caused by a token with an unknown key id.
RELOAD_SECONDS = 1.0


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


class SigningKeys:
    """The keys in one directory, loaded when first needed and again after a rotation."""

    def __init__(self, directory: Path, keep: float) -> None:
        self.directory = directory
        #: Seconds a retired key still verifies (`keep_seconds`).
        self.keep = keep
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._loaded_at = 0.0
        self._stale = True
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """Read the directory again before the next use (a key may have been rotated)."""
        self._stale = True

    async def load(self) -> None:
        """Read the keys, making the first one if there is none (at first start)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            self._keys = await loop.run_in_executor(None, _load, self.directory, self.keep)
            self._loaded_at = time.monotonic()
            self._stale = False

    async def signing(self) -> tuple[str, Ed25519PrivateKey]:
        """The newest key and its id."""
        if self._stale or not self._keys:
            await self.load()
        kid = max(self._keys)
        return kid, self._keys[kid]

    async def public(self, kid: str) -> Ed25519PublicKey | None:
        """The key that verifies tokens with header `kid`; an unknown id reloads the
        directory (at most once a second), for a key another process has made."""
        if self._stale or (
            kid not in self._keys and time.monotonic() - self._loaded_at >= RELOAD_SECONDS
        ):
            await self.load()
        key = self._keys.get(kid)
        return key.public_key() if key is not None else None


def rotate(directory: Path, keep: float) -> str:
    """Make a new signing key (older ones verify `keep` s more: `keep_seconds`); its id."""
    with _locked(directory):
        kid = _create(directory)
        _remove_retired(directory, keep)
        return kid


def key_ids(directory: Path) -> list[str]:
    """The ids of the keys in `directory`, oldest first."""
    return sorted(
        path.name.removeprefix(PREFIX).removesuffix(SUFFIX)
        for path in directory.glob(f"{PREFIX}*{SUFFIX}")
    )


def _load(directory: Path, keep: float) -> dict[str, Ed25519PrivateKey]:
    with _locked(directory):
        if not key_ids(directory):
            _create(directory)
        _remove_retired(directory, keep)
        keys: dict[str, Ed25519PrivateKey] = {}
        for kid in key_ids(directory):
            with contextlib.suppress(FileNotFoundError):
                key = serialization.load_pem_private_key(_path(directory, kid).read_bytes(), None)
                if isinstance(key, Ed25519PrivateKey):
                    keys[kid] = key
        return keys


def _path(directory: Path, kid: str) -> Path:
    return directory / f"{PREFIX}{kid}{SUFFIX}"


def _locked(directory: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the directory's lock (made 0700 if new) while keys are made or removed."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    if directory.stat().st_mode & 0o777 != 0o700:
        directory.chmod(0o700)  # mkdir's mode is narrowed by the umask; never widened
    return _flock(directory / ".lock")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create(directory: Path) -> str:
    kid = f"{time.time_ns():016x}{secrets.token_hex(4)}"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = directory / f".{kid}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    temporary.rename(_path(directory, kid))
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    log.info("session signing key created", extra={"kid": kid})
    return kid


def _remove_retired(directory: Path, keep: float) -> None:
    """Remove each key whose successor was made more than `keep` seconds ago."""
    kids = key_ids(directory)
    for kid, successor in itertools.pairwise(kids):
        retired_at = int(successor[:16], 16) / 1e9
        if retired_at + keep < time.time():
            with contextlib.suppress(FileNotFoundError):
                _path(directory, kid).unlink()
                log.info("session signing key removed", extra={"kid": kid})
