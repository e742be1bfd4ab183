"""Signing in with a directory password (`[auth.ldap]`), for `Logins`.

A name that is not a local account with a password is looked up in the
directory with the service account, and the password is checked by binding as
the user's DN. The first sign-in registers the user (marked as the directory's:
`ghostcrate user set-password` does not apply to them); every sign-in applies
the group mapping again. A local user without a password that the directory
did not register is not taken over. Every refusal is `Logins`' own (403, the
same words), after a log line with the reason; a directory that cannot be asked
is a 503 that says so, because nothing could be decided.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from ghostcrate.private.accounts import Accounts, User
from ghostcrate.private.errors import Conflict, Forbidden, RegistryError
from ghostcrate.private.ldap_directory import Directory, DirectoryDown
from ghostcrate.private.ldap_groups import GroupMapping
from ghostcrate.private.logins import REFUSED

log = logging.getLogger(__name__)

UNAVAILABLE = (
    "sign-in is not possible right now: the directory (LDAP) server does not answer; "
    "try again later"
)


class DirectoryLogins:
    """Sign-in through the directory; `via` names it in sessions and the log."""

    via = "ldap"

    def __init__(
        self,
        accounts: Accounts,
        directory: Directory,
        mapping: GroupMapping,
        applied: Callable[[int], Awaitable[None]],
    ) -> None:
        self._accounts = accounts
        self._directory = directory
        self._mapping = mapping
        self._applied = applied

    async def sign_in(self, name: str, password: str, remote: str | None) -> User:
        """The user the directory vouches for; `Forbidden` (or a 503) otherwise."""
        try:
            verdict = await self._directory.check(name, password)
        except DirectoryDown as error:
            log.warning(
                "sign-in failed",
                extra={
                    "login": name,
                    "remote": remote,
                    "via": self.via,
                    "reason": "directory unavailable",
                    "error": str(error),
                },
            )
            raise RegistryError(UNAVAILABLE, status=503) from None
        if verdict.dn is None:
            self._refuse(name, remote, verdict.reason)
        user = await self._local_user(name, verdict.dn, remote)
        if user.disabled:
            self._refuse(name, remote, "disabled")
        seq = await self._mapping.apply(user.id, user.name, verdict.groups)
        if seq is not None:
            await self._applied(seq)
        log.info(
            "directory groups",
            extra={"user": user.name, "dn": verdict.dn, "groups": list(verdict.groups)},
        )
        return user

    async def _local_user(self, name: str, dn: str, remote: str | None) -> User:
        """The local user for directory user `dn`, registered on their first sign-in."""
        user = await self._accounts.user(name)
        if user is None:
            try:
                user, seq = await self._accounts.add_user(name, ldap_dn=dn)
            except Conflict:  # a parallel first sign-in registered them a moment ago
                user = await self._accounts.user(name)
                assert user is not None
            except RegistryError:
                self._refuse(name, remote, "name not usable as a user name here")
            else:
                await self._applied(seq)
                log.info("user registered", extra={"user": user.name, "via": self.via, "dn": dn})
                return user
        if await self._accounts.ldap_dn(user.id) is None:
            self._refuse(name, remote, "a local user the directory did not register")
        return user

    def _refuse(self, name: str, remote: str | None, reason: str) -> NoReturn:
        log.warning(
            "sign-in failed",
            extra={"login": name, "remote": remote, "via": self.via, "reason": reason},
        )
        raise Forbidden(REFUSED)
