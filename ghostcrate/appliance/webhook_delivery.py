"""The deliverer: sends the webhooks' outbox in the background, one process at a time.

Every worker runs `Deliverer.run`, but only the one holding an exclusive
`flock` on `webhooks.lock` (beside the registry database) delivers; the kernel
lets the lock go when that process ends, and another worker takes over within
`ELECTION_SECONDS`. The deliverer sends each webhook's oldest pending delivery
(so each webhook gets its events in order; webhooks do not wait for each
other), retries a failure after `backoff_seconds` doubled per attempt with
jitter, and makes it dead after `max_attempts`. Requests never follow
redirects, read at most `READ_LIMIT` bytes of an answer, and for an
organisation's webhook connect only to allowed addresses (`webhook_targets`).
A publish never waits for any of this: it only wrote the outbox rows.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import ipaddress
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from prometheus_client import Counter

from ghostcrate import __version__
from ghostcrate.config.model import WebhooksSettings
from ghostcrate.private.webhook_targets import Address, TargetRefused, Targets, check_target
from ghostcrate.private.webhooks import (
    DEAD,
    DELIVERED,
    DELIVERY_HEADER,
    EVENT_HEADER,
    PENDING,
    SIGNATURE_HEADER,
    Due,
    Webhooks,
    sign,
)

log = logging.getLogger(__name__)

#: How often a worker that is not the deliverer tries to become it.
ELECTION_SECONDS = 1.0
#: How often the deliverer looks for deliveries that came due.
POLL_SECONDS = 0.2
#: The most of an answer's body that is read (it is only logged, shortened).
READ_LIMIT = 4096
#: How often the deliverer forgets deliveries older than `keep_days`.
PRUNE_SECONDS = 3600.0


def backoff(attempts: int, settings: WebhooksSettings) -> float:
    """Seconds to wait after the `attempts`-th failure: `backoff_seconds` doubled per
    further attempt, capped, then between half and all of that (jitter)."""
    doubled = settings.backoff_seconds * 2.0 ** min(attempts - 1, 64)
    return min(doubled, settings.max_backoff_seconds) * random.uniform(0.5, 1.0)


class _GuardedResolver(AbstractResolver):
    """The default resolver, keeping only the addresses an organisation's webhook may reach."""

    def __init__(self, targets: Targets) -> None:
        self._inner = DefaultResolver()
        self._targets = targets

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._targets.allows_host(host):
            return found
        allowed = [result for result in found if self._targets.allows(_address(result))]
        if not allowed:
            raise OSError(f"{host} resolves only to internal addresses (see allow_targets)")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _address(result: ResolveResult) -> Address:
    return ipaddress.ip_address(result["host"])


