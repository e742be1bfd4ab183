"""The OpenAPI 3.1 description of the appliance's HTTP API, served at `/api/openapi.json`.

Every route `app.create_app` registers is here except cargo's index (`/index/...`)
and download routes, which follow cargo's registry protocol instead;
`tests/test_openapi_routes.py` keeps the two lists equal. Each operation lists
every status its handler can answer; error bodies are cargo's
`{"errors": [{"detail": ...}]}`.
"""

from __future__ import annotations

import json
from functools import cache

from ghostcrate import __version__
from ghostcrate.appliance.openapi_parts import (
    CRATE_NAME,
    JSON_TYPE,
    LOGIN,
    NO_AUTH,
    OPTIONAL_AUTH,
    REQUIRED_AUTH,
    RESPONSES,
    SCHEMAS,
    SECURITY_SCHEMES,
    VERSION,
    Json,
    answer,
    json_body,
    ref,
)

#: Route prefixes the description leaves to cargo's registry protocol.
EXCLUDED_PATHS = ("/index/config.json", "/index/{path}", "/api/v1/crates/{name}/{version}/download")

_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    502: "BadGateway",
    503: "Unavailable",
}
#: What every `/api/` route may answer besides its own: rate limits (`[limits]`).
_API = (429,)
_READ = (401, 403, *_API)
_WRITE = (400, 401, 403, 404, *_API)


def _path_param(name: str, pattern: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


_CRATE = _path_param("name", CRATE_NAME, "A crate name (compared lowercase, `-` equal to `_`).")
_VERSION = _path_param("version", VERSION, "A SemVer version.")
_ORG = _path_param("org", LOGIN, "An organisation's name.")
_TEAM = _path_param("team", LOGIN, "A team's name within the organisation.")
_PROVIDER = _path_param("provider", LOGIN, "A single sign-on provider's name (`[[auth.oidc]]`).")


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    ok: dict[int, Json],
    errors: tuple[int, ...],
    *,
    security: list[Json],
    parameters: tuple[Json, ...] = (),
    body: Json | None = None,
    description: str | None = None,
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": {str(status): value for status, value in ok.items()}
        | {str(status): answer(_ERRORS[status]) for status in sorted(set(errors))},
    }
    if description is not None:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    return operation


def _json_request(schema: Json) -> Json:
    return {"required": True, "content": {JSON_TYPE: {"schema": schema}}}


def _ok(schema_name: str, description: str, status: int = 200) -> dict[int, Json]:
    return {status: json_body(ref(schema_name), description)}


_NO_STORE: Json = {
    "Cache-Control": {"required": True, "schema": {"const": "no-store"}},
}


