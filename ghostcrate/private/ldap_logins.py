"""Signing in with a directory password (`[auth.ldap]`), for `Logins`.

A name that is not a local account with a password is looked up in the
directory with the service account, and the password is checked by binding as
the user's DN. The first sign-in registers the user as an identity of provider
"ldap" (its subject the DN, as single sign-on registers its users), named as
signed in unless another user has that name (then `NAME-ldap`: an account is
never taken over); `ghostcrate user set-password` does not apply to them.
Every sign-in applies the group mapping again. Every refusal is `Logins`' own
(403, the same words), after a log line with the reason; a directory that
cannot be asked is a 503 that says so, because nothing could be decided.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from ghostcrate.private.accounts import LDAP_PROVIDER, User
from ghostcrate.private.errors import Forbidden, RegistryError
from ghostcrate.private.identities import Identities
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
        identities: Identities,
        directory: Directory,
        mapping: GroupMapping,
        applied: Callable[[int], Awaitable[None]],
    ) -> None:
        self._identities = identities
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
        user = await self._local_user(name, verdict.dn, verdict.groups)
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

    async def _local_user(self, name: str, dn: str, groups: tuple[str, ...]) -> User:
        """The user of identity `dn` (provider "ldap"), registered on its first sign-in."""
        signed_in = await self._identities.sign_in(LDAP_PROVIDER, dn, name, {"groups": groups})
        if signed_in.seq is not None:
            await self._applied(signed_in.seq)
            log.info(
                "user registered", extra={"user": signed_in.user.name, "via": self.via, "dn": dn}
            )
        return signed_in.user

    def _refuse(self, name: str, remote: str | None, reason: str) -> NoReturn:
        log.warning(
            "sign-in failed",
            extra={"login": name, "remote": remote, "via": self.via, "reason": reason},
        )
        raise Forbidden(REFUSED)
