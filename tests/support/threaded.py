"""An aiohttp application served from its own thread and event loop (on 127.0.0.1 by default).

Fakes built on it serve sync tests (that run cargo through `subprocess.run`)
as well as async ones, and can be stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any, Self

from aiohttp import web

from tests.support.lifecycle import Service


class ThreadedServer(Service):
    def __init__(
        self,
        *,
        port: int = 0,
        shutdown_timeout: float = 0.1,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """With `ssl_context`, the server speaks HTTPS (TLS on the listening socket).

        `host` is the address it listens on (`0.0.0.0` lets containers reach it).
        """
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self.ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def application(self) -> web.Application:
        """The application to serve; built in the serving thread, once per start."""
        raise NotImplementedError

    def runner_options(self) -> dict[str, Any]:
        """Extra `web.AppRunner` options."""
        return {}

    @property
    def port(self) -> int:
        """The listening port (0 before the first start with an automatic port)."""
        return self._port

    @property
    def scheme(self) -> str:
        """`https` when serving TLS, else `http`."""
        return "https" if self.ssl_context is not None else "http"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> Self:
        """Start serving (again, on the same port after a stop)."""
        name = type(self).__name__
        if self._thread is not None:
            raise RuntimeError(f"{name} is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            self._port = sock.getsockname()[1]
        except OSError:
            sock.close()
            raise
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve,
            args=(loop, sock, ready, failure),
            name=f"{name}:{self._port}",
            daemon=True,
        )
        thread.start()
        if not ready.wait(10) or failure:
            thread.join(5)
            raise RuntimeError(f"{name} failed to start: {failure!r}")
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Stop serving; in-flight requests are cut off after `shutdown_timeout`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not stop")
        self._loop = self._thread = None

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
            **self.runner_options(),
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.SockSite(runner, sock, ssl_context=self.ssl_context)
            loop.run_until_complete(site.start())
        except BaseException as exc:  # reported to start()
            failure.append(exc)
            sock.close()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            if self.ssl_context is not None:
                loop.run_until_complete(_end_tls_shutdowns(loop))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def _end_tls_shutdowns(loop: asyncio.AbstractEventLoop, grace: float = 0.5) -> None:
    """Close the sockets of TLS connections still waiting for the peer's close_notify.

    Closing a TLS connection sends close_notify and keeps the socket open until the
    peer answers (for up to 30 s); a peer that never does (a client blocked, a tunnel
    gone) would leave the socket open past `loop.close()`, and its ResourceWarning
    would surface in whichever test the garbage collector happens to run in.
    """
    # asyncio's selector loop keeps its socket transports here (the listener is not one).
    transports = getattr(loop, "_transports", None)
    if transports is None:
        return
    deadline = loop.time() + grace
    while loop.time() < deadline:
        open_ = [t for t in list(transports.values()) if not t.is_closing()]
        if not open_:
            return
        await asyncio.sleep(0.01)
    for transport in open_:
        transport.abort()
    await asyncio.sleep(0)  # let connection_lost run and the sockets close
