"""Password hashes: argon2id (`argon2-cffi`), computed off the event loop.

A hash records its own parameters, so a hash made with older (weaker) ones
still verifies; `verify` then says it needs rehashing, and the caller stores a
new hash at that sign-in (`PasswordHasher.check_needs_rehash`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: Longest password accepted: argon2 takes any length, but a megabyte is no password.
MAX_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of checking a password against a hash."""

    ok: bool
    #: The hash was made with other parameters than today's: store a new one.
    needs_rehash: bool = False


class Passwords:
    """Hashes and checks passwords with one parameter set (argon2-cffi's defaults)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.hasher.hash, password)

    async def check(self, stored: str | None, password: str) -> Checked:
        """Whether `password` matches `stored`; with no hash (an unknown user, or one without
        a password) a dummy hash is checked, so that the answer takes as long."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._check, stored, password)

    def _check(self, stored: str | None, password: str) -> Checked:
        try:
            self.hasher.verify(stored or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return Checked(ok=False)
        if stored is None:
            return Checked(ok=False)
        return Checked(ok=True, needs_rehash=self.hasher.check_needs_rehash(stored))

    @cached_property
    def _dummy(self) -> str:
        return self.hasher.hash("not a password of anyone")


def password_problem(password: str) -> str | None:
    """Why `password` cannot be set, if it cannot."""
    if len(password) < 8:
        return "the password must have at least 8 characters"
    if len(password) > MAX_LENGTH:
        return f"the password must have at most {MAX_LENGTH} characters"
    return None
