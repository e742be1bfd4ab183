"""A static crates.io stand-in over a directory written by datagen.py.

Routes:
    GET /config.json                          `dl` and `api` rewritten to this server's address
                                              (or to --public-url, for a front such as TLS)
    GET /<index path>                         from DIR/index/, with ETag, Last-Modified and 304s
    GET /crates/{name}/{version}/download     from DIR/crates/{name}/{version}.crate
    GET /__stats                              request counts (total, per kind, per status, per path)
                                              and requests in flight (now and the peak; all
                                              and per kind)
    POST /__latency?ms=N                      change the added per-request latency
    POST /__peak                              reset the in-flight peak to the current count

Every answer (except the /__ routes) is delayed by the configured latency, so a cold
fetch through a proxy costs a realistic round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from aiohttp import web


@dataclass
class State:
    root: Path
    base_url: str
    latency: float
    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    peak_in_flight: Counter[str] = field(default_factory=Counter)


STATE = web.AppKey("state", State)


def load(path: Path) -> tuple[bytes, str, str] | None:
    """Body, ETag and Last-Modified of a file (read in the loop: files are small, disk is warm)."""
    try:
        st = path.stat()
        body = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    return body, etag, email.utils.formatdate(st.st_mtime, usegmt=True)


async def serve_file(request: web.Request, path: Path, kind: str) -> web.StreamResponse:
    state = request.app[STATE]
    state.by_kind[kind] += 1
    state.by_path[request.path] += 1
    for key in ("all", kind):
        state.in_flight[key] += 1
        state.peak_in_flight[key] = max(state.peak_in_flight[key], state.in_flight[key])
    try:
        if state.latency:
            await asyncio.sleep(state.latency)
        return answer(request, path, kind)
    finally:
        for key in ("all", kind):
            state.in_flight[key] -= 1


def answer(request: web.Request, path: Path, kind: str) -> web.Response:
    state = request.app[STATE]
    loaded = load(path)
    if loaded is None:
        state.by_status[404] += 1
        return web.Response(status=404, text="not found\n")
    body, etag, last_modified = loaded
    headers = {"ETag": etag, "Last-Modified": last_modified}
    inm = request.headers.get("If-None-Match")
    ims = request.headers.get("If-Modified-Since")
    if (inm is not None and etag in {t.strip() for t in inm.split(",")}) or (
        inm is None and ims == last_modified
    ):
        state.by_status[304] += 1
        return web.Response(status=304, headers=headers)
    state.by_status[200] += 1
    content_type = "application/x-tar" if kind == "crate" else "text/plain"
    return web.Response(body=body, headers=headers, content_type=content_type)


async def config_json(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.by_kind["config"] += 1
    if state.latency:  # as far away as everything else (it was answered at once until 2026-11-26)
        await asyncio.sleep(state.latency)
    config = json.loads((state.root / "config.json").read_text())
    config.update(dl=f"{state.base_url}/crates", api=state.base_url)
    return web.json_response(config)


async def crate(request: web.Request) -> web.StreamResponse:
    name, version = request.match_info["name"], request.match_info["version"]
    if "/" in name or ".." in name or "/" in version or ".." in version:
        raise web.HTTPNotFound
    path = request.app[STATE].root / "crates" / name / f"{version}.crate"
    return await serve_file(request, path, "crate")


async def index(request: web.Request) -> web.StreamResponse:
    rel = request.match_info["path"]
    if ".." in rel.split("/"):
        raise web.HTTPNotFound
    return await serve_file(request, request.app[STATE].root / "index" / rel, "index")


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "total": sum(state.by_kind.values()),
            "by_kind": dict(state.by_kind),
            "by_status": {str(k): v for k, v in state.by_status.items()},
            "by_path": dict(state.by_path),
            "in_flight": dict(state.in_flight),
            "peak_in_flight": dict(state.peak_in_flight),
        }
    )


async def reset_peak(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.peak_in_flight = Counter(state.in_flight)
    return web.json_response({"peak_in_flight": dict(state.peak_in_flight)})


async def set_latency(request: web.Request) -> web.Response:
    request.app[STATE].latency = float(request.query.get("ms", "0")) / 1000
    return web.json_response({"latency_ms": request.app[STATE].latency * 1000})


def make_app(
    root: Path, host: str, port: int, latency_ms: float, public_url: str | None = None
) -> web.Application:
    app = web.Application()
    base_url = (public_url or f"http://{host}:{port}").rstrip("/")
    app[STATE] = State(root, base_url, latency_ms / 1000)
    app.router.add_get("/__stats", stats)
    app.router.add_post("/__latency", set_latency)
    app.router.add_post("/__peak", reset_peak)
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/crates/{name}/{version}/download", crate)
    app.router.add_get("/{path:.+}", index)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="static crates.io stand-in for benchmarks")
    parser.add_argument("--dir", type=Path, required=True, help="a datagen.py output directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument(
        "--public-url", help="the address config.json advertises (a TLS front); default: own"
    )
    args = parser.parse_args()
    app = make_app(args.dir.resolve(), args.host, args.port, args.latency_ms, args.public_url)
    loop = uvloop.new_event_loop()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
