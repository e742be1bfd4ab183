"""Structured logging: one JSON object (or key=value line) per event, request id included."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ghostcrate.config import LogSettings

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
        "pid": record.process,
    }
    request_id = REQUEST_ID.get()
    if request_id != "-":
        fields["request_id"] = request_id
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    return fields


def render_json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, default=str)


def render_text(fields: dict[str, Any]) -> str:
    fields = dict(fields)
    head = f"{fields.pop('ts')} {fields.pop('level'):7} {fields.pop('logger')}: "
    head += str(fields.pop("msg"))
    exception = fields.pop("exception", None)
    tail = "".join(f" {key}={value}" for key, value in fields.items())
    return head + tail + (f"\n{exception}" if exception else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return render_json(_fields(record))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return render_text(_fields(record))


@dataclass(frozen=True)
class _Sink:
    """Where access lines go, set by `configure_logging` in each process."""

    stream: TextIO
    render: Callable[[dict[str, Any]], str]
    pid: int


_access_sink: _Sink | None = None


def configure_logging(settings: LogSettings) -> None:
    global _access_sink  # noqa: PLW0603 - one process-wide logging set-up, like `logging` itself
    handler = logging.StreamHandler(sys.stderr)
    json_lines = settings.format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    _access_sink = _Sink(sys.stderr, render_json if json_lines else render_text, os.getpid())


class AccessLogger(AbstractAccessLogger):
    """One structured line per request, in the same shape as every other log line.

    Written straight to the log stream rather than through `logging`: a `LogRecord`,
    its handler and formatter cost about 50 µs a line, which halved a worker's
    throughput on small cache hits (benchmarks/RESULTS.md).
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sink = _access_sink
        if sink is None or not self.logger.isEnabledFor(logging.INFO):
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        fields: dict[str, Any] = {
            "ts": now,
            "level": "info",
            "logger": self.logger.name,
            "msg": f"{request.method} {request.path_qs} {response.status}",
            "pid": sink.pid,
        }
        request_id = REQUEST_ID.get()
        if request_id != "-":
            fields["request_id"] = request_id
        fields |= {
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 2),
            "remote": request.remote,
            "user_agent": request.headers.get("User-Agent"),
        }
        sink.stream.write(sink.render(fields) + "\n")
        sink.stream.flush()
