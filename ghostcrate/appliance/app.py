"""The application factory: routes, middlewares, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from ghostcrate.appliance import (
    accounts_api,
    api,
    apidocs,
    orgs_api,
    readiness,
    session_api,
    views,
    webhooks_api,
)
from ghostcrate.appliance.errors import cargo_errors
from ghostcrate.appliance.keys import (
    AUDIT,
    CACHE,
    LIMITS,
    METRICS,
    MIRROR,
    POLICY,
    PRIVATE,
    REGISTRY,
    REPLIES,
    SETTINGS,
    SSO,
)
from ghostcrate.appliance.limit_table import LimitTable
from ghostcrate.appliance.limits import RateLimits
from ghostcrate.appliance.metrics import AppMetrics
from ghostcrate.appliance.namespace import MergedReplies
from ghostcrate.appliance.observe import observe
from ghostcrate.appliance.policy import Policy
from ghostcrate.appliance.replies import MirrorReplies
from ghostcrate.appliance.sso import views as sso
from ghostcrate.appliance.sso.service import SingleSignOn
from ghostcrate.appliance.webhook_delivery import Deliverer
from ghostcrate.cache.setup import open_cache
from ghostcrate.config import Settings
from ghostcrate.private.audit_refusals import RefusalLog
from ghostcrate.private.registry import Registry, private_dir
from ghostcrate.proxy.setup import open_mirror

log = logging.getLogger(__name__)


def create_app(settings: Settings, carried: web.Application | None = None) -> web.Application:
    """The application; `carried`: the one it replaces (SIGHUP), whose metrics go on."""
    app = web.Application(middlewares=[observe, _rate_limits, cargo_errors])
    app[SETTINGS] = settings
    if carried is None:
        app[REGISTRY] = CollectorRegistry()
        app[METRICS] = AppMetrics.create(app[REGISTRY])
    else:
        app[REGISTRY] = carried[REGISTRY]
        app[METRICS] = carried[METRICS]
    app.cleanup_ctx.append(_cache)
    app.cleanup_ctx.append(_private)
    app.cleanup_ctx.append(_limits)
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(_mirror)
    app.cleanup_ctx.append(_sso)

    app.router.add_get("/index/config.json", views.index_config)
    app.router.add_get("/index/{path:.+}", views.index_file)
    app.router.add_get("/api/v1/crates/{name}/{version}/download", views.download)
    app.router.add_put("/api/v1/crates/new", api.publish)
    app.router.add_route("*", "/api/v1/crates/new", api.publish_only)
    app.router.add_get("/api/v1/crates", api.search)
    app.router.add_get("/api/v1/crates/{name}", api.crate_info)
    app.router.add_delete("/api/v1/crates/{name}/{version}/yank", api.yank)
    app.router.add_put("/api/v1/crates/{name}/{version}/unyank", api.unyank)
    app.router.add_get("/api/v1/crates/{name}/owners", api.list_owners)
    app.router.add_put("/api/v1/crates/{name}/owners", api.add_owners)
    app.router.add_delete("/api/v1/crates/{name}/owners", api.remove_owners)
    app.router.add_post("/api/v1/session", session_api.sign_in)
    app.router.add_delete("/api/v1/session", session_api.sign_out)
    app.router.add_post("/api/v1/session/refresh", session_api.refresh)
    app.router.add_get("/api/v1/me", session_api.me)
    _org_routes(app)
    _account_routes(app)
    app.router.add_get("/me", api.me)
    app.router.add_get("/api/v1/sso/{provider}/login", sso.login)
    app.router.add_get("/api/v1/sso/{provider}/callback", sso.callback)
    app.router.add_get("/health", views.health)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", readiness.readyz)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/api/openapi.json", apidocs.openapi_json)
    app.router.add_get("/api/docs", apidocs.docs_page)
    app.router.add_get("/api/docs/{asset}", apidocs.docs_asset)
    return app


def _org_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/orgs", orgs_api.list_orgs)
    app.router.add_post("/api/v1/orgs", orgs_api.add_org)
    app.router.add_get("/api/v1/orgs/{org}", orgs_api.show_org)
    app.router.add_get("/api/v1/orgs/{org}/members", orgs_api.list_members)
    app.router.add_put("/api/v1/orgs/{org}/members", orgs_api.set_members)
    app.router.add_delete("/api/v1/orgs/{org}/members", orgs_api.remove_members)
    app.router.add_get("/api/v1/orgs/{org}/teams", orgs_api.list_teams)
    app.router.add_post("/api/v1/orgs/{org}/teams", orgs_api.add_team)
    app.router.add_delete("/api/v1/orgs/{org}/teams/{team}", orgs_api.remove_team)
    app.router.add_put("/api/v1/orgs/{org}/teams/{team}/members", orgs_api.add_team_members)
    app.router.add_delete("/api/v1/orgs/{org}/teams/{team}/members", orgs_api.remove_team_members)
    app.router.add_get("/api/v1/orgs/{org}/webhooks", webhooks_api.list_webhooks)
    app.router.add_post("/api/v1/orgs/{org}/webhooks", webhooks_api.add_webhook)
    app.router.add_delete("/api/v1/orgs/{org}/webhooks/{id}", webhooks_api.remove_webhook)
    app.router.add_get("/api/v1/orgs/{org}/webhooks/{id}/deliveries", webhooks_api.deliveries)
    app.router.add_post("/api/v1/orgs/{org}/webhooks/{id}/retry", webhooks_api.retry)


@web.middleware
async def _rate_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    refusal = await request.app[LIMITS].refusal(request)
    return refusal if refusal is not None else await handler(request)


async def _limits(app: web.Application) -> AsyncIterator[None]:
    table = LimitTable(app[SETTINGS].data_dir / "locks" / "rate-limits")
    try:
        app[LIMITS] = RateLimits(
            app[SETTINGS].limits, table, app[POLICY], app[METRICS].rate_limited
        )
        yield
    finally:
        table.close()


def _account_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/me/tokens", accounts_api.list_tokens)
    app.router.add_put("/api/v1/me/tokens", accounts_api.create_token)
    app.router.add_delete("/api/v1/me/tokens/{id}", accounts_api.revoke_token)
    app.router.add_get("/api/v1/users/{login}", accounts_api.show_user)
    app.router.add_get("/api/v1/admin/users", accounts_api.list_users)
    app.router.add_put("/api/v1/admin/users/{login}/disable", accounts_api.disable_user)
    app.router.add_put("/api/v1/admin/users/{login}/enable", accounts_api.enable_user)


async def _cache(app: web.Application) -> AsyncIterator[None]:
    async with open_cache(app[SETTINGS], app[METRICS].cache) as cache:
        app[CACHE] = cache
        yield


async def _mirror(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with open_mirror(settings.upstream, app[CACHE], app[METRICS].proxy) as mirror:
        app[MIRROR] = mirror
        replies = MirrorReplies(settings, mirror.index, mirror.crates)
        app[REPLIES] = MergedReplies(
            replies, app[PRIVATE], mirror.search, auth_required=app[POLICY].tokens_wanted
        )
        yield


async def _sso(app: web.Application) -> AsyncIterator[None]:
    async with SingleSignOn.open(app[SETTINGS]) as single_sign_on:
        app[SSO] = single_sign_on
        yield


async def _private(app: web.Application) -> AsyncIterator[None]:
    async with Registry.open(app[SETTINGS], app[CACHE].shared, app[METRICS].registry) as registry:
        app[PRIVATE] = registry
        audit = app[SETTINGS].audit
        app[AUDIT] = RefusalLog(
            registry.db,
            flush_seconds=audit.refusal_flush_seconds,
            max_records=audit.refusal_records,
        )
        app[POLICY] = Policy(
            app[SETTINGS].auth,
            registry.accounts,
            registry.sessions,
            registry.metrics.auth_failures,
            app[AUDIT],
        )
        await registry.sessions.keys.load()  # the first start makes the signing key
        loop = asyncio.get_running_loop()
        tasks = (loop.create_task(registry.watch()), loop.create_task(app[AUDIT].run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app[AUDIT].flush()  # the last interval's refusals


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    """The config's webhooks recorded, and this worker's deliverer (one delivers at a time)."""
    settings, registry = app[SETTINGS], app[PRIVATE]
    await registry.webhooks.sync_config(settings.webhooks.endpoints)
    lock = private_dir(settings) / "webhooks.lock"
    attempts = registry.metrics.webhook_attempts
    async with Deliverer.open(registry.webhooks, settings.webhooks, lock, attempts) as deliverer:
        task = asyncio.get_running_loop().create_task(deliverer.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
