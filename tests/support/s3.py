"""A real S3 for tests: the moto server as a process, and a fault-injecting proxy before it.

`MotoServer` runs `moto_server` on 127.0.0.1 (stop and start it again on the same port
to play "S3 went away and came back"; its buckets are lost on stop). `S3FaultProxy`
forwards every request to it unchanged, unless told to be slow, to fail, to drop the
connection, or to fail multipart parts, and records what it was asked.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, NamedTuple

import aiohttp
import boto3
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ghostcrate.config import S3Settings
from tests.support.appliance import free_port
from tests.support.lifecycle import Service
from tests.support.threaded import ThreadedServer

#: Any key pair works with moto; tests pass these explicitly, never through the environment.
ACCESS_KEY_ID = "AKIDGHOSTCRATETEST"
SECRET_ACCESS_KEY = "ghostcrate-test-secret"
REGION = "us-east-1"

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_ERROR_CODES = {403: "AccessDenied", 500: "InternalError", 503: "ServiceUnavailable"}


class MotoServer(Service):
    """`moto_server` as a child process on 127.0.0.1; stopped by its PID."""

    def __init__(self, port: int = 0) -> None:
        self._port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> MotoServer:
        """Start (again, on the same port) and wait until it answers."""
        if self._process is not None:
            raise RuntimeError("MotoServer is already running")
        command = Path(sys.executable).parent / "moto_server"
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [str(command), "-H", "127.0.0.1", "-p", str(self._port)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.endpoint_url + "/", timeout=1):
                    return self
            except urllib.error.HTTPError:
                return self  # it answered
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        output = self._read_output()
        self.stop()
        raise RuntimeError(f"moto_server did not start on port {self._port}:\n{output}")

    def stop(self) -> None:
        """Stop the process (its buckets are gone)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def _read_output(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    @contextmanager
    def client(self) -> Iterator[Any]:
        """A synchronous boto3 S3 client on the server (for fixtures and assertions)."""
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        try:
            yield client
        finally:
            client.close()

    def create_bucket(self, name: str) -> None:
        with self.client() as client:
            client.create_bucket(Bucket=name)


class ProxiedRequest(NamedTuple):
    """A request as the proxy received it; `query` is the raw query string."""

    method: str
    path: str
    query: str

    @property
    def is_upload_part(self) -> bool:
        return self.method == "PUT" and "uploadId=" in self.query and "partNumber=" in self.query

    @property
    def is_abort(self) -> bool:
        return self.method == "DELETE" and "uploadId=" in self.query


class _Faults(NamedTuple):
    latency: float
    status: int | None
    drop: bool
    cut_after: int | None


class S3FaultProxy(ThreadedServer):
    """A reverse proxy on 127.0.0.1 in front of `target` (an S3 endpoint), with faults.

    It runs in its own thread and loop, forwards method, path, query, headers (Host and
    Content-Length included) and body as streams, and records every request it receives,
    also those it then fails.
    """

    def __init__(self, target: str, *, shutdown_timeout: float = 0.1) -> None:
        super().__init__(shutdown_timeout=shutdown_timeout)
        self._target = target.rstrip("/")
        self._lock = threading.Lock()
        self._records: list[ProxiedRequest] = []
        self._latency = 0.0
        self._status: int | None = None
        self._drop = False
        self._parts_allowed: int | None = None
        self._parts_passed = 0
        self._cut_after: int | None = None
        self._session: aiohttp.ClientSession | None = None  # the serving thread's

    # --- lifecycle ----------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._port == 0:
            raise RuntimeError("S3FaultProxy has not been started")
        return f"http://127.0.0.1:{self._port}"

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.cleanup_ctx.append(self._client)
        return app

    def runner_options(self) -> dict[str, Any]:
        # A request its client gave up on (timeout) is not forwarded late.
        return {"handler_cancellation": True}

    async def _client(self, app: web.Application) -> AsyncIterator[None]:
        self._session = await _client_session()
        yield
        await self._session.close()

    # --- faults -------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Wait `seconds` before forwarding each request."""
        with self._lock:
            self._latency = seconds

    def set_status(self, status: int) -> None:
        """Answer every request with `status` and an S3 XML error, without forwarding."""
        with self._lock:
            self._status = status

    def set_drop(self) -> None:
        """Close every connection without answering."""
        with self._lock:
            self._drop = True

    def fail_after_parts(self, parts: int) -> None:
        """Let `parts` UploadPart requests through, then answer the others with 500."""
        with self._lock:
            self._parts_allowed = parts
            self._parts_passed = 0

    def cut_bodies_after(self, size: int) -> None:
        """Forward answers, but close the connection after `size` bytes of a body."""
        with self._lock:
            self._cut_after = size

    def clear_faults(self) -> None:
        with self._lock:
            self._latency = 0.0
            self._status = None
            self._drop = False
            self._parts_allowed = None
            self._parts_passed = 0
            self._cut_after = None

    # --- accounting ---------------------------------------------------------

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._records)

    def reset_requests(self) -> None:
        with self._lock:
            self._records.clear()

    # --- serving ------------------------------------------------------------

    def _admit(self, record: ProxiedRequest) -> _Faults:
        """Record a request and take the faults to apply to it."""
        with self._lock:
            self._records.append(record)
            status = self._status
            if record.is_upload_part and self._parts_allowed is not None:
                if self._parts_passed >= self._parts_allowed:
                    status = 500
                else:
                    self._parts_passed += 1
            return _Faults(self._latency, status, self._drop, self._cut_after)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = ProxiedRequest(request.method, request.path, request.rel_url.raw_query_string)
        faults = self._admit(record)
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        if faults.drop and request.transport is not None:
            request.transport.close()
            return web.Response()  # never sent: the transport is closed
        if faults.status is not None:
            async for _ in request.content.iter_chunked(2**16):
                pass  # read the body, so the client sees the answer, not a reset
            return _s3_error(request, faults.status, "injected failure")
        assert self._session is not None
        return await self._forward(request, self._session, faults.cut_after)

    async def _forward(
        self, request: web.Request, session: aiohttp.ClientSession, cut_after: int | None
    ) -> web.StreamResponse:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        )
        url = URL(self._target + request.raw_path, encoded=True)
        data = request.content if request.body_exists else None
        response = web.StreamResponse()
        try:
            async with session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            ) as answer:
                response.set_status(answer.status, answer.reason)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        response.headers.add(name, value)
                await response.prepare(request)
                sent = 0
                async for chunk in answer.content.iter_chunked(2**16):
                    if cut_after is not None and sent + len(chunk) > cut_after:
                        await response.write(chunk[: cut_after - sent])
                        if request.transport is not None:
                            request.transport.close()  # flushes what was written, then FIN
                        return response
                    await response.write(chunk)
                    sent += len(chunk)
                await response.write_eof()
        except (TimeoutError, aiohttp.ClientConnectionError):
            if response.prepared:
                if request.transport is not None:
                    request.transport.close()  # the client sees a cut body
                return response
            return _s3_error(request, 503, "S3 behind the proxy is unreachable")
        return response


