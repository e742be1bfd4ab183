"""The crates.io mirror: upstream client, cached sparse index, verified crate downloads."""

from ghostcrate.proxy.crates import MirrorCrates
from ghostcrate.proxy.errors import ChecksumMismatch, NotFound, ProxyError, UpstreamError
from ghostcrate.proxy.index import MirrorIndex
from ghostcrate.proxy.indexfile import IndexFile
from ghostcrate.proxy.metrics import ProxyMetrics
from ghostcrate.proxy.upstream import UpstreamClient

__all__ = [
    "ChecksumMismatch",
    "IndexFile",
    "MirrorCrates",
    "MirrorIndex",
    "NotFound",
    "ProxyError",
    "ProxyMetrics",
    "UpstreamClient",
    "UpstreamError",
]
