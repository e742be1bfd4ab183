"""Cargo's error format, and the middleware that turns exceptions into it.

Cargo prints `errors[].detail` to its user (registry-web-api.md), so each
detail says what is wrong and, where it can, what to do.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from ghostcrate.appliance.keys import AUDIT, METRICS
from ghostcrate.appliance.logs import REQUEST_ID
from ghostcrate.appliance.policy import failure_reason
from ghostcrate.appliance.replies import error_reply, status_of
from ghostcrate.private import audit
from ghostcrate.private.audit_refusals import Refusal
from ghostcrate.private.errors import Refused, RegistryError
from ghostcrate.proxy import ProxyError

log = logging.getLogger(__name__)


def error_response(status: int, detail: str) -> web.Response:
    reply = error_reply(status, detail)
    return web.Response(status=status, body=reply.body, content_type=reply.content_type)


@web.middleware
async def cargo_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProxyError as error:
        return error_response(status_of(error), str(error))
    except RegistryError as error:
        rule = error.rule if isinstance(error, Refused) else _RULES.get(error.status)
        if error.status in (401, 403):
            request.app[METRICS].registry.auth_failures.labels(failure_reason(error.status)).inc()
            # Every refusal of who may do what is logged with the rule that made it.
            log.info("refused", extra={"rule": rule, "detail": error.detail, "path": request.path})
        audit_failure(request, rule, error.detail)
        response = error_response(error.status, error.detail)
        response.headers.update(error.headers)
        return response
    except web.HTTPException as error:
        if error.status < 400 or error.content_type == "application/json":
            raise
        response = error_response(error.status, f"{error.reason}: {request.method} {request.path}")
        if "Allow" in error.headers:  # a 405 names the methods the route takes (RFC 9110 15.5.6)
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        audit_failure(request, None, "internal error (see the log)")
        return error_response(
            500, f"internal error in GhostCrate (request id {REQUEST_ID.get()}); see its log"
        )


#: The audit rule of a refusal that names none: no or a bad credential, too many attempts.
_RULES = {401: "authentication", 403: "authentication", 429: "throttle"}


def audit_failure(request: web.Request, rule: str | None, detail: str) -> None:
    """Note a refusal (any request) or a failed write for the audit log (`rule` None: an
    error, not a refusal). Reads that fail are not writes: they are not recorded."""
    if rule is None and request.method in ("GET", "HEAD"):
        return
    source = audit.origin()
    found = request.match_info
    handler = getattr(found.handler, "__name__", "unknown")
    refusal = Refusal(
        handler.replace("_", "-"),
        audit.ERROR if rule is None else audit.REFUSED,
        rule,
        source.remote,
        source.user,
        source.credential,
        crate=found.get("name"),
        version=found.get("version"),
        org=found.get("org"),
        team=found.get("team"),
        target=source.target,
    )
    request.app[AUDIT].note(refusal, request_id=source.request_id, detail=detail)
