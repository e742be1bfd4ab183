"""A fake crates.io: sparse index and downloads served by a real aiohttp server.

The server runs in its own thread with its own event loop, so it serves sync tests
that run cargo through `subprocess.run` as well as async tests. Faults are injected
on the wire (real delays, real error statuses, closed connections, short bodies).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from tests.support.crates import BuiltCrate, CrateSpec, Registry, built, index_path
from tests.support.threaded import ThreadedServer

Scope = Literal["index", "download", "config", "search", "all"]
RequestKind = Literal["config", "index", "download", "search", "other"]
FaultKind = Literal["latency", "status", "drop", "truncate", "corrupt", "trickle"]

_MARKERS = {
    "crate": r"[A-Za-z][A-Za-z0-9_-]*",
    "version": r"[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.+-]*?)?",
    "prefix": r"(?:[^/]{1,2}|3/[^/]|[^/]{2}/[^/]{2})",
    "lowerprefix": r"(?:[^/]{1,2}|3/[^/]|[^/]{2}/[^/]{2})",
    "sha256-checksum": r"[0-9a-f]{64}",
}


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake upstream saw and answered it (status 0: dropped)."""

    method: str
    path: str
    status: int
    kind: RequestKind
    crate: str | None
    version: str | None
    headers: Mapping[str, str]
    fault: FaultKind | None


@dataclass
class _Fault:
    kind: FaultKind
    scope: Scope
    crate: str | None
    remaining: int | None
    seconds: float = 0.0
    status: int = 0
    body: bytes = b""

    def matches(self, kind: RequestKind, crate: str | None) -> bool:
        scope_ok = self.scope in ("all", kind)
        return scope_ok and (self.crate is None or self.crate == crate)


