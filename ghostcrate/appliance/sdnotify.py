"""systemd's notify protocol (`sd_notify(3)`): READY=1, STOPPING=1, STATUS= and watchdog pings.

Each message is one datagram to the socket named by `$NOTIFY_SOCKET` (a path, or
`@name` in the abstract namespace), so no library is needed. Outside systemd
(no `$NOTIFY_SOCKET`) every call does nothing. Only the main process speaks:
with workers, the supervisor, once every worker has said that it listens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)

#: Pings per watchdog interval, as `sd_watchdog_enabled(3)` advises (at least two).
PINGS_PER_INTERVAL = 2


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1") as one message; whether a message was sent."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as error:
        log.warning("cannot notify systemd", extra={"socket": address, "error": str(error)})
        return False
    return True


def watchdog_period() -> float | None:
    """Seconds between watchdog pings, if systemd asked this process for them."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / PINGS_PER_INTERVAL


async def feed_watchdog(period: float) -> None:
    """Ping the watchdog every `period` seconds, for as long as this event loop runs."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(period)


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    return "\0" + path[1:] if path.startswith("@") else path
