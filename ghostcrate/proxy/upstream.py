"""The HTTP client for the upstream registry: conditional index GETs and crate streams.

An `https://` upstream reached without a proxy is asked over HTTP/2
(`h2client`, one connection per origin and worker, `[upstream] http2`);
anything else, and an upstream that does not offer HTTP/2, goes through
aiohttp over HTTP/1.1. Every request has connect and read timeouts, and every
failure becomes an `UpstreamError` (or `NotFound`) whose message says what failed.
A request with no answer within `stale_after` counts towards opening the breaker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from ghostcrate import __version__
from ghostcrate.config import UpstreamSettings
from ghostcrate.proxy.breaker import CircuitBreaker
from ghostcrate.proxy.errors import NotFound, UpstreamError
from ghostcrate.proxy.h2client import (
    H2Client,
    H2ConnectError,
    H2Disconnected,
    H2Error,
    H2Timeout,
    h2_tls_context,
)
from ghostcrate.proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

USER_AGENT: Final = f"ghostcrate/{__version__} (caching crates.io mirror)"
#: crates.io's largest index files are a few MB; anything far larger is not an index file.
MAX_INDEX_BYTES: Final = 64 * 1024 * 1024
#: Statuses cargo treats as "this crate does not exist" (registry-index.md, "Nonexistent Crates").
MISSING_STATUSES: Final = frozenset({404, 410, 451})


@dataclass(frozen=True)
class Modified:
    body: bytes
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class NotModified:
    pass


@dataclass(frozen=True)
class Missing:
    status: int


IndexAnswer = Modified | NotModified | Missing
#: Bytes per body chunk read from an HTTP/1.1 response.
CHUNK_BYTES: Final = 64 * 1024


class UpstreamResponse(Protocol):
    """An upstream's answer, whichever protocol brought it."""

    status: int
    headers: CIMultiDictProxy[str]

    @property
    def content_length(self) -> int | None: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class _Http1Response:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_chunked(CHUNK_BYTES)