class Deliverer:
    def __init__(
        self,
        webhooks: Webhooks,
        settings: WebhooksSettings,
        lock_path: Path,
        *,
        trusted: aiohttp.ClientSession,
        guarded: aiohttp.ClientSession,
        counted: Counter,
    ) -> None:
        self._webhooks = webhooks
        self._counted = counted
        self._settings = settings
        self._targets = Targets.parse(settings.allow_targets)
        self._secrets = {e.name: e.secret_value() for e in settings.endpoints}
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._trusted = trusted
        self._guarded = guarded
        #: Webhook id -> the task delivering its oldest pending delivery.
        self._sending: dict[int, asyncio.Task[None]] = {}
        #: Webhook id -> when its last attempt ended (monotonic clock).
        self._ended: dict[int, float] = {}
        self._pruned = float("-inf")

    @classmethod
    @asynccontextmanager
    async def open(
        cls, webhooks: Webhooks, settings: WebhooksSettings, lock_path: Path, counted: Counter
    ) -> AsyncIterator[Deliverer]:
        """A deliverer with its HTTP clients, counting attempts by outcome in `counted`;
        stopped (and its lock let go) on exit."""
        timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        headers = {"User-Agent": f"GhostCrate-Webhook/{__version__}"}
        resolver = _GuardedResolver(Targets.parse(settings.allow_targets))
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, headers=headers, trust_env=False) as trusted,
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(resolver=resolver),
                    timeout=timeout,
                    headers=headers,
                    trust_env=False,
                ) as guarded,
            ):
                deliverer = cls(
                    webhooks,
                    settings,
                    lock_path,
                    trusted=trusted,
                    guarded=guarded,
                    counted=counted,
                )
                try:
                    yield deliverer
                finally:
                    await deliverer.stop()
        finally:
            await resolver.close()

    async def run(self) -> None:
        """Forever: become the deliverer when no other process is, then deliver."""
        while True:
            if self._lock_fd is None:
                if not self._elected():
                    await asyncio.sleep(ELECTION_SECONDS)
                    continue
                log.info("webhook deliverer elected", extra={"pid": os.getpid()})
            try:
                await self._round()
            except Exception:  # the database may be busy for a moment: the next round tries
                log.exception("webhook round failed")
            await asyncio.sleep(POLL_SECONDS)

    async def stop(self) -> None:
        tasks = list(self._sending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # lets the lock go
            self._lock_fd = None

    def _elected(self) -> bool:
        """Take the deliverer's lock if it is free (never waits)."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def _round(self) -> None:
        asked, now = time.monotonic(), time.time()
        if asked - self._pruned > PRUNE_SECONDS:
            self._pruned = asked
            forgotten = await self._webhooks.prune(now - self._settings.keep_days * 86400)
            if forgotten:
                log.info("webhook deliveries forgotten", extra={"deliveries": forgotten})
        for due in await self._webhooks.due():
            # An attempt that ended while the query ran may be missing from what it read.
            ended = self._ended.get(due.webhook_id, float("-inf"))
            if due.next_at <= now and due.webhook_id not in self._sending and ended < asked:
                task = asyncio.get_running_loop().create_task(self._deliver(due))
                self._sending[due.webhook_id] = task
                task.add_done_callback(functools.partial(self._sent, due.webhook_id))

    def _sent(self, webhook_id: int, _: asyncio.Task[None]) -> None:
        self._sending.pop(webhook_id, None)
        self._ended[webhook_id] = time.monotonic()

    async def _deliver(self, due: Due) -> None:
        try:
            await self._attempt(due)
        except Exception:  # recorded nothing: the delivery is still pending, tried again
            log.exception("webhook delivery attempt failed", extra={"webhook": due.webhook_id})

    async def _attempt(self, due: Due) -> None:
        status, error = await self._send(due)
        attempts = due.attempts + 1
        retry_at = None
        if error is not None and attempts < self._settings.max_attempts:
            retry_at = time.time() + backoff(attempts, self._settings)
        state = await self._webhooks.attempted(due, status=status, error=error, retry_at=retry_at)
        self._counted.labels("retry" if state == PENDING else state).inc()
        fields = {
            "webhook": due.webhook_id,
            "delivery": due.delivery,
            "event": due.event,
            "attempt": attempts,
            "status": status,
            "state": state,
        }
        if state == DELIVERED:
            log.info("webhook delivered", extra=fields)
        elif state == DEAD:
            log.warning("webhook delivery dead", extra={**fields, "error": error})
        else:
            log.info("webhook delivery failed", extra={**fields, "error": error})

    async def _send(self, due: Due) -> tuple[int | None, str | None]:
        """One attempt: the answer's status, and what went wrong (None: delivered)."""
        secret = due.secret if due.org is not None else self._secrets.get(due.name or "")
        if not secret:
            return None, "no secret: the webhook is no longer configured"
        session = self._trusted
        if due.org is not None:
            session = self._guarded
            try:
                await check_target(due.url, self._targets)
            except TargetRefused as refused:
                return None, refused.detail
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, timestamp, due.body),
            EVENT_HEADER: due.event,
            DELIVERY_HEADER: due.delivery,
        }
        try:
            async with session.post(
                due.url, data=due.body, headers=headers, allow_redirects=False
            ) as response:
                answer = await response.content.read(READ_LIMIT)
                if 200 <= response.status < 300:
                    return response.status, None
                text = answer[:200].decode(errors="replace")
                return response.status, f"answered {response.status}: {text}".strip()
        except TimeoutError:
            return None, f"no answer within {self._settings.timeout_seconds:g} s"
        except aiohttp.ClientError as failure:
            return None, f"{type(failure).__name__}: {failure}"[:300]
