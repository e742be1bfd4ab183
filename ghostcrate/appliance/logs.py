"""Structured logging: one JSON object (or key=value line) per event, request id included."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps uses
from typing import Any, TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ghostcrate.config import LogSettings

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
#: One answered request: method, path, status, length, seconds, remote, user agent, request id.
AccessRecord = tuple[str, str, int, int, float, str | None, str | None, str]
ACCESS_LOGGER = "ghostcrate.access"

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

#: Text lines write these as is, and quote anything else: a field's value is printable
#: ASCII but for space, `"`, `=` and `\`; the message may have spaces (it ends at the
#: first ` key=`).
_PLAIN_VALUE = re.compile(r"[!#-<>-\[\]-~]+")
_PLAIN_MESSAGE = re.compile(r"[ !#-<>-\[\]-~]+")


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
    """`ts level logger: msg key=value ...`, one line; a traceback follows, indented.

    Values (and the message) other than plain tokens are quoted and escaped as in
    JSON, so what a client sent (a path, a user agent) cannot end the line or pass
    for another field.
    """
    fields = dict(fields)
    head = f"{fields.pop('ts')} {fields.pop('level'):7} {fields.pop('logger')}: "
    head += _text(fields.pop("msg"), _PLAIN_MESSAGE)
    exception = fields.pop("exception", None)
    tail = "".join(f" {key}={_text(value, _PLAIN_VALUE)}" for key, value in fields.items())
    if exception:  # indented: no line of it passes for a log line
        tail += "".join(f"\n    {line}" for line in str(exception).splitlines())
    return head + tail


def _text(value: object, plain: re.Pattern[str]) -> str:
    text = str(value)
    return text if plain.fullmatch(text) else _quote(text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return render_json(_fields(record))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return render_text(_fields(record))


class AccessSink:
    """Where access lines go: buffered like nginx's `access_log ... buffer= flush=`.

    Lines are written in batches at most `FLUSH_SECONDS` after the first one
    waiting (and at exit): one write per batch instead of one per request.
    JSON lines are assembled from pre-escaped pieces: `json.dumps` of a dict
    was a tenth of a worker's time on small cache hits. The pieces that depend
    only on the method, path and status, or on the client, are kept and reused,
    so a repeated request formats only its time, id, length and duration. The
    lines are the text `render_json` makes of `access_fields`, except that the
    duration always has two decimals (`12.30`, not `12.3`: the same number,
    formatted in a third of the time).
    """

    FLUSH_SECONDS = 0.1
    MAX_LINES = 256
    #: Pieces kept per (method, path, status) and per (remote, user agent); cleared when full.
    MAX_PIECES = 16384

    def __init__(self, stream: TextIO, render: Callable[[dict[str, Any]], str]) -> None:
        self.stream = stream
        self.render = render
        self.pid = os.getpid()
        self._json = render is render_json
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""
        self._millisecond = -1
        self._timestamp_text = ""
        self._middles: dict[tuple[str, str, int], tuple[str, str]] = {}
        self._tails: dict[tuple[str | None, str | None], str] = {}
        atexit.register(self.flush)

    def request(
        self,
        *,
        method: str,
        path: str,
        status: int,
        length: int,
        seconds: float,
        remote: str | None,
        user_agent: str | None,
        request_id: str,
    ) -> None:
        """Log one answered request."""
        self.requests([(method, path, status, length, seconds, remote, user_agent, request_id)])

    def requests(self, answered: Iterable[AccessRecord]) -> None:
        """Log answered requests, all with the time of this call.

        One call for all the requests a worker answered in one event-loop turn:
        per line only a lookup of the kept pieces and one f-string remain.
        """
        now = time.time()
        if not self._json:
            for method, path, status, length, seconds, remote, user_agent, request_id in answered:
                fields = access_fields(
                    now,
                    self.pid,
                    method=method,
                    path=path,
                    status=status,
                    length=length,
                    seconds=seconds,
                    remote=remote,
                    user_agent=user_agent,
                    request_id=request_id,
                )
                self._lines.append(self.render(fields))
            self._added()
            return
        timestamp = self._timestamp(now)
        middles, tails, lines = self._middles, self._tails, self._lines
        for method, path, status, length, seconds, remote, user_agent, request_id in answered:
            middle = middles.get((method, path, status))
            if middle is None:
                middle = self._middle(method, path, status)
            tail = tails.get((remote, user_agent))
            if tail is None:
                tail = self._tail(remote, user_agent)
            rid = "" if request_id == "-" else f', "request_id": {_quote(request_id)}'
            lines.append(
                f'{{"ts": "{timestamp}{middle[0]}{rid}{middle[1]}{length}, '
                f'"duration_ms": {seconds * 1000:.2f}{tail}'
            )
        self._added()

    def _middle(self, method: str, path: str, status: int) -> tuple[str, str]:
        """The pieces around the request id, from after "ts" up to "bytes"."""
        if len(self._middles) >= self.MAX_PIECES:
            self._middles.clear()
        inner_path = _quote(path)[1:-1]  # method and status need no escaping
        middle = self._middles[method, path, status] = (
            f'", "level": "info", "logger": "{ACCESS_LOGGER}", '
            f'"msg": "{method} {inner_path} {status}", "pid": {self.pid}',
            f', "method": "{method}", "path": "{inner_path}", "status": {status}, "bytes": ',
        )
        return middle

    def _tail(self, remote: str | None, user_agent: str | None) -> str:
        if len(self._tails) >= self.MAX_PIECES:
            self._tails.clear()
        tail = self._tails[remote, user_agent] = (
            f', "remote": {_quote_or_null(remote)}, "user_agent": {_quote_or_null(user_agent)}}}'
        )
        return tail

    def _timestamp(self, now: float) -> str:
        millisecond = int(now * 1000)
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            second, rest = divmod(millisecond, 1000)
            if second != self._second:
                self._second = second
                moment = datetime.fromtimestamp(second, UTC)
                self._second_text = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._timestamp_text = f"{self._second_text}.{rest:03d}+00:00"
        return self._timestamp_text

    def _added(self) -> None:
        if len(self._lines) >= self.MAX_LINES:
            self.flush()
        elif self._timer is None and self._lines:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            self._lines.append("")
            text = "\n".join(self._lines)
            self._lines.clear()
            self.stream.write(text)
            self.stream.flush()


def _quote_or_null(value: str | None) -> str:
    return "null" if value is None else _quote(value)


_access_sink: AccessSink | None = None


def access_sink() -> AccessSink | None:
    """The process's access-line sink; None until logging is configured."""
    return _access_sink


