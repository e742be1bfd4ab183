"""Where each `[[auth.oidc]]` provider's endpoints and keys are, per preset.

OpenID providers are found from their discovery document (OpenID Connect
Discovery 1.0), whose `issuer` must be the configured one (section 4.3: this is
what stops a document from speaking for another issuer). The document and the
provider's JWKS are fetched when first needed, not at start-up (a provider that
is down must not keep the registry from starting), and kept for an hour; the
JWKS is fetched again when a token names a key it does not have (key rollover).
GitHub is not an OpenID provider: its endpoints are fixed (or configured).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ghostcrate.config.model import OidcProviderSettings
from ghostcrate.private.errors import RegistryError

log = logging.getLogger(__name__)

#: Seconds a discovery document or JWKS is used before it is fetched again.
KEEP_SECONDS = 3600.0
#: Fewest seconds between two JWKS fetches caused by an unknown key ID.
REFETCH_SECONDS = 30.0
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
GOOGLE_ISSUER = "https://accounts.google.com"
GITHUB_AUTHORIZE = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN = "https://github.com/login/oauth/access_token"
GITHUB_API = "https://api.github.com"
_LONGEST_DOCUMENT = 1 << 20


class ProviderUnavailable(RegistryError):
    """The provider could not be reached or answered nonsense (502: not the user's fault)."""

    status = 502


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization: str
    token: str
    #: None for GitHub (no ID token).
    jwks_uri: str | None
    #: The `iss` values an ID token may carry.
    issuers: frozenset[str]
    #: Client authentication at the token endpoint: HTTP Basic (else in the form body).
    basic_auth: bool


def client_secret(settings: OidcProviderSettings, environ: dict[str, str]) -> str | None:
    """The client secret from `client_secret`, its environment variable or its file; None
    if that variable is unset or the file cannot be read (preflight says which)."""
    if settings.client_secret is not None:
        return settings.client_secret.get_secret_value()
    if settings.client_secret_env is not None:
        return environ.get(settings.client_secret_env) or None
    assert settings.client_secret_file is not None
    try:
        return Path(settings.client_secret_file).read_text().strip() or None
    except OSError:
        return None


def secret_problem(settings: OidcProviderSettings, environ: dict[str, str]) -> str | None:
    """Why the client secret of `settings` cannot be had, naming the key, if it cannot."""
    if client_secret(settings, environ) is not None:
        return None
    where = f"[[auth.oidc]] {settings.name!r}"
    if settings.client_secret_env is not None:
        return f"{where}: 'client_secret_env' names {settings.client_secret_env}, which is unset"
    return f"{where}: 'client_secret_file' {settings.client_secret_file} cannot be read or is empty"


class Provider:
    """One configured provider: its settings, secret, redirect URL, endpoints and keys."""

    def __init__(self, settings: OidcProviderSettings, secret: str, base_url: str) -> None:
        self.settings = settings
        self.name = settings.name
        self.client_id = settings.client_id
        self.secret = secret
        self.redirect_uri = f"{base_url}/api/v1/sso/{settings.name}/callback"
        self.scopes = settings.scope_list
        self.github = settings.preset == "github"
        self.api_url = settings.api_url or GITHUB_API
        self._endpoints: tuple[Endpoints, float] | None = None
        self._keys: tuple[KeySet, float] | None = None

    def __repr__(self) -> str:  # never the secret
        return f"Provider({self.name!r}, {self.settings.preset})"

    @property
    def discovery_url(self) -> str | None:
        issuer = self.expected_issuer
        return None if issuer is None else f"{issuer}/.well-known/openid-configuration"

    @property
    def expected_issuer(self) -> str | None:
        """The issuer the discovery document must name (None for GitHub)."""
        preset = self.settings.preset
        if preset == "entra":
            return f"{ENTRA_AUTHORITY}/{self.settings.tenant}/v2.0"
        if preset == "google":
            return GOOGLE_ISSUER
        if preset == "github":
            return None
        assert self.settings.issuer is not None
        return self.settings.issuer

    async def endpoints(self, http: aiohttp.ClientSession) -> Endpoints:
        now = time.monotonic()
        if self._endpoints is not None and self._endpoints[1] > now:
            return self._endpoints[0]
        if self.github:
            found = Endpoints(
                self.settings.authorize_url or GITHUB_AUTHORIZE,
                self.settings.token_url or GITHUB_TOKEN,
                None,
                frozenset(),
                basic_auth=False,
            )
        else:
            found = await self._discover(http)
        self._endpoints = (found, now + KEEP_SECONDS)
        return found

    async def _discover(self, http: aiohttp.ClientSession) -> Endpoints:
        url, expected = self.discovery_url, self.expected_issuer
        assert url is not None
        assert expected is not None
        document = await fetch_json(http, url, f"the discovery document of {self.name!r}")
        return discovered(document, url, expected, self.settings.preset)

    async def keys(self, http: aiohttp.ClientSession, *, again: bool = False) -> KeySet:
        """The provider's signing keys; `again`: fetched anew unless that was just done."""
        now = time.monotonic()
        if self._keys is not None:
            keys, until = self._keys
            fresh = until - KEEP_SECONDS + REFETCH_SECONDS > now
            if (not again and until > now) or (again and fresh):
                return keys
        endpoints = await self.endpoints(http)
        assert endpoints.jwks_uri is not None
        document = await fetch_json(http, endpoints.jwks_uri, f"the keys (JWKS) of {self.name!r}")
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as error:
            raise ProviderUnavailable(
                f"the keys (JWKS) at {endpoints.jwks_uri} cannot be read: {error}"
            ) from None
        self._keys = (keys, now + KEEP_SECONDS)
        return keys


def discovered(document: dict[str, Any], url: str, expected: str, preset: str) -> Endpoints:
    """The endpoints a discovery document (fetched from `url`) gives, if it is `expected`'s."""
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != expected.rstrip("/"):
        raise ProviderUnavailable(
            f"the discovery document at {url} names issuer {issuer!r}, not {expected!r}: "
            "check 'issuer' (or 'tenant') of this [[auth.oidc]] entry"
        )
    try:
        authorization = str(document["authorization_endpoint"])
        token = str(document["token_endpoint"])
        jwks_uri = str(document["jwks_uri"])
    except KeyError as missing:
        raise ProviderUnavailable(
            f"the discovery document at {url} has no {missing.args[0]}"
        ) from None
    methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    issuers = {issuer}
    if preset == "google":
        issuers.add("accounts.google.com")  # Google's ID tokens carry either form
    return Endpoints(
        authorization,
        token,
        jwks_uri,
        frozenset(issuers),
        basic_auth="client_secret_basic" in methods or "client_secret_post" not in methods,
    )


async def fetch_json(http: aiohttp.ClientSession, url: str, what: str) -> dict[str, Any]:
    """A JSON object from `url`; `ProviderUnavailable` naming `what` otherwise."""
    try:
        async with http.get(url, headers={"Accept": "application/json"}) as response:
            body = await response.content.read(_LONGEST_DOCUMENT)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ProviderUnavailable(f"{what} cannot be fetched from {url}: {error!r}") from None
    if status != 200:
        raise ProviderUnavailable(f"{what} cannot be fetched from {url}: HTTP {status}")
    return parse_object(body, f"{what} from {url}")


def parse_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # a lying provider's endless nesting too
        document = None
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"{what} is not a JSON object")
    return document


def providers(
    configured: list[OidcProviderSettings], base_url: str, environ: dict[str, str] | None = None
) -> dict[str, Provider]:
    """name -> `Provider`; a provider whose secret cannot be had is left out (and logged)."""
    environ = dict(os.environ) if environ is None else environ
    found = {}
    for settings in configured:
        secret = client_secret(settings, environ)
        if secret is None:
            log.error("sso provider without a secret", extra={"provider": settings.name})
            continue
        if settings.preset in ("github", "google") and not settings.allowed_groups:
            log.warning(
                "sso provider open to every account",
                extra={"provider": settings.name, "preset": settings.preset},
            )
        found[settings.name] = Provider(settings, secret, base_url)
    return found
