"""Signing in with a name and a password: throttled, and telling nothing of who exists.

An unknown name, a wrong password, a user without a password and a disabled
user all get the same refusal after the same work (a hash is checked in every
case), and all count towards the throttle; a throttled sign-in is refused
before any password is looked at, with the same answer for every name.
"""

from __future__ import annotations

import logging

from ghostcrate.private.accounts import Accounts, User
from ghostcrate.private.errors import Forbidden, TooManyRequests
from ghostcrate.private.login_throttle import LoginThrottle
from ghostcrate.private.sessions import IssuedSession, Sessions

log = logging.getLogger(__name__)

REFUSED = "sign-in failed: the name or the password is wrong"


class Logins:
    def __init__(self, accounts: Accounts, sessions: Sessions, throttle: LoginThrottle) -> None:
        self._accounts = accounts
        self._sessions = sessions
        self._throttle = throttle

    async def login(
        self, name: str, password: str, remote: str | None
    ) -> tuple[IssuedSession, User]:
        """A new session for `name`; `Forbidden` or `TooManyRequests`, the same for everyone."""
        try:
            counted = await self._throttle.attempt(name, remote)
        except TooManyRequests as error:
            log.warning(
                "sign-in throttled",
                extra={"login": name, "remote": remote, "retry_after": error.retry_after},
            )
            raise
        found = await self._accounts.password_hash(name)
        user, stored = found if found is not None else (None, None)
        checked = await self._accounts.passwords.check(stored, password)
        if user is None or not checked.ok or user.disabled:
            reason = "unknown user" if user is None else "disabled" if checked.ok else "password"
            log.warning("sign-in failed", extra={"login": name, "remote": remote, "reason": reason})
            raise Forbidden(REFUSED)
        if checked.needs_rehash and stored is not None:
            await self._accounts.rehash(user.id, stored, password)
            log.info("password rehashed", extra={"user": user.name})
        await self._throttle.succeeded(name, counted)
        issued = await self._sessions.issue(user, via="password")
        log.info("signed in", extra={"user": user.name, "remote": remote, "via": "password"})
        return issued, user