def access_fields(
    now: float,
    pid: int,
    *,
    method: str,
    path: str,
    status: int,
    length: int,
    seconds: float,
    remote: str | None,
    user_agent: str | None,
    request_id: str,
) -> dict[str, Any]:
    """One access line's fields, in the same shape as every other log line."""
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": ACCESS_LOGGER,
        "msg": f"{method} {path} {status}",
        "pid": pid,
    }
    if request_id != "-":
        fields["request_id"] = request_id
    fields |= {
        "method": method,
        "path": path,
        "status": status,
        "bytes": length,
        "duration_ms": round(seconds * 1000, 2),
        "remote": remote,
        "user_agent": user_agent,
    }
    return fields


def configure_logging(settings: LogSettings) -> None:
    global _access_sink  # noqa: PLW0603 - one process-wide logging set-up, like `logging` itself
    handler = logging.StreamHandler(sys.stderr)
    json_lines = settings.format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    if _access_sink is not None:
        _access_sink.flush()
    _access_sink = AccessSink(sys.stderr, render_json if json_lines else render_text)


#: Routes whose query strings carry credentials (an OAuth code and state): logged without.
_SECRET_QUERIES = ("/api/v1/sso/",)


def logged_path(path: str, query: str) -> str:
    """The path and query as the access log shows them: a sign-in callback's query (a
    one-time code and state) is left out, as no credential belongs in a log."""
    if not query:
        return path
    if path.startswith(_SECRET_QUERIES):
        return f"{path}?(query not logged)"
    return f"{path}?{query}"


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log hook, writing the same lines as the fast lane.

    Lines skip `logging`: a `LogRecord`, its handler and formatter cost about
    50 µs a line, which halved a worker's throughput on small cache hits
    (benchmarks/RESULTS.md).
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sink = _access_sink
        if sink is None or not self.logger.isEnabledFor(logging.INFO):
            return
        sink.request(
            method=request.method,
            path=logged_path(request.path, request.query_string),
            status=response.status,
            length=response.body_length,
            seconds=time,
            remote=request.remote,
            user_agent=request.headers.get("User-Agent"),
            request_id=REQUEST_ID.get(),
        )
