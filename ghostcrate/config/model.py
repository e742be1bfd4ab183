"""The settings model: every key GhostCrate reads, its type, default and checks.

The model is the single declaration of each option; `loader` layers the TOML
file and the environment over these defaults and validates the result.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    model_validator,
)

from ghostcrate.config.rates import rate_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT, for example 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and not (host.endswith("]") and _is_ipv6(host[1:-1])):
        raise ValueError("must be [IPV6]:PORT for an IPv6 address, like [::1]:8080")
    return value


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _with_slash(value: str) -> str:
    return value if value.endswith("/") else value + "/"


def _without_slash(value: str) -> str:
    return value.rstrip("/")


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Any) -> int:
    """Bytes from 512, "512MB" (10^6) or "512MiB" (2^20)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError('must be a size like "64MiB" or "20GB", or a number of bytes')
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


def _check_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError("must name an existing file")
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
ExistingFile = Annotated[Path, AfterValidator(_check_file)]
IndexUrl = Annotated[str, AfterValidator(_check_http_url), AfterValidator(_with_slash)]
BaseUrl = Annotated[str, AfterValidator(_check_http_url), AfterValidator(_without_slash)]


class ServerSettings(_Section):
    listen: Listen = "127.0.0.1:8080"
    #: The address advertised to cargo in config.json; derived from `listen` when unset.
    public_url: BaseUrl | None = None
    #: Seconds that in-flight requests get to finish after SIGTERM.
    shutdown_timeout: PositiveFloat = 30.0
    access_log: bool = True
    #: Processes serving the same port (SO_REUSEPORT), sharing the disk tier.
    workers: PositiveInt = 1
    #: Accept cargo's offer to upgrade to HTTP/2 in the clear (h2c), so it can multiplex.
    http2: bool = True
    #: `/readyz` fails while the file system of `data_dir` has less free space than this.
    min_free_bytes: Size = 512 * 2**20

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def base_url(self) -> str:
        """The URL under which cargo reaches this server (no trailing slash)."""
        if self.public_url is not None:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


class UpstreamSettings(_Section):
    #: The upstream sparse index root; its own config.json gives the download URL.
    index: IndexUrl = "https://index.crates.io/"
    #: Seconds an index file is served without asking the upstream.
    index_ttl: float = Field(default=60.0, ge=0)
    #: Seconds a "no such crate" or "no such version" answer from the upstream is remembered.
    negative_ttl: float = Field(default=30.0, ge=0)
    connect_timeout: PositiveFloat = 10.0
    #: Longest silence allowed while reading an upstream answer.
    read_timeout: PositiveFloat = 30.0
    #: Seconds a request waits for the revalidation of an expired cached index file before
    #: it gets the cached copy (the revalidation finishes in the background); an upstream
    #: request with no answer by then counts towards opening the breaker. 0: never wait
    #: (and slowness is not counted).
    stale_after: float = Field(default=2.0, ge=0)
    #: Never contact the upstream; offer only versions whose .crate is in the cache.
    offline: bool = False
    #: Online, but offer and serve only versions whose .crate is already cached (warmed).
    only_cached: bool = False
    #: Outbound HTTP proxy (`http://[user:pass@]host:port`); HTTPS_PROXY/HTTP_PROXY/NO_PROXY
    #: from the environment apply when unset, and NO_PROXY applies either way.
    proxy: HttpUrl | None = None
    #: A PEM file of extra CA certificates to trust (a corporate TLS-inspecting proxy's).
    ca_bundle: ExistingFile | None = None
    #: Ask an https:// upstream reached without a proxy over HTTP/2 (one connection per
    #: origin and worker); false, or an upstream without HTTP/2: HTTP/1.1.
    http2: bool = True
    #: Consecutive unreachability failures (refused, timed out, 5xx, no answer within
    #: `stale_after`) that open the breaker.
    breaker_failures: PositiveInt = 3
    #: Seconds the breaker stays open (misses fail at once) before one request probes again.
    breaker_cooldown: float = Field(default=10.0, ge=0)

    @property
    def mode(self) -> str:
        """`online`, `offline` or `only-cached`, as logs and `/readyz` name it."""
        return "offline" if self.offline else "only-cached" if self.only_cached else "online"