class UpstreamClient:
    """Owns one `aiohttp.ClientSession` for all upstream traffic."""

    def __init__(
        self,
        settings: UpstreamSettings,
        session: aiohttp.ClientSession,
        metrics: ProxyMetrics,
        http2: H2Client | None = None,
    ) -> None:
        self.settings = settings
        self._session = session
        self._http2 = http2
        self._metrics = metrics
        self._breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown)
        #: Unix time of the upstream's last answer in this process (None: not yet).
        self.answered_at: float | None = None
        #: HTTPS_PROXY / HTTP_PROXY, read once; NO_PROXY once per host. aiohttp's `trust_env`
        #: read them, and ~/.netrc, for every request (a tenth of a worker's time renewing).
        self._environment = urllib.request.getproxies()
        self._proxies: dict[tuple[str, str], str | None] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: UpstreamSettings, metrics: ProxyMetrics
    ) -> AsyncIterator[UpstreamClient]:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls_context(settings)),
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
            raise_for_status=False,
            trust_env=False,  # the environment's proxy settings are applied by `_proxy_for`
        ) as session:
            http2 = None
            if settings.http2:
                http2 = H2Client(
                    h2_tls_context(tls_context(settings)),
                    settings.connect_timeout,
                    settings.read_timeout,
                )
            try:
                yield cls(settings, session, metrics, http2)
            finally:
                if http2 is not None:
                    await http2.close()

    def url(self, path: str) -> str:
        return self.settings.index + path

    def _proxy_for(self, url: str) -> str | None:
        """`proxy_for` the URL, remembered per scheme and host."""
        parsed = URL(url)
        key = (parsed.scheme, parsed.host or "")
        try:
            return self._proxies[key]
        except KeyError:
            pass
        proxy = proxy_for(*key, self.settings.proxy, self._environment)
        self._proxies[key] = proxy
        return proxy

    async def get_index(
        self, path: str, etag: str | None = None, last_modified: str | None = None
    ) -> IndexAnswer:
        """GET an index file (or config.json), conditionally when validators are given."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        what = f"index file {path}"
        async with self._get(self.url(path), what, headers, decode=True) as response:
            if response.status == 304:
                return NotModified()
            if response.status in MISSING_STATUSES:
                return Missing(response.status)
            if response.status != 200:
                raise UpstreamError(f"the upstream answered {response.status} for {what}")
            if (response.content_length or 0) > MAX_INDEX_BYTES:
                raise UpstreamError(f"the upstream sent an oversized {what}")
            body = await read_bounded(response, MAX_INDEX_BYTES, what)
            return Modified(
                body, response.headers.get("ETag"), response.headers.get("Last-Modified")
            )

    @asynccontextmanager
    async def stream(self, url: str, what: str) -> AsyncIterator[UpstreamResponse]:
        """A 200 response whose body the caller streams; errors raise `UpstreamError`."""
        async with self._get(url, what, {}, decode=False) as response:
            if response.status in MISSING_STATUSES:
                raise NotFound(f"{what} does not exist upstream ({response.status})")
            if response.status != 200:
                raise UpstreamError(f"the upstream answered {response.status} for {what}")
            yield response

    @asynccontextmanager
    async def _get(
        self, url: str, what: str, headers: dict[str, str], *, decode: bool
    ) -> AsyncIterator[UpstreamResponse]:
        """One GET through the breaker; transport failures become `UpstreamError`.

        `decode`: accept a compressed body and decode it (index files, not crates).
        """
        if self.settings.offline:
            raise UpstreamError(
                f"{what} is not cached, and in offline mode ([upstream] offline = true) "
                "the upstream is never contacted"
            )
        self._breaker.admit(what)
        late = _Late(self.settings.stale_after, functools.partial(self._late, what))
        try:
            async with self._send(url, headers, decode) as response:
                late.cancel()
                # 407: a proxy in front of a plain-HTTP upstream wants credentials.
                proxy_refused = response.status == 407
                server_failure = response.status >= 500
                if not server_failure:
                    self._reachable()
                if not (server_failure or proxy_refused):
                    yield response
        except (aiohttp.ClientError, H2Error, TimeoutError) as error:
            message = describe_failure(what, self.settings, error, proxy=self._proxy_for(url))
            # Bad content is not unreachability; a late request has been counted already.
            if not (_cut_short(error) or late.counted):
                self._unreachable(message)
            raise UpstreamError(message) from error
        finally:
            late.cancel()
        if proxy_refused:  # configuration, not unreachability: the breaker is not told
            raise UpstreamError(
                f"fetching {what}: the outbound proxy refused the credentials (407); "
                "put user:password in [upstream] proxy (http://user:password@host:port)"
            )
        if server_failure:
            message = f"the upstream answered {response.status} for {what}"
            if not late.counted:
                self._unreachable(message)
            raise UpstreamError(message)

    @asynccontextmanager
    async def _send(
        self, url: str, headers: dict[str, str], decode: bool
    ) -> AsyncIterator[UpstreamResponse]:
        proxy = self._proxy_for(url)
        if self._http2 is not None and proxy is None and url.startswith("https://"):
            sent = {"User-Agent": USER_AGENT, **headers}
            async with self._http2.get(url, sent, decode=decode) as response:
                if response is not None:
                    yield response
                    return
        async with self._session.get(
            url, proxy=proxy, headers=headers, auto_decompress=decode
        ) as http1:
            yield _Http1Response(http1)

    def state(self) -> dict[str, object]:
        """The breaker and the last answer, for `/readyz` (which they do not fail)."""
        return {
            "breaker": "open" if self._breaker.open else "closed",
            "last_answer_at": self.answered_at,
            "last_error": self._breaker.last_error or None,
        }

    def _reachable(self) -> None:
        self.answered_at = time.time()
        if self._breaker.open:
            log.info("the upstream answers again; closing the breaker")
        self._breaker.succeeded()
        self._metrics.breaker_open.set(0)

    def _late(self, what: str) -> None:
        self._unreachable(
            f"fetching {what} from the upstream: no answer within "
            f"{self.settings.stale_after:g} s ([upstream] stale_after)"
        )

    def _unreachable(self, reason: str) -> None:
        if self._breaker.failed(reason):
            self._metrics.breaker_open.set(1)
            log.warning(
                "the upstream is unreachable; failing fast",
                extra={"reason": reason, "cooldown_s": self.settings.breaker_cooldown},
            )


class _Late:
    """Calls `count` once if a request has no answer after `seconds` (never for 0).

    An upstream that answers that late counts towards opening the breaker as a
    failure would; the answer, when it comes, still counts as a success.
    """

    def __init__(self, seconds: float, count: Callable[[], None]) -> None:
        self.counted = False
        self._count = count
        self._timer = (
            asyncio.get_running_loop().call_later(seconds, self._expired) if seconds > 0 else None
        )

    def _expired(self) -> None:
        self.counted = True
        self._count()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def proxy_for(
    scheme: str, host: str, configured: str | None, environment: Mapping[str, str]
) -> str | None:
    """The outbound proxy for scheme://host: [upstream] proxy, else `environment`'s for the
    scheme (`urllib.request.getproxies()`); none if NO_PROXY exempts the host."""
    proxy = configured or environment.get(scheme)
    if proxy is not None and urllib.request.proxy_bypass(host):
        return None
    return proxy


def tls_context(settings: UpstreamSettings) -> ssl.SSLContext:
    """The system's trusted CAs, plus [upstream] ca_bundle (a corporate proxy's CA)."""
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=settings.ca_bundle)
    return context


def _cut_short(error: BaseException) -> bool:
    """Whether the upstream answered but its body broke off or was damaged."""
    return isinstance(error, aiohttp.ClientPayloadError) or (
        isinstance(error, H2Disconnected) and error.answered
    )


async def read_bounded(response: UpstreamResponse, limit: int, what: str) -> bytes:
    chunks = []
    size = 0
    async for chunk in response.chunks():
        size += len(chunk)
        if size > limit:
            raise UpstreamError(f"the upstream sent an oversized {what}")
        chunks.append(chunk)
    return b"".join(chunks)


def describe_failure(
    what: str, settings: UpstreamSettings, error: BaseException, *, proxy: str | None = None
) -> str:
    """One sentence for a failed upstream request, naming what and why.

    TLS and outbound-proxy failures also name the setting that fixes them; `proxy` is
    the outbound proxy the request went through, if any. A proxy's URL is never
    repeated as given: it may carry user:password.
    """
    connecting = isinstance(error, aiohttp.ConnectionTimeoutError) or (
        isinstance(error, H2Timeout) and error.connecting
    )
    if connecting and proxy is not None:
        address = URL(proxy)
        reason = (
            f"connecting to the outbound proxy {address.host}:{address.port} timed out after "
            f"{settings.connect_timeout:g} s; check [upstream] proxy / HTTPS_PROXY"
        )
    elif connecting:
        reason = f"connecting timed out after {settings.connect_timeout:g} s"
    elif isinstance(error, (aiohttp.SocketTimeoutError, asyncio.TimeoutError, H2Timeout)):
        reason = f"no data for {settings.read_timeout:g} s (read timeout)"
    elif isinstance(error, H2Error):
        reason = _http2_failure(error, settings)
    elif isinstance(error, aiohttp.ClientPayloadError):
        reason = "the connection closed before the whole body arrived"
    elif isinstance(error, aiohttp.ServerDisconnectedError):
        reason = "the upstream closed the connection without answering"
    elif isinstance(error, aiohttp.ClientConnectorCertificateError):
        where = f"{error.host}:{error.port}"
        reason = _untrusted_certificate(error.certificate_error, where, settings)
    elif isinstance(error, aiohttp.ClientSSLError):
        reason = _tls_failed(f"{error.host}:{error.port}", error.strerror or error)
    elif isinstance(error, aiohttp.ClientProxyConnectionError):
        reason = (
            f"cannot connect to the outbound proxy {error.host}:{error.port} "
            f"({error.strerror or error}); check [upstream] proxy / HTTPS_PROXY"
        )
    elif isinstance(error, aiohttp.ClientHttpProxyError):
        reason = _proxy_answer(error)
    elif isinstance(error, aiohttp.ClientConnectorError):
        reason = f"cannot connect to {error.host}:{error.port} ({error.strerror or error})"
    else:
        reason = str(error) or type(error).__name__
    return f"fetching {what} from the upstream failed: {reason}"


def _http2_failure(error: H2Error, settings: UpstreamSettings) -> str:
    """What went wrong with the HTTP/2 client, timeouts aside."""
    if isinstance(error, H2ConnectError):
        return _connect_failure(error, settings)
    if isinstance(error, H2Disconnected) and error.answered:
        return f"the connection closed before the whole body arrived ({error})"
    return f"the upstream closed the connection without answering ({error})"


def _connect_failure(error: H2ConnectError, settings: UpstreamSettings) -> str:
    where = f"{error.host}:{error.port}"
    if isinstance(error.cause, ssl.SSLCertVerificationError):
        return _untrusted_certificate(error.cause, where, settings)
    if isinstance(error.cause, ssl.SSLError):
        return _tls_failed(where, error.cause)
    detail = getattr(error.cause, "strerror", None) or error.cause
    return f"cannot connect to {where} ({detail})"


def _untrusted_certificate(cause: BaseException, where: str, settings: UpstreamSettings) -> str:
    detail = getattr(cause, "verify_message", None) or str(cause)
    # OpenSSL's X509_V_ERR_*: not yet valid / expired, hostname / IP address mismatch.
    # The certificate itself is wrong there, and trusting another CA would not help.
    if getattr(cause, "verify_code", None) in (9, 10, 62, 64):
        return f"the upstream's TLS certificate ({where}) was rejected: {detail}"
    trusted = "the system's trusted CAs"
    if settings.ca_bundle is not None:
        trusted += f" nor those in [upstream] ca_bundle ({settings.ca_bundle})"
    return (
        f"the upstream's TLS certificate ({where}) is not trusted ({detail}): "
        f"it is signed by none of {trusted}; set [upstream] ca_bundle to a PEM file "
        "with the CA certificate that signed it (a TLS-inspecting proxy's own CA, "
        "for instance)"
    )


def _tls_failed(where: str, detail: object) -> str:
    return (
        f"the TLS handshake with {where} failed ({detail}); check that it speaks HTTPS "
        "there, and if a proxy inspects TLS, set [upstream] ca_bundle to that proxy's CA"
    )


def _proxy_answer(error: aiohttp.ClientHttpProxyError) -> str:
    """The proxy answered CONNECT with something other than 200."""
    info = error.request_info
    proxy = f"{info.real_url.host}:{info.real_url.port}"
    # 407 is the standard answer; some proxies (tinyproxy up to 1.11) send 401.
    if error.status in (401, 407):
        sent = "" if "Proxy-Authorization" in info.headers else ": none were sent"
        return (
            f"the outbound proxy {proxy} refused the credentials ({error.status}){sent}; "
            "put user:password in [upstream] proxy (http://user:password@host:port)"
        )
    return (
        f"the outbound proxy {proxy} did not open a tunnel to "
        f"{info.url.host}:{info.url.port}: it answered {error.status} {error.message}"
    )
