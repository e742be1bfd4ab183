"""Running the application: one process, or a supervisor and N workers on one port.

With `[server] workers = N > 1`, a supervisor binds N sockets to the port with
SO_REUSEPORT, shared by its workers alone (`listeners.py`; the kernel spreads
connections over them), and starts N worker processes, one on each, which
share the disk tier. It forwards SIGTERM/SIGINT to them, and restarts a worker
that dies on its own, on the same socket. Under systemd (`Type=notify`) the
main process says READY=1 once every worker listens, STOPPING=1 when it is
told to stop, and pings the watchdog if the unit has one (`sdnotify.py`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Protocol

from aiohttp import web

from ghostcrate import __version__
from ghostcrate.appliance import exitcodes, sdnotify
from ghostcrate.appliance.app import create_app
from ghostcrate.appliance.fastlane import KEEPALIVE_SECONDS
from ghostcrate.appliance.logs import ACCESS_LOGGER, AccessLogger, access_sink, configure_logging
from ghostcrate.appliance.preflight import cannot_listen
from ghostcrate.appliance.reload import reread
from ghostcrate.appliance.runner import FastLaneRunner
from ghostcrate.appliance.supervisor import supervise
from ghostcrate.config import ConfigSource, Settings
from ghostcrate.private.registry import Registry

log = logging.getLogger("ghostcrate")

#: Threads per process for blocking disk work.
DISK_THREADS = 64
#: How long the disk threads may take to start.
STARTUP_SECONDS = 30.0
#: A worker that dies sooner than this after its start is restarted only after a pause.
RESTART_BACKOFF_SECONDS = 1.0


def serve(settings: Settings, source: ConfigSource) -> int:
    """Serve until stopped; `source` is read again on SIGHUP (`reload.py`)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server can take it
    configure_logging(settings.log)
    log.info(f"starting: {describe(settings)}", extra=_startup_fields(settings))
    asyncio.run(_prepare_registry(settings))
    if settings.server.workers == 1:
        try:
            _run(settings, None, _announce(settings), source)
        except CannotListen as error:
            print(f"ghostcrate: {error}", file=sys.stderr)
            return exitcodes.CONFIG
        code = exitcodes.OK
    else:
        code = supervise(settings, source, _worker_main, _announce(settings))
    log.info("stopped")
    return code


async def _prepare_registry(settings: Settings) -> None:
    """Before any worker starts: migrate the registry database, remove what a crash left."""
    async with Registry.open(settings) as registry:
        await registry.recover()


def describe(settings: Settings) -> str:
    """What the appliance is about to do, in one sentence for the operator."""
    upstream = settings.upstream
    server = settings.server
    cache = settings.cache
    what = {
        "online": f"revalidates index files after {upstream.index_ttl:g} s",
        "offline": "never asks it; offers only cached crates",
        "only-cached": "offers and serves only cached crates",
    }[upstream.mode]
    tiers = [
        f"memory {_size(cache.memory_bytes)} per worker",
        f"disk {_size(cache.disk_max_bytes)}",
    ]
    if settings.s3 is not None:
        tiers.append(f"S3 bucket {settings.s3.bucket}")
    workers = "1 worker" if server.workers == 1 else f"{server.workers} workers"
    return (
        f"{upstream.mode} mirror of {upstream.index} ({what}), listening on {server.listen} "
        f"as {server.base_url} with {workers}; tiers: {', '.join(tiers)}; "
        f"data in {settings.data_dir}"
    )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _startup_fields(settings: Settings) -> dict[str, object]:
    return {
        "version": __version__,
        "mode": settings.upstream.mode,
        "listen": settings.server.listen,
        "public_url": settings.server.base_url,
        "upstream": settings.upstream.index,
        "data_dir": str(settings.data_dir),
        "workers": settings.server.workers,
        "memory_bytes": settings.cache.memory_bytes,
        "disk_max_bytes": settings.cache.disk_max_bytes,
        "s3_bucket": settings.s3.bucket if settings.s3 is not None else None,
    }


def _announce(settings: Settings) -> Callable[[], None]:
    """What the main process does once every worker listens: tell systemd, if it asks."""

    def ready() -> None:
        sdnotify.notify("READY=1", f"STATUS=serving {settings.server.base_url}")

    return ready


def _run(
    settings: Settings,
    sock: socket.socket | None,
    listening: Callable[[], None],
    source: ConfigSource,
) -> None:
    """Serve on `sock` (a worker's), or on a socket of its own bound to [server] listen."""
    loop = _new_event_loop()
    try:
        loop.run_until_complete(_serve_until_stopped(settings, sock, listening, source))
    finally:
        loop.close()


