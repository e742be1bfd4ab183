"""What can go wrong on the way to the upstream, as small exceptions with a user-facing message."""

from __future__ import annotations


class ProxyError(Exception):
    """Base class; `str(error)` is the sentence cargo shows its user."""


class NotFound(ProxyError):
    """The crate, version or file does not exist upstream.

    `checked_at`: when the upstream said so (epoch seconds), if the mirror goes on
    saying so for a while without asking it again; None if it would ask at once.
    """

    def __init__(self, message: str, *, checked_at: float | None = None) -> None:
        super().__init__(message)
        self.checked_at = checked_at


class UpstreamError(ProxyError):
    """The upstream could not be reached, timed out, failed, or sent something unusable."""


class ChecksumMismatch(UpstreamError):
    """The upstream sent a crate whose sha256 differs from its index entry."""

    def __init__(self, crate: str, version: str, expected: str, actual: str) -> None:
        super().__init__(
            f"the upstream sent a crate whose checksum differs from its index entry: "
            f"{crate} {version} has sha256 {actual}, the index says {expected}; "
            f"nothing was cached, try again later or report it to the upstream's operator"
        )
        self.crate = crate
        self.version = version
        self.expected = expected
        self.actual = actual
