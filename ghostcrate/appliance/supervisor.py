"""The supervisor of `workers = N > 1`: N worker processes, one per listening socket.

It binds the sockets (`listeners.py`), starts one worker on each, and then
only watches: a worker that dies on its own is restarted on the same socket,
SIGTERM/SIGINT are passed on (each worker drains), and SIGHUP is passed on
once the configuration has been read here and can be used (`reload.py`). It
is systemd's main process: READY=1 once every worker listens, STOPPING=1,
and the watchdog's pings.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from ghostcrate.appliance import exitcodes, sdnotify
from ghostcrate.appliance.listeners import worker_sockets
from ghostcrate.appliance.metrics import MULTIPROCESS_ENV
from ghostcrate.appliance.preflight import cannot_listen
from ghostcrate.appliance.reload import reread
from ghostcrate.config import ConfigSource, Settings

log = logging.getLogger("ghostcrate")

#: A worker that dies sooner than this after its start is restarted only after a pause.
RESTART_BACKOFF_SECONDS = 1.0
#: The longest the loop sleeps without looking at signals that came in.
TICK_SECONDS = 1.0

#: What a worker process runs: settings, its socket, its end of the "listening" pipe, source.
WorkerMain = Callable[[Settings, socket.socket, Connection, ConfigSource], None]


def supervise(
    settings: Settings, source: ConfigSource, worker: WorkerMain, announce: Callable[[], None]
) -> int:
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
    try:
        Supervisor(settings, source, worker, sockets, announce).run()
    finally:
        for sock in sockets:
            sock.close()
    return exitcodes.OK


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        source: ConfigSource,
        worker: WorkerMain,
        sockets: list[socket.socket],
        announce: Callable[[], None],
    ) -> None:
        #: What a worker started now starts with (the newest usable configuration).
        self.settings = settings
        self._source = source
        self._worker = worker
        self._sockets = sockets
        self._announce = announce
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[BaseProcess, int] = {}  # process -> slot
        self._started_at: dict[BaseProcess, float] = {}
        #: Workers that have not said yet that they listen: their end of the pipe -> slot.
        self._waiting: dict[Connection, int] = {}
        self._listening: set[int] = set()
        self._announced = False
        self._stopping = False
        self._hangups = 0

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        for slot in range(self.settings.server.workers):
            self._start(slot)
        period = sdnotify.watchdog_period()
        pinged = 0.0
        while self._workers:
            if period is not None and not self._stopping and time.monotonic() - pinged >= period:
                sdnotify.notify("WATCHDOG=1")
                pinged = time.monotonic()
            sentinels = [process.sentinel for process in self._workers]
            for ready in wait([*sentinels, *self._waiting], timeout=period or TICK_SECONDS):
                if isinstance(ready, Connection):
                    self._heard(ready)
            if self._hangups and not self._stopping:
                self._reload()
            self._bury_the_dead()
        for ready in self._waiting:
            ready.close()

    def _start(self, slot: int) -> None:
        ready, ready_in_worker = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self._worker,
            args=(self.settings, self._sockets[slot], ready_in_worker, self._source),
            daemon=False,
        )
        process.start()
        ready_in_worker.close()
        self._waiting[ready] = slot
        self._workers[process] = slot
        self._started_at[process] = time.monotonic()
        log.info("worker started", extra={"worker_pid": process.pid})

    def _heard(self, ready: Connection) -> None:
        """A worker said that it listens (or died first: then its pipe is only closed)."""
        slot = self._waiting.pop(ready)
        with contextlib.suppress(EOFError, OSError):
            ready.recv()
            self._listening.add(slot)
        ready.close()
        if len(self._listening) == self.settings.server.workers and not self._announced:
            self._announced = True
            self._announce()

    def _reload(self) -> None:
        self._hangups = 0
        reloaded = reread(self.settings, self._source)
        if reloaded is None:
            return
        self.settings = reloaded
        for process in self._workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    def _bury_the_dead(self) -> None:
        """Restart, on the same socket, each worker that died (unless stopping)."""
        for process, slot in list(self._workers.items()):
            if process.is_alive():
                continue
            process.join()
            del self._workers[process]
            started_at = self._started_at.pop(process)
            self._listening.discard(slot)
            if process.pid is not None:
                metrics_dir = os.environ[MULTIPROCESS_ENV]
                multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if self._stopping:
                continue
            log.error(
                "worker exited; restarting it",
                extra={"worker_pid": process.pid, "exit_code": process.exitcode},
            )
            if time.monotonic() - started_at < RESTART_BACKOFF_SECONDS:
                time.sleep(RESTART_BACKOFF_SECONDS)
            self._start(slot)  # on the same socket: what queued there waits for it

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            sdnotify.notify("STOPPING=1")
        self._stopping = True
        for process in self._workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker drains its requests

    def _hangup(self, _signum: int, _frame: FrameType | None) -> None:
        self._hangups += 1
