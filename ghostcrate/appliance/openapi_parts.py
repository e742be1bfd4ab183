"""The pieces the OpenAPI description is built from: schemas, shared answers, security.

`openapi.py` puts them together into paths; these are the shapes the handlers
really send (crates.io's, where a route is one of crates.io's).
"""

from __future__ import annotations

from typing import Any

from ghostcrate.config.model import WEBHOOK_EVENTS
from ghostcrate.private.tokens import SCOPES

Json = dict[str, Any]

#: `CrateName` (cargo/names.py): a letter, then letters, digits, `-`, `_`; 64 at most.
CRATE_NAME = "^[A-Za-z][A-Za-z0-9_-]{0,63}$"
#: User, organisation and team names (accounts.py, orgs.py).
LOGIN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: SemVer 2.0.0, as `is_version` checks it.
VERSION = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
#: A namespace an organisation claims: a crate name, or the start of one and `*`.
NAMESPACE = "^[A-Za-z][A-Za-z0-9_-]{0,63}[*]?$"

#: A token's crate scope, as crates.io allows them: `*`, a name, or a name's start and `*`.
TOKEN_CRATE_PATTERN = r"^(\*|[A-Za-z][A-Za-z0-9_-]{0,63}\*?)$"

JSON_TYPE = "application/json"

