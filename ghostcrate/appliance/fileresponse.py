"""Serve a file with sendfile(2) under any event loop, uvloop included.

aiohttp's `FileResponse` uses `loop.sendfile`, which uvloop does not
implement, so under uvloop it silently falls back to reading the file into
Python and writing it out. This subclass keeps everything `FileResponse`
does (conditional requests, ranges, HEAD) and replaces only the body
transfer: once the headers have left the transport's buffer, it calls
`os.sendfile` on a duplicate of the socket's descriptor, waiting for
writability through the loop between calls.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

#: Called with (method, bytes) after each transfer, for metrics.
SentHook = Callable[[str, int], None]


class ZeroCopyFileResponse(web.FileResponse):
    def __init__(self, path: os.PathLike[str] | str, *, on_sent: SentHook, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._on_sent = on_sent

    async def _sendfile(
        self, request: BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if (
            transport is None
            or sock is None
            or self.compression
            or transport.get_extra_info("sslcontext") is not None
        ):
            writer = await super()._sendfile(request, fobj, offset, count)
            self._on_sent("copy", count)
            return writer

        # Headers must be on the wire before the body goes around the transport. With
        # both limits at 0 the protocol is paused while the transport holds anything,
        # so `drain` returns once it is empty (on `resume_writing`: no polling).
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            prepared = await web.StreamResponse.prepare(self, request)
            assert prepared is not None
            await prepared.drain()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)
        await sendfile_all(sock.fileno(), fobj.fileno(), offset, count)
        prepared.output_size += count  # the writer did not see these bytes; the access log should
        self._on_sent("sendfile", count)
        await web.StreamResponse.write_eof(self)
        return prepared


async def sendfile_all(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    # A duplicate descriptor can be watched by the loop without disturbing the
    # transport's own registration of the original.
    try:
        fd = os.dup(sock_fd)
    except OSError as error:  # closed meanwhile
        raise ConnectionResetError(str(error)) from error
    try:
        while count > 0:
            try:
                sent = os.sendfile(fd, file_fd, offset, count)
            except BlockingIOError:
                await _writable(loop, fd)
                continue
            except OSError as error:
                raise ConnectionResetError(str(error)) from error
            if sent == 0:
                raise ConnectionResetError("the file ended before its stated size")
            offset += sent
            count -= sent
    finally:
        os.close(fd)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
