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
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web
from prometheus_client import multiprocess

from ghostcrate import __version__
from ghostcrate.appliance import exitcodes, sdnotify
from ghostcrate.appliance.app import create_app
from ghostcrate.appliance.fastlane import KEEPALIVE_SECONDS
from ghostcrate.appliance.listeners import worker_sockets
from ghostcrate.appliance.logs import ACCESS_LOGGER, AccessLogger, access_sink, configure_logging
from ghostcrate.appliance.metrics import MULTIPROCESS_ENV
from ghostcrate.appliance.preflight import cannot_listen
from ghostcrate.appliance.runner import FastLaneRunner
from ghostcrate.config import Settings
from ghostcrate.private.registry import Registry

log = logging.getLogger("ghostcrate")

#: Threads per process for blocking disk work.
DISK_THREADS = 64
#: How long the disk threads may take to start.
STARTUP_SECONDS = 30.0
#: A worker that dies sooner than this after its start is restarted only after a pause.
RESTART_BACKOFF_SECONDS = 1.0


def serve(settings: Settings) -> int:
    configure_logging(settings.log)
    log.info(f"starting: {describe(settings)}", extra=_startup_fields(settings))
    asyncio.run(_prepare_registry(settings))
    if settings.server.workers == 1:
        try:
            _run(settings, None, _announce(settings))
        except CannotListen as error:
            print(f"ghostcrate: {error}", file=sys.stderr)
            return exitcodes.CONFIG
        code = exitcodes.OK
    else:
        code = _supervise(settings)
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


def _run(settings: Settings, sock: socket.socket | None, listening: Callable[[], None]) -> None:
    """Serve on `sock` (a worker's), or on a socket of its own bound to [server] listen."""
    loop = _new_event_loop()
    try:
        loop.run_until_complete(_serve_until_stopped(settings, sock, listening))
    finally:
        loop.close()


async def _serve_until_stopped(
    settings: Settings, sock: socket.socket | None, listening: Callable[[], None]
) -> None:
    """Serve until SIGTERM or SIGINT, then drain for up to `shutdown_timeout` and close.

    `listening` is called once the socket is served. Alone (no `sock`), this process is
    systemd's main one: it feeds the watchdog and says STOPPING=1.
    """
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_disk_executor(DISK_THREADS))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = FastLaneRunner(
        create_app(settings),
        shutdown_timeout=settings.server.shutdown_timeout,
        access_log_class=AccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER) if settings.server.access_log else None,
        keepalive_timeout=KEEPALIVE_SECONDS,
    )
    await runner.setup()
    try:
        server = settings.server
        site: web.BaseSite
        if sock is None:
            site = web.TCPSite(runner, server.host, server.port)
        else:
            site = web.SockSite(runner, sock)
        try:
            await site.start()
        except OSError as error:  # taken since the CLI's check
            raise CannotListen(cannot_listen(server.host, server.port, error)) from None
        # What exists now (modules, the app) lives as long as the process: out of the
        # garbage collector's full collections, which it made 50-100 ms pauses.
        gc.collect()
        gc.freeze()
        log.info("listening", extra={"url": settings.server.base_url})
        listening()
        period = sdnotify.watchdog_period() if sock is None else None
        watchdog = asyncio.create_task(sdnotify.feed_watchdog(period)) if period else None
        await stop.wait()
        if sock is None:
            sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        log.info("stopping", extra={"timeout": settings.server.shutdown_timeout})
    finally:
        await runner.cleanup()
        sink = access_sink()
        if sink is not None:
            sink.flush()


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


def _worker_main(settings: Settings, sock: socket.socket, ready: Connection) -> None:
    """A worker: serve on `sock`; send this process's id on `ready` once listening."""
    configure_logging(settings.log)

    def listening() -> None:
        ready.send(os.getpid())
        ready.close()

    _run(settings, sock, listening)


def _supervise(settings: Settings) -> int:  # noqa: PLR0915 - one loop owns the workers' lives
    """Run the workers until stopped, each on its own socket; restart one that dies."""
    server = settings.server
    try:
        sockets = worker_sockets(server.host, server.port, server.workers)
    except OSError as error:  # taken since the CLI's check
        print(f"ghostcrate: {cannot_listen(server.host, server.port, error)}", file=sys.stderr)
        return exitcodes.CONFIG
    # Workers write their metrics to files here; any of them serves the sum at /metrics.
    metrics_dir = settings.data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(metrics_dir)
    context = multiprocessing.get_context("spawn")
    stopping = False
    announce = _announce(settings)
    #: Workers that have not said yet that they listen: their end of the pipe -> slot.
    waiting: dict[Connection, int] = {}
    listening: set[int] = set()
    announced = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            sdnotify.notify("STOPPING=1")
        stopping = True
        for process, _ in workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker drains its requests

    def start(slot: int) -> tuple[BaseProcess, int]:
        ready, ready_in_worker = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main, args=(settings, sockets[slot], ready_in_worker), daemon=False
        )
        process.start()
        ready_in_worker.close()
        waiting[ready] = slot
        log.info("worker started", extra={"worker_pid": process.pid})
        return process, slot

    def heard(ready: Connection) -> None:
        """A worker said that it listens (or died first: then its pipe is only closed)."""
        nonlocal announced
        slot = waiting.pop(ready)
        with contextlib.suppress(EOFError, OSError):
            ready.recv()
            listening.add(slot)
        ready.close()
        if len(listening) == server.workers and not announced:
            announced = True
            announce()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = [start(slot) for slot in range(server.workers)]
    started_at = {id(p): time.monotonic() for p, _ in workers}
    period = sdnotify.watchdog_period()
    pinged = 0.0
    while workers:
        if period is not None and not stopping and time.monotonic() - pinged >= period:
            sdnotify.notify("WATCHDOG=1")
            pinged = time.monotonic()
        sentinels = {process.sentinel: (process, slot) for process, slot in workers}
        for ready in wait([*sentinels, *waiting], timeout=period or 1.0):
            if isinstance(ready, Connection):
                heard(ready)
        for process, slot in list(workers):
            if process.is_alive():
                continue
            process.join()
            workers.remove((process, slot))
            listening.discard(slot)
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
            if stopping:
                continue
            log.error(
                "worker exited; restarting it",
                extra={"worker_pid": process.pid, "exit_code": process.exitcode},
            )
            if time.monotonic() - started_at[id(process)] < RESTART_BACKOFF_SECONDS:
                time.sleep(RESTART_BACKOFF_SECONDS)
            replacement = start(slot)  # on the same socket: what queued there waits for it
            started_at[id(replacement[0])] = time.monotonic()
            workers.append(replacement)
    for ready in waiting:
        ready.close()
    for sock in sockets:
        sock.close()
    return exitcodes.OK


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