class CacheSettings(_Section):
    #: Memory tier for hot index files, per worker process; 0 switches it off.
    memory_bytes: Size = 64 * 2**20
    #: Bound of the local disk tier (mirrored data, evicted least recently used first).
    disk_max_bytes: Size = 20 * 10**9
    #: Where the disk tier keeps its files (default: `data_dir/cache`). Only mirrored data,
    #: which can be fetched again: e.g. systemd's CacheDirectory, /var/cache/ghostcrate.
    dir: Path | None = None


class S3Settings(_Section):
    """A shared S3 tier; any S3-compatible endpoint. Absent table: no S3 tier."""

    bucket: str = Field(min_length=3, max_length=63)
    #: Key prefix inside the bucket, so several deployments can share one.
    prefix: str = ""
    endpoint_url: BaseUrl | None = None
    region: str | None = None
    #: Credentials; when unset, the standard AWS chain (environment, files, instance role).
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    connect_timeout: PositiveFloat = 2.0
    read_timeout: PositiveFloat = 10.0
    #: Connections kept to the endpoint; a request beyond them waits for one to be free.
    max_connections: PositiveInt = 64
    #: Files larger than this are uploaded in parts (and a failed upload is aborted).
    multipart_threshold: Size = 8 * 2**20
    #: After a failure, seconds during which S3 is not tried again (requests use the other tiers).
    retry_after: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _both_or_neither_key(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("must set both access_key_id and secret_access_key, or neither")
        return self

    @property
    def key_prefix(self) -> str:
        prefix = self.prefix.strip("/")
        return prefix + "/" if prefix else ""


def _check_patterns(values: list[str]) -> list[str]:
    for value in values:
        if not value or not _NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a crate name pattern: use letters, digits, '-', '_' and '*'"
            )
    return values


_NAME_PATTERN = re.compile(r"[A-Za-z0-9_*-]{1,64}")
NamePatterns = Annotated[list[str], AfterValidator(_check_patterns)]


class PrivateSettings(_Section):
    """The private registry: crates published here, overlaying the mirror in one namespace."""

    #: Largest `.crate` that `cargo publish` may upload (crates.io's limit: 10 MB).
    max_upload: Size = 10 * 2**20
    #: Largest total size of a published `.crate`'s files once unpacked.
    max_unpacked: Size = 512 * 2**20
    #: Most entries (files and directories) a published `.crate` may hold.
    max_files: int = Field(default=10_000, ge=1)
    #: Largest publish metadata JSON (crates.io holds it to its 10 MB upload limit).
    max_metadata: Size = 10 * 2**20
    #: Names (patterns with `*`) that may be published although the upstream has them.
    allow_shadowing: NamePatterns = []
    #: Name patterns (`acme-*`) that are never fetched from the upstream: only published here.
    reserved: NamePatterns = []


def _check_principals(values: list[str]) -> list[str]:
    for value in values:
        if value in PRINCIPAL_WORDS or (
            value.startswith("user:") and _USER.fullmatch(value.removeprefix("user:"))
        ):
            continue
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is not one of anonymous, token, admin, user:NAME or an address "
                "range like 10.0.0.0/8"
            ) from None
    return values


PRINCIPAL_WORDS = frozenset({"anonymous", "token", "admin"})
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Principals = Annotated[list[str], AfterValidator(_check_principals)]


_MAPPED = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}):([A-Za-z0-9][A-Za-z0-9._-]{0,63})")
_FIELD = re.compile(r"\{([^{}]*)\}")


def _check_ldap_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ValueError("must be an ldap:// or ldaps:// URL, like ldaps://ldap.corp:636")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("must be only ldap[s]://HOST[:PORT] (no base DN, no credentials)")
    return value


def _filter_with(allowed: frozenset[str], *, needs_name: bool) -> Any:
    def check(value: str) -> str:
        fields = set(_FIELD.findall(value))
        if not (value.startswith("(") and value.endswith(")")) or not fields <= allowed:
            shown = " and ".join("{" + name + "}" for name in sorted(allowed))
            raise ValueError(f"must be an LDAP filter in parentheses using only {shown}")
        if needs_name and "name" not in fields:
            raise ValueError("must contain {name} (the name the user signs in with)")
        return value

    return AfterValidator(check)


