"""The settings model: every key GhostCrate reads, its type, default and checks.

The model is the single declaration of each option; `loader` layers the TOML
file and the environment over these defaults and validates the result.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveFloat


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, for example 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("an IPv6 address must be written in brackets, like [::1]:8080")
        ipaddress.IPv6Address(host[1:-1])
    return value


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return value


def _with_slash(value: str) -> str:
    return value if value.endswith("/") else value + "/"


def _without_slash(value: str) -> str:
    return value.rstrip("/")


Listen = Annotated[str, AfterValidator(_check_listen)]
IndexUrl = Annotated[str, AfterValidator(_check_http_url), AfterValidator(_with_slash)]
BaseUrl = Annotated[str, AfterValidator(_check_http_url), AfterValidator(_without_slash)]


class ServerSettings(_Section):
    listen: Listen = "127.0.0.1:8080"
    #: The address advertised to cargo in config.json; derived from `listen` when unset.
    public_url: BaseUrl | None = None
    #: Seconds that in-flight requests get to finish after SIGTERM.
    shutdown_timeout: PositiveFloat = 30.0
    access_log: bool = True

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def base_url(self) -> str:
        """The URL under which cargo reaches this server (no trailing slash)."""
        if self.public_url is not None:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


class UpstreamSettings(_Section):
    #: The upstream sparse index root; its own config.json gives the download URL.
    index: IndexUrl = "https://index.crates.io/"
    #: Seconds an index file is served without asking the upstream.
    index_ttl: float = Field(default=60.0, ge=0)
    #: Seconds a "no such crate" answer from the upstream is remembered.
    negative_ttl: float = Field(default=30.0, ge=0)
    connect_timeout: PositiveFloat = 10.0
    #: Longest silence allowed while reading an upstream answer.
    read_timeout: PositiveFloat = 30.0


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Settings(_Section):
    data_dir: Path = Path("./ghostcrate-data")
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    log: LogSettings = LogSettings()
