"""Typed keys for the services the application holds (aiohttp `AppKey`, `RequestKey`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from ghostcrate.appliance.metrics import AppMetrics
from ghostcrate.appliance.namespace import MergedReplies
from ghostcrate.appliance.policy import Policy
from ghostcrate.appliance.sso.service import SingleSignOn
from ghostcrate.cache import TieredCache
from ghostcrate.config import Settings
from ghostcrate.private.audit_refusals import RefusalLog
from ghostcrate.private.registry import Registry
from ghostcrate.proxy.setup import Mirror

if TYPE_CHECKING:  # limits.py refuses through errors.py, which needs these keys
    from ghostcrate.appliance.limits import RateLimits

SETTINGS = web.AppKey("settings", Settings)
CACHE = web.AppKey("cache", TieredCache)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", AppMetrics)
REPLIES = web.AppKey("replies", MergedReplies)
PRIVATE = web.AppKey("private", Registry)
POLICY = web.AppKey("policy", Policy)
SSO = web.AppKey("sso", SingleSignOn)
MIRROR = web.AppKey("mirror", Mirror)
LIMITS: web.AppKey[RateLimits] = web.AppKey("limits")
#: Refused requests and failed writes, on their way to the audit log.
AUDIT = web.AppKey("audit", RefusalLog)
#: How a mirror route's request was answered (`Reply.outcome`), for the metrics.
OUTCOME = web.RequestKey("outcome", str)