def _listed(value: Any) -> Any:
    """`"devs" = "acme:member"` as `"devs" = ["acme:member"]`."""
    if isinstance(value, dict):
        return {key: [item] if isinstance(item, str) else item for key, item in value.items()}
    return value


def _check_mapping(values: dict[str, list[str]]) -> dict[str, list[str]]:
    for group, targets in values.items():
        for target in targets:
            if not group or _MAPPED.fullmatch(target) is None:
                raise ValueError(
                    f'{group!r} = {target!r}: a group maps to a list of "ORG:ROLE" '
                    '(ROLE one of owner, admin, member, contributor) or "ORG:TEAM", '
                    'like ["acme:member", "acme:platform"]'
                )
    return values


LdapUrl = Annotated[str, AfterValidator(_check_ldap_url)]
UserFilter = Annotated[str, _filter_with(frozenset({"name"}), needs_name=True)]
GroupFilter = Annotated[str, _filter_with(frozenset({"name", "dn"}), needs_name=False)]
GroupMapping = Annotated[
    dict[str, list[str]], BeforeValidator(_listed), AfterValidator(_check_mapping)
]


class LdapSettings(_Section):
    """`[auth.ldap]`: sign-in with a directory password (OpenLDAP, Active Directory)."""

    url: LdapUrl
    #: The service account that searches for users and their groups (unset: anonymous).
    bind_dn: str | None = None
    #: Its password: at most one of the three.
    bind_password: SecretStr | None = None
    #: ... or the environment variable that holds it,
    bind_password_env: str | None = None
    #: ... or the file that holds it (surrounding whitespace is dropped).
    bind_password_file: Path | None = None
    #: Where users are searched (the whole subtree).
    user_base: str = Field(min_length=1)
    #: Finds the user; {name} is the name signed in with, escaped as RFC 4515 says.
    user_filter: UserFilter = "(uid={name})"
    #: Where groups are searched; unset: groups come only from `groups_attribute`.
    group_base: str | None = None
    #: Finds the user's groups under `group_base`; {dn} is the user's DN, {name} the name.
    group_filter: GroupFilter = "(member={dn})"
    #: An attribute of the user's entry listing their groups' DNs (Active Directory:
    #: memberOf); read besides (or, without `group_base`, instead of) the group search.
    groups_attribute: str | None = None
    #: Seconds allowed to connect, and to wait for each answer of the directory.
    timeout: PositiveFloat = 5.0
    #: A PEM file of CA certificates for ldaps:// or start_tls (default: the system's).
    ca_file: ExistingFile | None = None
    #: Upgrade an ldap:// connection to TLS (StartTLS) before any bind.
    start_tls: bool = False
    #: A group's CN (or whole DN) -> the memberships it gives: "ORG:ROLE" or "ORG:TEAM".
    groups: GroupMapping = {}

    @model_validator(mode="after")
    def _consistent(self) -> LdapSettings:
        secrets = [self.bind_password, self.bind_password_env, self.bind_password_file]
        if sum(value is not None for value in secrets) > 1:
            raise ValueError(
                "set at most one of 'bind_password', 'bind_password_env' and 'bind_password_file'"
            )
        if self.bind_dn is None and any(value is not None for value in secrets):
            raise ValueError("a bind password needs 'bind_dn' (the service account)")
        if self.bind_dn is not None and all(value is None for value in secrets):
            raise ValueError(
                "'bind_dn' needs its password: set 'bind_password', 'bind_password_env' "
                "or 'bind_password_file'"
            )
        if self.start_tls and self.url.startswith("ldaps:"):
            raise ValueError("'start_tls' is for ldap:// URLs: ldaps:// is TLS already")
        return self


_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_TENANT_ID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ORG_ROLE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}):([a-z]+)")
#: The roles a member of an organisation can have (the registry's organisations).
ORG_ROLES = ("owner", "admin", "member", "contributor")
#: The scopes asked for when `scopes` is not set.
DEFAULT_SCOPES = {
    "generic": ["openid", "profile", "email"],
    "entra": ["openid", "profile", "email"],
    "google": ["openid", "profile", "email"],
    "github": ["read:user", "user:email", "read:org"],
}