def _crates() -> Json:
    owners_body = _json_request(ref("OwnersChange"))
    return {
        "/api/v1/crates/new": {
            "put": _op(
                "publish",
                "Publish a crate version (cargo publish)",
                "crates",
                _ok("PublishAnswer", "Published."),
                (*_WRITE, 408, 409, 413, 503),
                security=REQUIRED_AUTH,
                description="cargo's publish frame: a 32-bit little-endian length and the "
                "metadata JSON, then a 32-bit length and the `.crate` file "
                "(registry-web-api.md). Nothing is stored unless all of it is accepted.",
                body={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        }
                    },
                },
            )
        },
        "/api/v1/crates": {
            "get": _op(
                "search",
                "Search crates (cargo search): private ones first, then the upstream's",
                "crates",
                _ok("SearchAnswer", "The hits."),
                (400, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "per_page",
                        "in": "query",
                        "description": "Hits per page; values outside 1 to 100 are clamped.",
                        "schema": {"type": "integer", "default": 10},
                    },
                ),
            )
        },
        "/api/v1/crates/{name}": {
            "get": _op(
                "crate",
                "A private crate and its versions",
                "crates",
                _ok("CrateAnswer", "The crate."),
                (404, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(_CRATE,),
            )
        },
        "/api/v1/crates/{name}/{version}/yank": {
            "delete": _op(
                "yank",
                "Yank a version (cargo yank)",
                "crates",
                _ok("Ok", "Yanked."),
                _WRITE,
                security=REQUIRED_AUTH,
                parameters=(_CRATE, _VERSION),
            )
        },
        "/api/v1/crates/{name}/{version}/unyank": {
            "put": _op(
                "unyank",
                "Unyank a version (cargo yank --undo)",
                "crates",
                _ok("Ok", "Unyanked."),
                _WRITE,
                security=REQUIRED_AUTH,
                parameters=(_CRATE, _VERSION),
            )
        },
        "/api/v1/crates/{name}/owners": {
            "get": _op(
                "owners",
                "A crate's owners: users and teams (cargo owner --list)",
                "crates",
                _ok("Owners", "The owners."),
                (404, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(_CRATE,),
            ),
            "put": _op(
                "addOwners",
                "Add owners (cargo owner --add): users, or teams as ORG:TEAM",
                "crates",
                _ok("OkMessage", "Added."),
                (*_WRITE, 409),
                security=REQUIRED_AUTH,
                parameters=(_CRATE,),
                body=owners_body,
            ),
            "delete": _op(
                "removeOwners",
                "Remove owners (cargo owner --remove)",
                "crates",
                _ok("OkMessage", "Removed."),
                (*_WRITE, 409),
                security=REQUIRED_AUTH,
                parameters=(_CRATE,),
                body=owners_body,
            ),
        },
    }


def _sessions() -> Json:
    session = {200: json_body(ref("Session"), "A new session.", _NO_STORE)}
    return {
        "/api/v1/session": {
            "post": _op(
                "signIn",
                "Sign in with a password (local or `[auth.ldap]`)",
                "sessions",
                session,
                (400, 403, 429, 503),
                security=NO_AUTH,
                body=_json_request(ref("SignIn")),
            ),
            "delete": _op(
                "signOut",
                "End this session (its refresh token too)",
                "sessions",
                _ok("Ok", "Signed out."),
                (400, *_READ),
                security=[{"session": []}],
            ),
        },
        "/api/v1/session/refresh": {
            "post": _op(
                "refresh",
                "A new session token for a refresh token (each is used once)",
                "sessions",
                session,
                (400, 403, 429),
                security=NO_AUTH,
                body=_json_request(ref("Refresh")),
            )
        },
        "/api/v1/me": {
            "get": _op(
                "me",
                "Who the credential stands for",
                "sessions",
                _ok("Me", "The user."),
                _READ,
                security=REQUIRED_AUTH,
            )
        },
        "/me": {
            "get": _op(
                "tokenHelp",
                "The page `cargo login` points to: how to get a token here",
                "sessions",
                {
                    200: {
                        "description": "Plain text.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                (),
                security=NO_AUTH,
            )
        },
        "/api/v1/sso/{provider}/login": {
            "get": _op(
                "ssoLogin",
                "Begin a single sign-on: a redirect to the provider",
                "sessions",
                {
                    302: {
                        "description": "To the provider's authorization endpoint.",
                        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                    }
                },
                (404, 429, 502),
                security=NO_AUTH,
                parameters=(_PROVIDER,),
            )
        },
        "/api/v1/sso/{provider}/callback": {
            "get": _op(
                "ssoCallback",
                "Finish a single sign-on: the provider redirects here",
                "sessions",
                session,
                (400, 403, 404, 429, 502),
                security=NO_AUTH,
                parameters=(
                    _PROVIDER,
                    {"name": "code", "in": "query", "schema": {"type": "string"}},
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {"name": "error", "in": "query", "schema": {"type": "string"}},
                ),
            )
        },
    }


def _orgs() -> Json:
    org = _ok("Org", "The organisation as it is now.")
    logins = _json_request(ref("Logins"))
    conflict = (*_WRITE, 409)
    return {
        "/api/v1/orgs": {
            "get": _op(
                "orgs",
                "Every organisation",
                "orgs",
                _ok("Orgs", "The organisations."),
                (404, *_READ),
                security=OPTIONAL_AUTH,
            ),
            "post": _op(
                "addOrg",
                "Create an organisation (registry administrators)",
                "orgs",
                _ok("Org", "Created.", 201),
                conflict,
                security=REQUIRED_AUTH,
                body=_json_request(ref("NewOrg")),
            ),
        },
        "/api/v1/orgs/{org}": {
            "get": _op(
                "org",
                "One organisation",
                "orgs",
                org,
                (404, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(_ORG,),
            )
        },
        "/api/v1/orgs/{org}/members": {
            "get": _op(
                "members",
                "An organisation's members and their roles",
                "orgs",
                _ok("Members", "The members."),
                (404, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(_ORG,),
            ),
            "put": _op(
                "setMembers",
                "Add members or change their roles (all or none)",
                "orgs",
                org,
                conflict,
                security=REQUIRED_AUTH,
                parameters=(_ORG,),
                body=_json_request(ref("MembersChange")),
            ),
            "delete": _op(
                "removeMembers",
                "Remove members",
                "orgs",
                org,
                conflict,
                security=REQUIRED_AUTH,
                parameters=(_ORG,),
                body=logins,
            ),
        },
        "/api/v1/orgs/{org}/teams": {
            "get": _op(
                "teams",
                "An organisation's teams",
                "orgs",
                _ok("Teams", "The teams."),
                (404, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(_ORG,),
            ),
            "post": _op(
                "addTeam",
                "Create a team",
                "orgs",
                _ok("Org", "Created.", 201),
                conflict,
                security=REQUIRED_AUTH,
                parameters=(_ORG,),
                body=_json_request(ref("NewTeam")),
            ),
        },
        "/api/v1/orgs/{org}/teams/{team}": {
            "delete": _op(
                "removeTeam",
                "Remove a team",
                "orgs",
                org,
                conflict,
                security=REQUIRED_AUTH,
                parameters=(_ORG, _TEAM),
            )
        },
        "/api/v1/orgs/{org}/teams/{team}/members": {
            "put": _op(
                "addTeamMembers",
                "Add members of the organisation to a team",
                "orgs",
                org,
                conflict,
                security=REQUIRED_AUTH,
                parameters=(_ORG, _TEAM),
                body=logins,
            ),
            "delete": _op(
                "removeTeamMembers",
                "Remove members from a team",
                "orgs",
                org,
                conflict,
                security=REQUIRED_AUTH,
                parameters=(_ORG, _TEAM),
                body=logins,
            ),
        },
    }


def _webhooks() -> Json:
    webhook = _path_param("id", "^[0-9]{1,18}$", "The webhook's number.")
    managed = "An owner or admin of the organisation, or a registry administrator "
    return {
        "/api/v1/orgs/{org}/webhooks": {
            "get": _op(
                "webhooks",
                "An organisation's webhooks (never their secrets)",
                "webhooks",
                _ok("Webhooks", "The webhooks."),
                (404, *_READ),
                security=REQUIRED_AUTH,
                parameters=(_ORG,),
                description=managed + "(right `manage-webhooks`).",
            ),
            "post": _op(
                "addWebhook",
                "Add a webhook; its signing secret is in this answer only",
                "webhooks",
                _ok("WebhookCreated", "Added.", 201),
                _WRITE,
                security=REQUIRED_AUTH,
                parameters=(_ORG,),
                body=_json_request(ref("NewWebhook")),
                description=managed + "(right `manage-webhooks`). A URL that resolves to a "
                "loopback, private or link-local address is refused (400) unless `[webhooks] "
                "allow_targets` lists it. See docs/webhooks.md.",
            ),
        },
        "/api/v1/orgs/{org}/webhooks/{id}": {
            "delete": _op(
                "removeWebhook",
                "Remove a webhook; its pending deliveries become dead",
                "webhooks",
                _ok("OneWebhook", "Removed."),
                _WRITE,
                security=REQUIRED_AUTH,
                parameters=(_ORG, webhook),
            )
        },
        "/api/v1/orgs/{org}/webhooks/{id}/deliveries": {
            "get": _op(
                "webhookDeliveries",
                "A webhook's delivery log, newest first (100 at most)",
                "webhooks",
                _ok("Deliveries", "The deliveries."),
                (404, *_READ),
                security=REQUIRED_AUTH,
                parameters=(_ORG, webhook),
            )
        },
        "/api/v1/orgs/{org}/webhooks/{id}/retry": {
            "post": _op(
                "retryWebhook",
                "Re-drive dead deliveries: those named, or all of the webhook's",
                "webhooks",
                _ok("Retried", "How many are pending again."),
                _WRITE,
                security=REQUIRED_AUTH,
                parameters=(_ORG, webhook),
                body=_json_request(ref("Redrive")),
            )
        },
    }


def _accounts() -> Json:
    login = _path_param("login", LOGIN, "A user's login.")
    paths: Json = {
        "/api/v1/me/tokens": {
            "get": _op(
                "tokens",
                "Your live API tokens",
                "accounts",
                _ok("ApiTokens", "The tokens (never their text)."),
                _READ,
                security=REQUIRED_AUTH,
                description="A session, or a token without limits; a limited token is refused "
                "(rule `token-limits`).",
            ),
            "put": _op(
                "createToken",
                "A new API token for you; its text is in this answer only",
                "accounts",
                {200: json_body(ref("CreatedApiToken"), "The new token.", _NO_STORE)},
                (*_WRITE,),
                security=REQUIRED_AUTH,
                body=_json_request(ref("NewApiToken")),
            ),
        },
        "/api/v1/me/tokens/{id}": {
            "delete": _op(
                "revokeToken",
                "Revoke one of your tokens (every worker refuses it before this answer)",
                "accounts",
                _ok("Empty", "Revoked."),
                (404, *_READ),
                security=REQUIRED_AUTH,
                parameters=(
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    },
                ),
            )
        },
        "/api/v1/users/{login}": {
            "get": _op(
                "user",
                "A user (shown to readers of private crates)",
                "accounts",
                _ok("PublicUser", "The user."),
                (404, *_READ),
                security=OPTIONAL_AUTH,
                parameters=(login,),
            )
        },
        "/api/v1/admin/users": {
            "get": _op(
                "adminUsers",
                "Every user (registry administrators)",
                "admin",
                _ok("AdminUsers", "The users."),
                _READ,
                security=REQUIRED_AUTH,
            )
        },
    }
    for action, summary in (
        ("disable", "Disable a user: their tokens and sessions stop working"),
        ("enable", "Enable a disabled user again"),
    ):
        paths[f"/api/v1/admin/users/{{login}}/{action}"] = {
            "put": _op(
                f"{action}User",
                f"{summary} (registry administrators)",
                "admin",
                _ok("AdminUserAnswer", "The user as it is now."),
                (*_WRITE, 409) if action == "disable" else _WRITE,
                security=REQUIRED_AUTH,
                parameters=(login,),
            )
        }
    return paths


def _operations() -> Json:
    text = {"description": "Text.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/health": {
            "get": _op(
                "health",
                "The process answers",
                "operations",
                _ok("Status", "ok."),
                (),
                security=NO_AUTH,
            )
        },
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness, as every front end answers it",
                "operations",
                {200: json_body(ref("Status"), "alive.", _NO_STORE)},
                (),
                security=NO_AUTH,
            )
        },
        "/readyz": {
            "get": _op(
                "readyz",
                "Readiness: database, data_dir, disk space, S3 (upstream reported only)",
                "operations",
                {
                    200: json_body(ref("Readiness"), "Ready.", _NO_STORE),
                    503: json_body(ref("Readiness"), "Not ready: see `checks`.", _NO_STORE),
                },
                (401, 403),
                security=OPTIONAL_AUTH,
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics",
                "operations",
                {200: text},
                (),
                security=NO_AUTH,
            )
        },
        "/api/openapi.json": {
            "get": _op(
                "openapi",
                "This description",
                "operations",
                {200: json_body({"type": "object"}, "OpenAPI 3.1.")},
                _API,
                security=NO_AUTH,
            )
        },
        "/api/docs": {
            "get": _op(
                "docs",
                "Interactive documentation of this API (Swagger UI, served from here)",
                "operations",
                {
                    200: {
                        "description": "HTML.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                _API,
                security=NO_AUTH,
            )
        },
        "/api/docs/{asset}": {
            "get": _op(
                "docsAsset",
                "A script, style sheet or icon of the documentation page",
                "operations",
                {
                    200: {
                        "description": "The file.",
                        "content": {
                            media: {"schema": {"type": "string"}}
                            for media in ("text/javascript", "text/css", "image/png")
                        },
                    }
                },
                (404, *_API),
                security=NO_AUTH,
                parameters=(
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ),
            )
        },
    }


@cache
def document() -> Json:
    """The description, as a JSON-ready dictionary."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "GhostCrate",
            "version": __version__,
            "description": "A caching crates.io mirror and private Cargo registry. cargo's "
            "index and download routes follow the Cargo registry protocol and are not "
            'described here. Errors are cargo\'s `{"errors": [{"detail": "..."}]}`.',
        },
        "tags": [
            {"name": "crates", "description": "cargo's web API for the private registry"},
            {"name": "sessions", "description": "Sign-in, sessions, single sign-on"},
            {"name": "accounts", "description": "Your API tokens, and users"},
            {"name": "admin", "description": "For the registry's administrators"},
            {"name": "orgs", "description": "Organisations, members and teams"},
            {
                "name": "webhooks",
                "description": "An organisation's signed webhooks and their deliveries",
            },
            {"name": "operations", "description": "Health, readiness, metrics, this description"},
        ],
        "paths": _crates() | _sessions() | _accounts() | _orgs() | _webhooks() | _operations(),
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@cache
def document_bytes() -> bytes:
    return json.dumps(document(), indent=1).encode()
