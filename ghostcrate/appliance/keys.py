"""Typed keys for the services the application holds (aiohttp `AppKey`, `RequestKey`)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from ghostcrate.appliance.metrics import AppMetrics
from ghostcrate.cache import TieredCache
from ghostcrate.config import Settings
from ghostcrate.proxy import MirrorCrates, MirrorIndex

SETTINGS = web.AppKey("settings", Settings)
CACHE = web.AppKey("cache", TieredCache)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", AppMetrics)
MIRROR_INDEX = web.AppKey("mirror_index", MirrorIndex)
MIRROR_CRATES = web.AppKey("mirror_crates", MirrorCrates)
