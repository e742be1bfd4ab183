"""The configured single sign-on providers and the HTTP client that reaches them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from ghostcrate.appliance.sso.providers import Provider, providers
from ghostcrate.config import Settings
from ghostcrate.private.errors import NotFound
from ghostcrate.proxy.upstream import tls_context

#: Seconds a request to a provider may take in all.
PROVIDER_TIMEOUT = 15.0


@dataclass(frozen=True)
class SingleSignOn:
    providers: dict[str, Provider]
    http: aiohttp.ClientSession

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[SingleSignOn]:
        configured = providers(settings.auth.oidc, settings.server.base_url)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls_context(settings.upstream)),
            timeout=aiohttp.ClientTimeout(total=PROVIDER_TIMEOUT),
            trust_env=True,  # HTTPS_PROXY / NO_PROXY, as for any outbound client
        ) as http:
            yield cls(configured, http)

    def provider(self, name: str) -> Provider:
        found = self.providers.get(name)
        if found is None:
            known = ", ".join(sorted(self.providers)) or "none is configured ([[auth.oidc]])"
            raise NotFound(f"no single sign-on provider {name!r} here (providers: {known})")
        return found