async def _serve_until_stopped(
    settings: Settings,
    sock: socket.socket | None,
    listening: Callable[[], None],
    source: ConfigSource,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain for up to `shutdown_timeout` and close.

    `listening` is called once the socket is served. SIGHUP reloads the configuration
    (`reload.py`). Alone (no `sock`), this process is systemd's main one: it feeds the
    watchdog and says STOPPING=1.
    """
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_disk_executor(DISK_THREADS))
    stop, hangup = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup.set)
    runner = await _runner(settings, None)
    retiring: set[asyncio.Task[None]] = set()
    try:
        sockets = await _listen(runner, settings, sock)
        # What exists now (modules, the app) lives as long as the process: out of the
        # garbage collector's full collections, which it made 50-100 ms pauses.
        gc.collect()
        gc.freeze()
        log.info("listening", extra={"url": settings.server.base_url})
        listening()
        period = sdnotify.watchdog_period() if sock is None else None
        watchdog = asyncio.create_task(sdnotify.feed_watchdog(period)) if period else None
        while await _next_signal(stop, hangup) is hangup:
            new = reread(settings, source)
            if new is None:
                continue
            try:
                replacement = await _runner(new, runner.app)
                sockets = await _listen_again(replacement, sockets)
            except Exception:
                log.exception("the new configuration could not be started; the old one stays")
                continue
            retiring.add(asyncio.create_task(_retire(runner)))
            if new.log != settings.log:
                configure_logging(new.log)
            runner, settings = replacement, new
            log.info("serving with the new configuration")
        if sock is None:
            sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        log.info("stopping", extra={"timeout": settings.server.shutdown_timeout})
    finally:
        await runner.cleanup()
        await asyncio.gather(*retiring)
        sink = access_sink()
        if sink is not None:
            sink.flush()


async def _runner(settings: Settings, previous: web.Application | None) -> FastLaneRunner:
    """The application for `settings`, started (cache, registry and mirror open)."""
    runner = FastLaneRunner(
        create_app(settings, carried=previous),
        shutdown_timeout=settings.server.shutdown_timeout,
        access_log_class=AccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER) if settings.server.access_log else None,
        keepalive_timeout=KEEPALIVE_SECONDS,
    )
    await runner.setup()
    return runner


class _Listening(Protocol):
    """A listening socket (aiohttp's sites hold asyncio's wrappers of theirs)."""

    def fileno(self) -> int: ...


async def _listen(
    runner: FastLaneRunner, settings: Settings, sock: socket.socket | None
) -> list[_Listening]:
    """Serve on `sock`, or bind [server] listen; the listening sockets."""
    server = settings.server
    if sock is not None:
        await web.SockSite(runner, sock).start()
        return [sock]
    site = web.TCPSite(runner, server.host, server.port)
    try:
        await site.start()
    except OSError as error:  # taken since the CLI's check
        raise CannotListen(cannot_listen(server.host, server.port, error)) from None
    bound: Any = site._server  # asyncio's Server or uvloop's: both have `sockets`
    return list(bound.sockets)


async def _listen_again(runner: FastLaneRunner, sockets: list[_Listening]) -> list[_Listening]:
    """Serve `runner` on copies of `sockets` too (the old runner closes its own when it
    retires; until then both accept)."""
    copies: list[_Listening] = [
        socket.socket(fileno=os.dup(listening.fileno())) for listening in sockets
    ]
    for copy in copies:
        assert isinstance(copy, socket.socket)
        await web.SockSite(runner, copy).start()
    return copies


async def _retire(runner: FastLaneRunner) -> None:
    """Stop accepting, let what is in flight finish, close: as at SIGTERM."""
    await runner.cleanup()
    log.info("the old configuration's requests are done")


async def _next_signal(*events: asyncio.Event) -> asyncio.Event:
    """Wait for one of `events` to be set; clear and return it (a set stop stays set)."""
    waits = {asyncio.ensure_future(event.wait()): event for event in events}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()
    event = waits[done.pop()]
    if event is not events[0]:
        event.clear()
    return event


def _disk_executor(threads: int) -> ThreadPoolExecutor:
    """The executor for disk work (cache reads, fills, fsync), its threads all started.

    Python's default of cores + 4 threads queued 40 concurrent misses behind each
    other. Its threads are started lazily, one per `submit` that finds none idle,
    and `submit` waits for the new thread to run: in the first burst of misses
    after a start, the event loop stalled for 10-30 ms at a time doing so.
    """
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="disk")
    everyone = threading.Barrier(threads)  # each task waits until every thread runs one
    for _ in range(threads):
        executor.submit(everyone.wait, STARTUP_SECONDS)
    return executor


class CannotListen(Exception):
    """The address cannot be bound; the text is the line for the operator."""


def _worker_main(
    settings: Settings, sock: socket.socket, ready: Connection, source: ConfigSource
) -> None:
    """A worker: serve on `sock`; send this process's id on `ready` once listening."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server can take it
    configure_logging(settings.log)

    def listening() -> None:
        ready.send(os.getpid())
        ready.close()

    _run(settings, sock, listening, source)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