#: Whoever sends a credential, or nobody: reads that `[auth]` may open to anyone.
OPTIONAL_AUTH: list[Json] = [{}, {"cargoToken": []}, {"session": []}]
#: A token or a session: writes, `/api/v1/me`.
REQUIRED_AUTH: list[Json] = [{"cargoToken": []}, {"session": []}]
NO_AUTH: list[Json] = []


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def answer(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


def json_body(schema: Json, description: str, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": {JSON_TYPE: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def strings(pattern: str | None = None, *, min_items: int = 1) -> Json:
    item: Json = {"type": "string", "minLength": 1}
    if pattern is not None:
        item = {"type": "string", "pattern": pattern}
    return {"type": "array", "items": item, "minItems": min_items}


def obj(properties: Json, required: list[str] | None = None) -> Json:
    schema: Json = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_NULLABLE_STRING: Json = {"type": ["string", "null"]}
_TIME: Json = {"type": "string", "format": "date-time"}

SCHEMAS: Json = {
    "Errors": obj(
        {
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": obj({"detail": {"type": "string"}}, ["detail"]),
            }
        },
        ["errors"],
    ),
    "Ok": obj({"ok": {"const": True}}, ["ok"]),
    "OkMessage": obj({"ok": {"const": True}, "msg": {"type": "string"}}, ["ok", "msg"]),
    "PublishAnswer": obj(
        {
            "warnings": obj(
                {
                    "invalid_categories": {"type": "array", "items": {"type": "string"}},
                    "invalid_badges": {"type": "array", "items": {"type": "string"}},
                    "other": {"type": "array", "items": {"type": "string"}},
                },
                ["invalid_categories", "invalid_badges", "other"],
            )
        },
        ["warnings"],
    ),
    "SearchHit": obj(
        {
            "name": {"type": "string"},
            "max_version": {"type": "string"},
            "description": {"type": "string"},
        },
        ["name", "max_version", "description"],
    ),
    "SearchAnswer": obj(
        {
            "crates": {"type": "array", "items": ref("SearchHit")},
            "meta": obj({"total": {"type": "integer", "minimum": 0}}, ["total"]),
        },
        ["crates", "meta"],
    ),
    "Crate": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "description": _NULLABLE_STRING,
            "homepage": _NULLABLE_STRING,
            "repository": _NULLABLE_STRING,
            "documentation": _NULLABLE_STRING,
            "keywords": {"type": "array", "items": {"type": "string"}},
            "max_version": _NULLABLE_STRING,
            "newest_version": _NULLABLE_STRING,
            "max_stable_version": _NULLABLE_STRING,
            "created_at": _TIME,
            "updated_at": _TIME,
        },
        ["id", "name", "keywords", "max_version", "newest_version", "created_at", "updated_at"],
    ),
    "Version": obj(
        {
            "crate": {"type": "string"},
            "num": {"type": "string"},
            "yanked": {"type": "boolean"},
            "checksum": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "crate_size": {"type": "integer", "minimum": 0},
            "license": _NULLABLE_STRING,
            "created_at": _TIME,
            "dl_path": {"type": "string"},
            "published_by": {
                "oneOf": [obj({"login": {"type": "string"}}, ["login"]), {"type": "null"}]
            },
        },
        ["crate", "num", "yanked", "checksum", "crate_size", "created_at", "dl_path"],
    ),
    "CrateAnswer": obj(
        {"crate": ref("Crate"), "versions": {"type": "array", "items": ref("Version")}},
        ["crate", "versions"],
    ),
    "Owner": obj(
        {
            "id": {"type": "integer"},
            "login": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"enum": ["user", "team"]},
        },
        ["id", "login", "name", "kind"],
    ),
    "Owners": obj({"users": {"type": "array", "items": ref("Owner")}}, ["users"]),
    "OwnersChange": obj({"users": strings()}, ["users"]),
    "User": obj(
        {
            "id": {"type": "integer"},
            "login": {"type": "string"},
            "name": {"type": "string"},
            "admin": {"type": "boolean"},
        },
        ["id", "login", "name", "admin"],
    ),
    "Me": obj({"user": ref("User")}, ["user"]),
    "SignIn": {
        "description": "`login` is an alias of `name`.",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64},
            "login": {"type": "string", "minLength": 1, "maxLength": 64},
            "password": {"type": "string", "maxLength": 1024},
        },
        "required": ["password"],
        "anyOf": [{"required": ["name"]}, {"required": ["login"]}],
    },
    "Refresh": obj(
        {"refresh_token": {"type": "string", "minLength": 1, "maxLength": 256}},
        ["refresh_token"],
    ),
    "Session": obj(
        {
            "token": {"type": "string", "description": "a JWT: send it as `Bearer <token>`"},
            "refresh_token": {"type": "string"},
            "expires_in": {"type": "integer"},
            "refresh_expires_in": {"type": "integer"},
            "user": ref("User"),
        },
        ["token", "refresh_token", "expires_in", "refresh_expires_in", "user"],
    ),
    "Member": obj(
        {
            "login": {"type": "string"},
            "role": {"enum": ["owner", "admin", "member", "contributor"]},
        },
        ["login", "role"],
    ),
    "Team": obj(
        {
            "name": {"type": "string"},
            "login": {"type": "string", "description": "ORG:TEAM, as a crate owner"},
            "members": {"type": "array", "items": {"type": "string"}},
        },
        ["name", "login", "members"],
    ),
    "Org": obj(
        {
            "name": {"type": "string"},
            "namespaces": {"type": "array", "items": {"type": "string"}},
            "members": {"type": "array", "items": ref("Member")},
            "teams": {"type": "array", "items": ref("Team")},
        },
        ["name", "namespaces", "members", "teams"],
    ),
    "Orgs": obj({"orgs": {"type": "array", "items": ref("Org")}}, ["orgs"]),
    "NewOrg": obj(
        {
            "name": {"type": "string", "pattern": LOGIN},
            "namespaces": strings(NAMESPACE, min_items=0),
            "owner": {"type": ["string", "null"], "pattern": LOGIN},
        },
        ["name"],
    ),
    "Members": obj({"members": {"type": "array", "items": ref("Member")}}, ["members"]),
    "MembersChange": obj(
        {
            "users": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {
                        "login": {"type": "string", "pattern": LOGIN},
                        "role": {"enum": ["owner", "admin", "member", "contributor"]},
                    },
                    ["login"],
                ),
            }
        },
        ["users"],
    ),
    "Logins": obj({"users": strings(LOGIN)}, ["users"]),
    "Teams": obj({"teams": {"type": "array", "items": ref("Team")}}, ["teams"]),
    "NewTeam": obj({"name": {"type": "string", "pattern": LOGIN}}, ["name"]),
    "Webhook": obj(
        {
            "id": {"type": "integer"},
            "org": {"type": ["string", "null"]},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"enum": list(WEBHOOK_EVENTS)}},
            "created_at": _TIME,
        },
        ["id", "org", "url", "events", "created_at"],
    ),
    "Webhooks": obj({"webhooks": {"type": "array", "items": ref("Webhook")}}, ["webhooks"]),
    "OneWebhook": obj({"webhook": ref("Webhook")}, ["webhook"]),
    "NewWebhook": obj(
        {
            "url": {
                "type": "string",
                "description": "http:// or https://; checked against "
                "`[webhooks] allow_targets` when it resolves to a non-public address",
            },
            "events": {
                "type": "array",
                "items": {"enum": list(WEBHOOK_EVENTS)},
                "minItems": 1,
                "description": "default: every event",
            },
        },
        ["url"],
    ),
    "WebhookCreated": obj(
        {
            "webhook": ref("Webhook"),
            "secret": {
                "type": "string",
                "description": "the HMAC-SHA256 signing secret, shown only here",
            },
        },
        ["webhook", "secret"],
    ),
    "Delivery": obj(
        {
            "delivery": {"type": "string"},
            "event": {"enum": list(WEBHOOK_EVENTS)},
            "crate": {"type": "string"},
            "version": {"type": ["string", "null"]},
            "state": {"enum": ["pending", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "created_at": _TIME,
            "last_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "next_at": {"type": ["string", "null"], "format": "date-time"},
            "done_at": {"type": ["string", "null"], "format": "date-time"},
        },
        ["delivery", "event", "crate", "version", "state", "attempts", "created_at"],
    ),
    "Deliveries": obj(
        {"deliveries": {"type": "array", "items": ref("Delivery"), "maxItems": 100}},
        ["deliveries"],
    ),
    "Redrive": {
        "oneOf": [
            obj({"deliveries": strings()}, ["deliveries"]),
            obj({"dead": {"const": True}}, ["dead"]),
        ]
    },
    "Retried": obj({"retried": {"type": "integer", "minimum": 0}}, ["retried"]),
    "ApiToken": obj(
        {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "created_at": _TIME,
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
            "expired_at": {"type": ["string", "null"], "format": "date-time"},
            "crate_scopes": {"type": ["array", "null"], "items": {"type": "string"}},
            "endpoint_scopes": {"type": ["array", "null"], "items": {"enum": list(SCOPES)}},
        },
        ["id", "name", "created_at", "expired_at", "crate_scopes", "endpoint_scopes"],
    ),
    "ApiTokens": obj({"api_tokens": {"type": "array", "items": ref("ApiToken")}}, ["api_tokens"]),
    "NewApiToken": obj(
        {
            "api_token": obj(
                {
                    "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S"},
                    "crate_scopes": {
                        "type": ["array", "null"],
                        "items": {"type": "string", "pattern": TOKEN_CRATE_PATTERN},
                        "minItems": 1,
                        "description": "null or absent: every crate.",
                    },
                    "endpoint_scopes": {
                        "type": ["array", "null"],
                        "items": {"enum": list(SCOPES)},
                        "minItems": 1,
                        "description": "null or absent: every endpoint.",
                    },
                    "expired_at": {
                        "type": ["string", "null"],
                        "format": "date-time",
                        "description": "In the future; null: the token does not expire.",
                    },
                },
                ["name"],
            )
        },
        ["api_token"],
    ),
    "CreatedApiToken": obj(
        {
            "api_token": {
                "allOf": [
                    ref("ApiToken"),
                    obj(
                        {"token": {"type": "string", "description": "Shown only this once."}},
                        ["token"],
                    ),
                ]
            }
        },
        ["api_token"],
    ),
    "PublicUser": obj(
        {
            "user": obj(
                {
                    "id": {"type": "integer"},
                    "login": {"type": "string"},
                    "name": {"type": "string"},
                    "kind": {"const": "user"},
                },
                ["id", "login", "name", "kind"],
            )
        },
        ["user"],
    ),
    "AdminUser": obj(
        {
            "id": {"type": "integer"},
            "login": {"type": "string"},
            "name": {"type": "string"},
            "admin": {"type": "boolean"},
            "disabled": {"type": "boolean"},
        },
        ["id", "login", "name", "admin", "disabled"],
    ),
    "AdminUsers": obj({"users": {"type": "array", "items": ref("AdminUser")}}, ["users"]),
    "AdminUserAnswer": obj({"user": ref("AdminUser")}, ["user"]),
    "Empty": {"type": "object", "maxProperties": 0},
    "Status": obj({"status": {"type": "string"}}, ["status"]),
    "Readiness": obj(
        {
            "status": {"enum": ["ready", "not ready"]},
            "checks": {
                "type": "object",
                "additionalProperties": obj(
                    {"ok": {"type": "boolean"}, "ms": {"type": "number"}}, ["ok", "ms"]
                ),
            },
            "upstream": obj({"mode": {"type": "string"}}, ["mode"]),
        },
        ["status", "checks", "upstream"],
    ),
}

