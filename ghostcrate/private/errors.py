"""The registry's refusals: each carries the HTTP status and the sentence cargo prints."""

from __future__ import annotations


class RegistryError(Exception):
    """A request the registry refuses; `detail` tells the user what to fix."""

    status = 400
    #: Header fields the answer carries besides the body.
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status


class PublishRejected(RegistryError):
    """A publish body, its metadata or its archive is not acceptable (nothing is stored)."""


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class Unauthorized(RegistryError):
    """No token at all (401: cargo's `auth-required` flow asks for one on it)."""

    status = 401


class Forbidden(RegistryError):
    """A token that is not valid (unknown, expired, revoked) or may not do this, as crates.io."""

    status = 403


class TooManyRequests(RegistryError):
    """Too many attempts (failed sign-ins): 429 with `Retry-After` (RFC 6585, RFC 9110)."""

    status = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.headers = (("Retry-After", str(retry_after)),)


class Refused(Forbidden):
    """A 403 decided by a named rule (`rights`, `[auth]`); `rule` names it in the log."""

    def __init__(self, detail: str, rule: str) -> None:
        super().__init__(detail)
        self.rule = rule