def _check_org_roles(values: dict[str, str]) -> dict[str, str]:
    for group, target in values.items():
        match = _ORG_ROLE.fullmatch(target)
        if not group or match is None or match.group(2) not in ORG_ROLES:
            raise ValueError(
                f'{group!r} = {target!r}: each group maps to "ORG:ROLE", ROLE one of '
                f'{", ".join(ORG_ROLES)} (like "acme:member")'
            )
    return values


OrgRoles = Annotated[dict[str, str], AfterValidator(_check_org_roles)]


class OidcProviderSettings(_Section):
    """One `[[auth.oidc]]` entry: a single sign-on provider, reached at
    `/api/v1/sso/{name}/login`; it redirects back to `/api/v1/sso/{name}/callback`."""

    #: The `{name}` in the routes (lowercase letters, digits, '-', '_').
    name: str
    #: "generic" (any OpenID provider, from `issuer`), "entra" (Microsoft Entra ID, from
    #: `tenant`), "google", or "github" (GitHub's OAuth apps: not OpenID Connect).
    preset: Literal["generic", "entra", "google", "github"] = "generic"
    #: generic: the issuer; its discovery document is `{issuer}/.well-known/openid-configuration`.
    issuer: BaseUrl | None = None
    #: entra: the directory (tenant) ID, a GUID; the issuer is tenant-specific.
    tenant: str | None = None
    client_id: str = Field(min_length=1)
    #: The client secret: set exactly one of the three.
    client_secret: SecretStr | None = None
    #: ... or the environment variable that holds it,
    client_secret_env: str | None = None
    #: ... or the file that holds it (an absolute path; surrounding whitespace is dropped).
    client_secret_file: str | None = None
    #: The scopes asked for; unset: the preset's (openid profile email; GitHub: read:user
    #: user:email read:org).
    scopes: list[str] | None = None
    #: github: the endpoints, for GitHub Enterprise Server (or a test's fake).
    authorize_url: HttpUrl | None = None
    token_url: HttpUrl | None = None
    api_url: BaseUrl | None = None
    #: The ID token claim with the user's groups (a list, or one string such as Google's
    #: `hd`); GitHub: the user's organisations.
    groups_claim: str = Field(default="groups", min_length=1)
    #: When set, only users in one of these groups may sign in.
    allowed_groups: list[str] = []
    #: Group -> "ORG:ROLE": the organisation role a group gives, applied at each sign-in.
    org_roles: OrgRoles = {}

    @model_validator(mode="after")
    def _consistent(self) -> OidcProviderSettings:
        where = f"[[auth.oidc]] {self.name!r}"
        if not _PROVIDER_NAME.fullmatch(self.name):
            raise ValueError(
                f"{where}: 'name' must be lowercase letters, digits, '-' or '_' "
                "(at most 32; it is part of the redirect URL)"
            )
        secrets = [self.client_secret, self.client_secret_env, self.client_secret_file]
        if sum(value is not None for value in secrets) != 1:
            raise ValueError(
                f"{where}: set exactly one of 'client_secret', 'client_secret_env' "
                "and 'client_secret_file'"
            )
        if self.preset == "generic" and self.issuer is None:
            raise ValueError(f"{where}: 'issuer' must be set for preset \"generic\"")
        if self.preset != "generic" and self.issuer is not None:
            raise ValueError(f"{where}: 'issuer' is only for preset \"generic\"")
        if self.preset == "entra" and not _TENANT_ID.fullmatch(self.tenant or ""):
            raise ValueError(
                f"{where}: 'tenant' must be the directory (tenant) ID, a GUID like "
                '"72f988bf-86f1-41af-91ab-2d7cd011db47" (Entra ID > Overview); '
                "common, organizations and consumers have no single issuer to check"
            )
        if self.preset != "entra" and self.tenant is not None:
            raise ValueError(f"{where}: 'tenant' is only for preset \"entra\"")
        github_urls = (self.authorize_url, self.token_url, self.api_url)
        if self.preset != "github" and any(url is not None for url in github_urls):
            raise ValueError(
                f"{where}: 'authorize_url', 'token_url' and 'api_url' are only for preset "
                '"github"'
            )
        return self

    @property
    def scope_list(self) -> list[str]:
        return self.scopes if self.scopes is not None else DEFAULT_SCOPES[self.preset]


