"""The directory `[auth.ldap]` names (OpenLDAP, Active Directory): who a name is there,
whether a password is theirs, and which groups they are in.

ldap3 is synchronous, so each check runs in a thread, bounded by `timeout` per
connection and answer (and by a few times it in all). The name is escaped as
RFC 4515 says before it goes into a filter, so `*)(uid=*` finds nobody; an
empty password is refused before any bind, because a simple bind with a DN
and no password is an "unauthenticated bind" that servers accept (RFC 4513
5.1.2).
"""

from __future__ import annotations

import asyncio
import math
import os
import ssl
from dataclasses import dataclass

from ldap3 import NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from ghostcrate.config.model import LdapSettings
from ghostcrate.private.ldap_password import bind_password


class DirectoryDown(Exception):
    """The directory could not be asked (unreachable, timed out, service account refused)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the directory said of a name and a password."""

    #: The user's DN when the password is theirs, else None.
    dn: str | None
    #: Why not, for the log: "unknown user", "ambiguous name", "password", "empty password".
    reason: str = ""
    #: The DNs of the user's groups.
    groups: tuple[str, ...] = ()


def normal_dn(dn: str) -> str:
    """A DN compared as directories compare them: attribute names and values in any case,
    spaces around `,` and `=` ignored (`CN=Ops, OU=Groups` is `cn=ops,ou=groups`)."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return dn.strip().lower()
    return ",".join(f"{kind.strip().lower()}={value.strip().lower()}" for kind, value, _ in parts)


def common_name(dn: str) -> str | None:
    """The CN of a DN whose first part is `cn=...` (a group's usual name), lowercase."""
    try:
        kind, value, _ = parse_dn(dn, strip=True)[0]
    except (LDAPException, IndexError):
        return None
    return value.strip().lower() if kind.strip().lower() == "cn" else None


class Directory:
    def __init__(self, settings: LdapSettings, password: str | None) -> None:
        self._settings = settings
        self._password = password
        tls = None
        if settings.url.startswith("ldaps:") or settings.start_tls:
            tls = Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=str(settings.ca_file) if settings.ca_file is not None else None,
            )
        self._server = Server(
            settings.url,
            use_ssl=settings.url.startswith("ldaps:"),
            tls=tls,
            connect_timeout=settings.timeout,
            get_info=NONE,
        )

    @classmethod
    def from_settings(cls, settings: LdapSettings) -> Directory:
        return cls(settings, bind_password(settings, dict(os.environ)))

    async def check(self, name: str, password: str) -> Verdict:
        """Whether `password` is the password of the user `name`; `DirectoryDown` if the
        directory cannot say."""
        if not password:
            return Verdict(None, "empty password")
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, self._check, name, password)
        try:
            return await asyncio.wait_for(work, timeout=self._settings.timeout * 4)
        except TimeoutError:
            raise DirectoryDown(
                f"no answer within {self._settings.timeout * 4:g} s ([auth.ldap] timeout)"
            ) from None

    def _connection(self, user: str | None, password: str | None) -> Connection:
        connection = Connection(
            self._server,
            user=user,
            password=password,
            authentication=SIMPLE if user is not None else None,
            receive_timeout=math.ceil(self._settings.timeout),  # whole seconds (SO_RCVTIMEO)
            read_only=True,
            raise_exceptions=False,
        )
        connection.open()
        if self._settings.start_tls and not connection.start_tls():
            raise DirectoryDown(f"StartTLS failed: {connection.result}")
        return connection

    def _check(self, name: str, password: str) -> Verdict:
        settings = self._settings
        try:
            service = self._connection(settings.bind_dn, self._password)
            try:
                if not service.bind():
                    raise DirectoryDown(
                        "the service account ([auth.ldap] bind_dn) was refused: "
                        f"{service.result.get('description')}"
                    )
                found = self._find_user(service, name)
                if isinstance(found, Verdict):
                    return found
                dn, listed = found
                if not self._password_is_right(dn, password):
                    return Verdict(None, "password")
                return Verdict(dn, groups=self._groups(service, dn, name, listed))
            finally:
                service.unbind()
        except (LDAPException, OSError) as error:
            raise DirectoryDown(f"{type(error).__name__}: {error}") from None

    def _find_user(self, service: Connection, name: str) -> Verdict | tuple[str, list[str]]:
        settings = self._settings
        attribute = settings.groups_attribute
        service.search(
            settings.user_base,
            settings.user_filter.format(name=escape_filter_chars(name)),
            SUBTREE,
            attributes=[attribute] if attribute else [],
            size_limit=2,
        )
        entries = [e for e in service.response or [] if e.get("type") == "searchResEntry"]
        if not entries:
            return Verdict(None, "unknown user")
        if len(entries) > 1:
            return Verdict(None, "ambiguous name")
        listed: list[str] = []
        if attribute:
            values = entries[0]["attributes"].get(attribute, [])
            listed = [str(v) for v in (values if isinstance(values, list) else [values])]
        return str(entries[0]["dn"]), listed

    def _password_is_right(self, dn: str, password: str) -> bool:
        user = self._connection(dn, password)
        try:
            return bool(user.bind())
        finally:
            user.unbind()

    def _groups(
        self, service: Connection, dn: str, name: str, listed: list[str]
    ) -> tuple[str, ...]:
        settings = self._settings
        groups = list(listed)
        if settings.group_base is not None:
            service.search(
                settings.group_base,
                settings.group_filter.format(
                    dn=escape_filter_chars(dn), name=escape_filter_chars(name)
                ),
                SUBTREE,
                attributes=[],
            )
            if service.result.get("result") != 0:  # groups not known: nothing can be decided
                raise DirectoryDown(f"the group search failed: {service.result.get('description')}")
            groups += [
                str(e["dn"]) for e in service.response or [] if e.get("type") == "searchResEntry"
            ]
        return tuple(dict.fromkeys(groups))