_RETRY_AFTER: Json = {
    "Retry-After": {
        "description": "Seconds to wait before asking again (RFC 9110 10.2.3).",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

RESPONSES: Json = {
    name: json_body(ref("Errors"), description)
    for name, description in {
        "BadRequest": "The request is not what this route takes; `detail` says what to send.",
        "Unauthorized": "No credential, where one is needed.",
        "Forbidden": "The credential is not valid, or a rule refuses (the log names the rule).",
        "NotFound": "No such thing here, or one the caller may not see.",
        "Conflict": "It conflicts with what is already there.",
        "PayloadTooLarge": "The body is larger than this registry accepts.",
        "RequestTimeout": "The body stalled.",
        "BadGateway": "A single sign-on provider could not be reached or answered nonsense.",
        "Unavailable": "A service the request needs (storage, the directory) is not available.",
    }.items()
} | {
    "TooManyRequests": json_body(
        ref("Errors"), "Too many requests: wait `Retry-After` seconds.", _RETRY_AFTER
    )
}

SECURITY_SCHEMES: Json = {
    "cargoToken": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "An API token (`gcr_...`) as cargo sends it: the bare token. "
        "`Bearer <token>` is accepted too.",
    },
    "session": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A session token from `POST /api/v1/session` or a single sign-on callback.",
    },
}