def _unique_names(values: list[OidcProviderSettings]) -> list[OidcProviderSettings]:
    names = [provider.name for provider in values]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise ValueError(f"[[auth.oidc]] names must differ; used twice: {', '.join(doubled)}")
    return values


OidcProviders = Annotated[list[OidcProviderSettings], AfterValidator(_unique_names)]


class AuthSettings(_Section):
    """Who may do what. Each list names who may: `anonymous` (anyone), `token` (any valid
    token), `admin` (users added with --admin), `user:NAME`, or an address range (CIDR)."""

    #: Every route asks for a valid token, and config.json says `auth-required` so that
    #: cargo sends it; the lists below then narrow who may do what.
    required: bool = False
    read_mirror: Principals = ["anonymous"]
    #: Whoever may not read private crates gets 404 for them, as if they did not exist.
    read_private: Principals = ["anonymous"]
    #: Publish, yank and change owners (of crates they own: owners are checked as well).
    publish: Principals = ["token"]
    #: Act as an owner of every private crate.
    admin: Principals = ["admin"]
    #: Minutes a session token (the JWT that POST /api/v1/session returns) is valid.
    session_minutes: PositiveFloat = 15.0
    #: Days a refresh token is valid (each use returns a new one).
    refresh_days: PositiveFloat = 7.0
    #: Failed sign-ins of one account within `login_window_seconds` after which its
    #: sign-in answers 429 until the oldest of them leaves the window.
    login_failures: PositiveInt = 5
    #: The same, for all sign-ins from one address.
    login_address_failures: PositiveInt = 20
    login_window_seconds: PositiveFloat = 300.0
    #: Sign-in with a directory password (`[auth.ldap]`); see docs/identity.md.
    ldap: LdapSettings | None = None
    #: Single sign-on providers (`[[auth.oidc]]`); see docs/sso.md.
    oidc: OidcProviders = []

    @model_validator(mode="after")
    def _ldap_is_not_an_oidc_name(self) -> AuthSettings:
        if any(provider.name == "ldap" for provider in self.oidc):
            raise ValueError(
                '[[auth.oidc]] name "ldap" is taken: the users [auth.ldap] registers '
                'are identities of provider "ldap"; name the provider otherwise'
            )
        return self


Limit = Annotated[str, BeforeValidator(rate_text)]


class PublishLimits(_Section):
    """`[limits.publish]`: PUT /api/v1/crates/new. Each key a rate (`config/rates.py`) or 0."""

    #: Requests carrying one token (keyed by the token's hash).
    per_token: Limit = "30/minute burst 300"
    #: Requests of one user, over all their tokens.
    per_user: Limit = "30/minute burst 300"
    #: Requests from one client address, checked before authentication.
    per_address: Limit = "60/minute burst 600"


class LoginLimits(_Section):
    """`[limits.login]`: sign-in, refresh and the single sign-on routes (which carry no token
    as a rule: the address limit is the one that holds)."""

    per_token: Limit = "off"
    per_user: Limit = "off"
    per_address: Limit = "60/minute burst 120"


class SearchLimits(_Section):
    """`[limits.search]`: GET /api/v1/crates (`cargo search`)."""

    per_token: Limit = "120/minute burst 240"
    per_user: Limit = "120/minute burst 240"
    per_address: Limit = "600/minute burst 1200"


class ApiLimits(_Section):
    """`[limits.api]`: every other /api/ route but cargo's download route."""

    per_token: Limit = "600/minute burst 1200"
    per_user: Limit = "1200/minute burst 2400"
    per_address: Limit = "3000/minute burst 6000"


class LimitsSettings(_Section):
    """Request rates per route class, shared by all workers (docs/limits.md)."""

    #: false: no rate limits at all (the login throttle of `[auth]` still holds).
    enabled: bool = True
    publish: PublishLimits = PublishLimits()
    login: LoginLimits = LoginLimits()
    search: SearchLimits = SearchLimits()
    api: ApiLimits = ApiLimits()


class AuditSettings(_Section):
    """The audit log (docs/audit.md). Writes are recorded in their own transaction;
    refused requests are counted in memory and written in batches, so that a flood of
    them cannot hold the database's write lock."""

    #: Seconds between two writes of each worker's counted refusals.
    refusal_flush_seconds: PositiveFloat = 5.0
    #: Distinct refusal records a worker writes per interval; the rest are summed in one.
    refusal_records: PositiveInt = 100