@dataclass(frozen=True)
class _Target:
    """What a request asks for."""

    kind: RequestKind
    crate: str | None = None  # lowercase
    version: str | None = None
    groups: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _prefix(name: str) -> str:
    """The `{prefix}` marker: the index directory of `name`, case preserved."""
    if len(name) <= 2:
        return str(len(name))
    if len(name) == 3:
        return f"3/{name[0]}"
    return f"{name[:2]}/{name[2:4]}"


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex for the paths a `dl` template produces; repeated markers must agree."""
    out: list[str] = []
    seen: set[str] = set()
    pos = 0
    for m in re.finditer(r"\{(crate|version|prefix|lowerprefix|sha256-checksum)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        marker = m.group(1)
        group = marker.replace("-", "_")
        out.append(f"(?P={group})" if marker in seen else f"(?P<{group}>{_MARKERS[marker]})")
        seen.add(marker)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


class FakeUpstream(ThreadedServer):
    """A crates.io look-alike on 127.0.0.1 serving a `Registry`.

    `dl_template` is the download path relative to the index root (a leading `{url}` is
    allowed), e.g. `files/{crate}/{crate}-{version}.crate`; by default `dl` is
    `{url}crates` without markers, so cargo appends `/{crate}/{version}/download`.
    `etag` / `last_modified` switch off a validator, to test revalidation with the other.
    With `ssl_context` it serves HTTPS, and `url` and `dl` are `https://` addresses.
    `host` is the address it listens on; `url` is on 127.0.0.1 all the same.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        port: int = 0,
        dl_template: str | None = None,
        api: str | None = None,
        etag: bool = True,
        last_modified: bool = True,
        shutdown_timeout: float = 0.1,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(
            port=port, shutdown_timeout=shutdown_timeout, ssl_context=ssl_context, host=host
        )
        self.registry = registry if registry is not None else Registry()
        self._dl_template = dl_template.removeprefix("{url}") if dl_template else None
        self._dl_path = self._dl_template or "crates/{crate}/{version}/download"
        self._dl_regex = _template_regex(self._dl_path)
        self._api = api
        self._validators = (etag, last_modified)
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._missing_status = 404
        start = float(int(time.time()))
        self._mtimes: dict[str, float] = {c.spec.lower: start for c in self.registry}
        self._default_mtime = start
        #: The address clients are told to download from, when a front relays to this one.
        self.advertised_url: str | None = None

    # --- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        """The index root, with a trailing slash, like `https://index.crates.io/`."""
        if self._port == 0:
            raise RuntimeError("FakeUpstream has not been started")
        return f"{self.scheme}://127.0.0.1:{self._port}/"

    @property
    def dl(self) -> str:
        """The `dl` value advertised in config.json (on `advertised_url` when set)."""
        base = self.advertised_url or self.url
        return base + (self._dl_template if self._dl_template else "crates")

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    # --- registry mutations -------------------------------------------------

    def _touch(self, lower: str) -> None:
        old = self._mtimes.get(lower, self._default_mtime)
        self._mtimes[lower] = max(float(int(time.time())), old + 1)

    def publish(self, spec: CrateSpec | BuiltCrate) -> BuiltCrate:
        """Add a version; its index file gets a new ETag and Last-Modified."""
        crate = spec if isinstance(spec, BuiltCrate) else built(spec)
        with self._lock:
            own = self.registry.add_built(crate)
            self._touch(own.spec.lower)
        return own

    def yank(self, name: str, version: str, yanked: bool = True) -> None:
        """(Un)yank a version; its index file changes."""
        with self._lock:
            self.registry.set_yanked(name, version, yanked)
            self._touch(name.lower())

    def unyank(self, name: str, version: str) -> None:
        """Un-yank a version."""
        self.yank(name, version, False)

    def set_missing_status(self, status: Literal[404, 410, 451]) -> None:
        """The status for index files of crates that do not exist."""
        with self._lock:
            self._missing_status = status

    # --- faults -------------------------------------------------------------

    def _add_fault(self, fault: _Fault) -> None:
        category = fault.kind == "latency"
        with self._lock:
            self._faults = [
                f
                for f in self._faults
                if not (
                    (f.kind == "latency") == category
                    and f.scope == fault.scope
                    and f.crate == fault.crate
                )
            ]
            self._faults.append(fault)

    def set_latency(
        self,
        seconds: float,
        scope: Scope = "all",
        crate: str | None = None,
        times: int | None = None,
    ) -> None:
        """Wait `seconds` before answering matching requests."""
        self._add_fault(_Fault("latency", scope, _lower(crate), times, seconds=seconds))

    def set_status(
        self,
        status: int,
        scope: Scope = "all",
        crate: str | None = None,
        times: int | None = None,
        body: bytes = b"injected failure\n",
    ) -> None:
        """Answer matching requests with `status` and `body`."""
        self._add_fault(_Fault("status", scope, _lower(crate), times, status=status, body=body))

    def set_drop(
        self, scope: Scope = "all", crate: str | None = None, times: int | None = None
    ) -> None:
        """Close the connection without sending any response."""
        self._add_fault(_Fault("drop", scope, _lower(crate), times))

    def set_truncate(
        self, scope: Scope = "all", crate: str | None = None, times: int | None = None
    ) -> None:
        """Send the headers with the full Content-Length, half the body, then close (200s only)."""
        self._add_fault(_Fault("truncate", scope, _lower(crate), times))

    def set_corrupt(
        self, scope: Scope = "all", crate: str | None = None, times: int | None = None
    ) -> None:
        """Send a body of the right length with some bytes flipped (200s only)."""
        self._add_fault(_Fault("corrupt", scope, _lower(crate), times))

    def set_trickle(
        self,
        seconds: float,
        scope: Scope = "all",
        crate: str | None = None,
        times: int | None = None,
    ) -> None:
        """Send the body in small pieces spread over `seconds` (a slow, live transfer)."""
        self._add_fault(_Fault("trickle", scope, _lower(crate), times, seconds=seconds))

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def _take_faults(
        self, kind: RequestKind, crate: str | None, ok: bool
    ) -> tuple[float, _Fault | None]:
        """The latency and the action fault for one request; consumes `times`."""
        with self._lock:
            latency: _Fault | None = None
            action: _Fault | None = None
            for fault in self._faults:
                if not fault.matches(kind, crate):
                    continue
                if fault.kind == "latency":
                    latency = fault
                elif fault.kind in ("status", "drop") or ok:
                    action = fault
            for taken in (latency, action):
                if taken is not None and taken.remaining is not None:
                    taken.remaining -= 1
                    if taken.remaining <= 0:
                        self._faults.remove(taken)
            return (latency.seconds if latency else 0.0), action

    # --- accounting ---------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, oldest first."""
        with self._lock:
            return list(self._records)

    def count(self, path: str, *, prefix: bool = False, status: int | None = None) -> int:
        """Requests for exactly `path` (or paths starting with it), optionally by status."""
        return sum(
            1
            for r in self.requests
            if (r.path.startswith(path) if prefix else r.path == path)
            and (status is None or r.status == status)
        )

    def index_count(self, name: str, *, status: int | None = None) -> int:
        """Index-file requests for `name` (case-insensitive)."""
        lower = name.lower()
        return sum(
            1
            for r in self.requests
            if r.kind == "index" and r.crate == lower and (status is None or r.status == status)
        )

    def download_count(self, name: str, version: str | None = None) -> int:
        """Download requests for `name` (and `version`, if given)."""
        lower = name.lower()
        return sum(
            1
            for r in self.requests
            if r.kind == "download"
            and r.crate == lower
            and (version is None or r.version == version)
        )

    def config_count(self) -> int:
        """Requests for config.json."""
        return sum(1 for r in self.requests if r.kind == "config")

    def downloaded(self) -> set[tuple[str, str]]:
        """(lowercase name, version) of every download answered with 200."""
        return {
            (r.crate, r.version)
            for r in self.requests
            if r.kind == "download" and r.status == 200 and r.crate and r.version
        }

    def reset_counts(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._records.clear()

    # --- serving ------------------------------------------------------------

    def _classify(self, path_qs: str) -> _Target:
        """What a request path (with its query string) asks for."""
        m = self._dl_regex.fullmatch(path_qs.lstrip("/"))
        if m is not None:
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            crate = groups.get("crate")
            version = groups.get("version")
            return _Target("download", crate.lower() if crate else None, version, groups)
        rel = path_qs.split("?", 1)[0].lstrip("/")
        if rel == "config.json":
            return _Target("config")
        if rel == "api/v1/crates":
            return _Target("search")
        name = rel.rsplit("/", 1)[-1]
        if name and index_path(name) == rel:
            return _Target("index", name)
        return _Target("other")

    def _answer(self, request: web.Request, target: _Target) -> _Answer:  # noqa: PLR0911 - a return per kind
        """The fault-free answer."""
        crate, version = target.crate, target.version
        with self._lock:
            if target.kind == "config":
                api = self._api if self._api is not None else self.url.rstrip("/")
                body = json.dumps({"dl": self.dl, "api": api}).encode()
                return self._conditional(request, body, "application/json", self._default_mtime)
            if target.kind == "index" and crate is not None:
                data = self.registry.index_file(crate)
                if data is None:
                    return _Answer(self._missing_status, {}, b"crate not found\n")
                mtime = self._mtimes.get(crate, self._default_mtime)
                return self._conditional(request, data, "text/plain", mtime)
            if target.kind == "search":
                return self._search(request.query.get("q", ""), request.query.get("per_page"))
            if target.kind == "download" and crate is not None and version is not None:
                found = self.registry.crate(crate, version)
                if found is not None and _download_markers_agree(found, target.groups):
                    return _Answer(200, {"Content-Type": "application/gzip"}, found.data)
                return _Answer(404, {}, b"crate file not found\n")
        return _Answer(404, {}, b"not found\n")

    def _search(self, query: str, per_page: str | None) -> _Answer:
        """crates.io's search: names containing the query, exact match first."""
        key = query.lower().replace("-", "_")
        names = [n for n in self.registry.names() if key in n.lower().replace("-", "_")]
        names.sort(key=lambda n: (n.lower().replace("-", "_") != key, n.lower()))
        found = [
            {
                "name": name,
                "max_version": self.registry.versions(name)[-1].version,
                "description": "GhostCrate test crate",
            }
            for name in names[: int(per_page or 10)]
        ]
        body = json.dumps({"crates": found, "meta": {"total": len(names)}}).encode()
        return _Answer(200, {"Content-Type": "application/json"}, body)

    def _conditional(
        self, request: web.Request, body: bytes, content_type: str, mtime: float
    ) -> _Answer:
        """Answer with validators, or 304 if the client's copy is current."""
        use_etag, use_last_modified = self._validators
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {}
        if use_etag:
            headers["ETag"] = etag
        if use_last_modified:
            headers["Last-Modified"] = email.utils.formatdate(mtime, usegmt=True)
        inm = request.headers.get("If-None-Match") if use_etag else None
        ims = request.headers.get("If-Modified-Since") if use_last_modified else None
        if inm is not None:
            tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
            if "*" in tags or etag in tags:
                return _Answer(304, headers, b"")
        elif ims is not None:
            try:
                since = email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                since = None
            if since is not None and mtime <= since:
                return _Answer(304, headers, b"")
        return _Answer(200, {**headers, "Content-Type": content_type}, body)

    def _record(
        self, request: web.Request, target: _Target, status: int, fault: _Fault | None
    ) -> None:
        record = RequestRecord(
            method=request.method,
            path=request.path_qs,
            status=status,
            kind=target.kind,
            crate=target.crate,
            version=target.version,
            headers=dict(request.headers),
            fault=fault.kind if fault else None,
        )
        with self._lock:
            self._records.append(record)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = self._classify(request.path_qs)
        answer = self._answer(request, target)
        latency, fault = self._take_faults(target.kind, target.crate, ok=answer.status == 200)
        if latency > 0:
            await asyncio.sleep(latency)
        transport = request.transport
        if fault is not None and fault.kind == "drop" and transport is not None:
            self._record(request, target, 0, fault)
            transport.close()
            return web.Response()  # never sent: the transport is closed
        if fault is not None and fault.kind == "status":
            answer = _Answer(fault.status, {"Content-Type": "text/plain"}, fault.body)
        elif fault is not None and fault.kind == "corrupt":
            answer = _Answer(answer.status, answer.headers, _corrupt(answer.body))
        self._record(request, target, answer.status, fault)
        if fault is not None and fault.kind == "truncate" and transport is not None:
            response = web.StreamResponse(status=answer.status, headers=answer.headers)
            response.content_length = len(answer.body)
            await response.prepare(request)
            await response.write(answer.body[: len(answer.body) // 2])
            transport.close()  # flushes what was written, then FIN
            return response
        if fault is not None and fault.kind == "trickle":
            return await _trickle(request, answer, fault.seconds)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)


async def _trickle(request: web.Request, answer: _Answer, seconds: float) -> web.StreamResponse:
    pieces = 20
    response = web.StreamResponse(status=answer.status, headers=answer.headers)
    response.content_length = len(answer.body)
    await response.prepare(request)
    step = -(-len(answer.body) // pieces)
    for start in range(0, len(answer.body), step):
        await response.write(answer.body[start : start + step])
        await asyncio.sleep(seconds / pieces)
    await response.write_eof()
    return response


def _lower(name: str | None) -> str | None:
    return name.lower() if name is not None else None


def _corrupt(body: bytes) -> bytes:
    """Same length, a run of bytes in the middle inverted."""
    data = bytearray(body)
    start = len(data) // 2
    for i in range(start, min(len(data), start + 16)):
        data[i] ^= 0xFF
    return bytes(data)


def _download_markers_agree(crate: BuiltCrate, groups: Mapping[str, str]) -> bool:
    """Whether `{prefix}`, `{lowerprefix}` and `{sha256-checksum}` fit the crate."""
    name = groups.get("crate", crate.name)
    checks = {
        "prefix": _prefix(name),
        "lowerprefix": _prefix(name).lower(),
        "sha256_checksum": crate.cksum,
    }
    return all(groups[k] == v for k, v in checks.items() if k in groups)
