"""The application factory: routes, middlewares, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from ghostcrate.appliance import views
from ghostcrate.appliance.errors import cargo_errors
from ghostcrate.appliance.keys import METRICS, MIRROR_CRATES, MIRROR_INDEX, REGISTRY, SETTINGS
from ghostcrate.appliance.metrics import AppMetrics
from ghostcrate.appliance.observe import observe
from ghostcrate.cache import DiskStore
from ghostcrate.config import Settings
from ghostcrate.proxy import MirrorCrates, MirrorIndex, UpstreamClient

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[observe, cargo_errors])
    registry = CollectorRegistry()
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[METRICS] = AppMetrics.create(registry)
    app.cleanup_ctx.append(_mirror)

    app.router.add_get("/index/config.json", views.index_config)
    app.router.add_get("/index/{path:.+}", views.index_file)
    app.router.add_get("/api/v1/crates/{name}/{version}/download", views.download)
    app.router.add_get("/health", views.health)
    app.router.add_get("/metrics", views.metrics)
    return app


async def _mirror(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = DiskStore(settings.data_dir / "cache")
    removed = await asyncio.get_running_loop().run_in_executor(None, store.remove_leftovers)
    if removed:
        log.info("removed temporary files left by an earlier crash", extra={"count": removed})
    async with UpstreamClient.open(settings.upstream) as upstream:
        proxy_metrics = app[METRICS].proxy
        index = MirrorIndex(store, upstream, settings.upstream, proxy_metrics)
        crates = MirrorCrates(store, index, upstream, proxy_metrics)
        app[MIRROR_INDEX] = index
        app[MIRROR_CRATES] = crates
        yield
        await crates.close()
        await index.close()