#: What a webhook can be told of (`[[webhooks.endpoints]] events`, `--events`).
WEBHOOK_EVENTS = ("publish", "yank", "unyank", "owner_add", "owner_remove")
_WEBHOOK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _check_events(values: list[str]) -> list[str]:
    unknown = [value for value in values if value not in WEBHOOK_EVENTS]
    if unknown or not values:
        raise ValueError(f"must list events among {', '.join(WEBHOOK_EVENTS)}")
    return values


def _check_targets(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
                raise ValueError(
                    f"{value!r} is neither an address range (10.0.0.0/8, 192.168.1.5) "
                    "nor a host name (hooks.corp.example)"
                ) from None
    return values


WebhookEvents = Annotated[list[str], AfterValidator(_check_events)]


class WebhookEndpointSettings(_Section):
    """One `[[webhooks.endpoints]]` entry: a receiver the operator trusts, told of every
    private crate's events (its address is not checked against `allow_targets`)."""

    #: How the delivery log and `ghostcrate webhook list` name it (`config:NAME`).
    name: str
    url: HttpUrl
    #: The signing secret: set exactly one of the two.
    secret: SecretStr | None = None
    #: ... or the file that holds it (an absolute path; surrounding whitespace is dropped).
    secret_file: str | None = None
    events: WebhookEvents = list(WEBHOOK_EVENTS)

    @model_validator(mode="after")
    def _consistent(self) -> WebhookEndpointSettings:
        where = f"[[webhooks.endpoints]] {self.name!r}"
        if not _WEBHOOK_NAME.fullmatch(self.name):
            raise ValueError(
                f"{where}: 'name' must be lowercase letters, digits, '-' or '_' (at most 32)"
            )
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError(f"{where}: set exactly one of 'secret' and 'secret_file'")
        if self.secret_file is not None and not self.secret_value():
            raise ValueError(
                f"{where}: 'secret_file' {self.secret_file} cannot be read or is empty"
            )
        return self

    def secret_value(self) -> str:
        """The secret, from the config or read from `secret_file` ('' if unreadable)."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        try:
            return Path(str(self.secret_file)).read_text().strip()
        except OSError:
            return ""


def _unique_endpoints(values: list[WebhookEndpointSettings]) -> list[WebhookEndpointSettings]:
    names = [endpoint.name for endpoint in values]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise ValueError(
            f"[[webhooks.endpoints]] names must differ; used twice: {', '.join(doubled)}"
        )
    return values


class WebhooksSettings(_Section):
    """Webhooks: the operator's receivers (`[[webhooks.endpoints]]`), and how every
    webhook, also an organisation's, is delivered. See docs/webhooks.md."""

    endpoints: Annotated[list[WebhookEndpointSettings], AfterValidator(_unique_endpoints)] = []
    #: Attempts of one delivery before it is dead (a dead letter, re-driven by hand).
    max_attempts: PositiveInt = 8
    #: The wait after the first failed attempt; doubled after each further one, with jitter.
    backoff_seconds: PositiveFloat = 10.0
    #: The longest wait between two attempts.
    max_backoff_seconds: PositiveFloat = 3600.0
    #: How long one attempt may take, from connecting to the answer's status line.
    timeout_seconds: PositiveFloat = 10.0
    #: Days a delivered delivery stays in the log (dead ones stay until re-driven).
    keep_days: PositiveFloat = 30.0
    #: Internal hosts and address ranges an organisation's webhook may reach (loopback,
    #: private, link-local and other non-public addresses are refused otherwise).
    allow_targets: Annotated[list[str], AfterValidator(_check_targets)] = []


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Settings(_Section):
    data_dir: Path = Path("./ghostcrate-data")
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    cache: CacheSettings = CacheSettings()
    s3: S3Settings | None = None
    private: PrivateSettings = PrivateSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    audit: AuditSettings = AuditSettings()
    log: LogSettings = LogSettings()
    webhooks: WebhooksSettings = WebhooksSettings()

    @property
    def cache_dir(self) -> Path:
        """The disk tier's directory: `[cache] dir`, else `data_dir/cache`."""
        return self.cache.dir if self.cache.dir is not None else self.data_dir / "cache"