async def _client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        auto_decompress=False,
        # Send what the client sent, nothing more (Host and Content-Length are copied).
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
    )


def _s3_error(request: web.Request, status: int, message: str) -> web.Response:
    code = _ERROR_CODES.get(status, "InjectedFault")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{request.path}</Resource><RequestId>ghostcrate-test</RequestId></Error>"
    )
    if request.method == "HEAD":
        return web.Response(status=status)
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


@contextmanager
def unanswered_endpoint() -> Iterator[str]:
    """An endpoint whose connections never complete (the handshake is not answered).

    A listening socket with a full accept queue: Linux drops further SYNs, so a
    client waits for its connect timeout, as with a firewalled or vanished host.
    """
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = server.getsockname()
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            with suppress(BlockingIOError):
                filler.connect(address)
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


#: Seconds a failed tier is skipped in the tests (short, so recovery is quick to see).
RETRY_AFTER = 0.5


def s3_values(bucket: str, endpoint_url: str, **overrides: Any) -> dict[str, Any]:
    """An `[s3]` table for the test server, with short timeouts."""
    return {
        "bucket": bucket,
        "endpoint_url": endpoint_url,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "connect_timeout": 1,
        "read_timeout": 2,
        "retry_after": RETRY_AFTER,
        **overrides,
    }


def s3_settings(bucket: str, endpoint_url: str, **overrides: Any) -> S3Settings:
    return S3Settings(**s3_values(bucket, endpoint_url, **overrides))
