"""Where an organisation's webhook may send: public addresses, and what the operator allows.

An organisation's admins choose its webhooks' URLs, so a URL must not make the
appliance reach what only it can reach (OWASP API7, server-side request
forgery): loopback, private, link-local (169.254.169.254, the cloud metadata
service) and every other non-public address are refused unless `[webhooks]
allow_targets` names the host or a range holding the address. The check runs
when the webhook is added and again on every address each delivery connects
to, so a name that later resolves elsewhere (DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ghostcrate.private.errors import RegistryError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(RegistryError):
    """A webhook URL that may not be used (400)."""


@dataclass(frozen=True, slots=True)
class Targets:
    """The hosts and ranges an organisation's webhook may reach beyond public addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allowed: list[str]) -> Targets:
        """From `[webhooks] allow_targets` (host names, addresses and CIDR ranges)."""
        hosts, networks = set(), []
        for entry in allowed:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows(self, address: Address) -> bool:
        """Whether a connection to `address` is allowed (public, or in an allowed range)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast


#: The longest webhook URL taken (browsers' and most servers' practical limit).
MAX_URL = 2048


def split_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials; else `TargetRefused`."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"a webhook URL may be {MAX_URL} characters long at most")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused(f"webhook URL {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"webhook URL {url!r} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("a webhook URL must not hold credentials: the body is signed")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target(url: str, targets: Targets) -> None:
    """Refuse (`TargetRefused`, 400) a URL whose host is, or resolves to, a refused address."""
    host, port = split_url(url)
    if targets.allows_host(host):
        return
    for address in await resolve(host, port):
        if not targets.allows(address):
            raise TargetRefused(
                f"webhook URL {url!r} reaches {address}, an internal address: webhooks go "
                "to public addresses only, unless the operator lists the host or its range "
                "in [webhooks] allow_targets"
            )


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (itself, for an address); `TargetRefused` if none."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise TargetRefused(f"webhook host {host!r} cannot be resolved: {error}") from None
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
