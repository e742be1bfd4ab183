"""An organisation's webhooks over the API: `/api/v1/orgs/{org}/webhooks`.

Every route needs a token `[auth] publish` allows, and then the
`manage-webhooks` right of `rights.decide_org` (the organisation's owners and
admins, and the registry's administrators). A new webhook's URL must reach an
allowed address (`webhook_targets`); its secret is in the answer to its
creation and never again.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ghostcrate.appliance.api import actor_of
from ghostcrate.appliance.bodies import json_object
from ghostcrate.appliance.keys import PRIVATE, SETTINGS
from ghostcrate.appliance.orgs_api import require_right
from ghostcrate.config.model import WEBHOOK_EVENTS
from ghostcrate.private.errors import NotFound, RegistryError
from ghostcrate.private.orgs import Org
from ghostcrate.private.rights import MANAGE_WEBHOOKS
from ghostcrate.private.tokens import Actor
from ghostcrate.private.webhook_targets import Targets

log = logging.getLogger(__name__)

_ADD_BODY = 'expected a JSON body like {"url": "https://hooks.example/x", "events": ["publish"]}'
_RETRY_BODY = 'expected a JSON body like {"deliveries": ["ID"]} or {"dead": true}'


async def list_webhooks(request: web.Request) -> web.Response:
    org, _ = await _managed(request)
    webhooks = await request.app[PRIVATE].webhooks.webhooks(org.name)
    return web.json_response({"webhooks": [webhook.as_json() for webhook in webhooks]})


async def add_webhook(request: web.Request) -> web.Response:
    org, actor = await _managed(request)
    document = await json_object(request, _ADD_BODY)
    url, events = document.get("url"), document.get("events", list(WEBHOOK_EVENTS))
    if (
        not isinstance(url, str)
        or not isinstance(events, list)
        or not all(isinstance(event, str) for event in events)
    ):
        raise RegistryError(_ADD_BODY)
    targets = Targets.parse(request.app[SETTINGS].webhooks.allow_targets)
    webhook, secret = await request.app[PRIVATE].webhooks.add(org.name, url, events, targets)
    log.info(
        "webhook added",
        extra={
            "org": org.name,
            "webhook": webhook.id,
            "events": list(webhook.events),
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    return web.json_response({"webhook": webhook.as_json(), "secret": secret}, status=201)


async def remove_webhook(request: web.Request) -> web.Response:
    org, actor = await _managed(request)
    webhook = await request.app[PRIVATE].webhooks.remove(_id(request), org.name)
    log.info(
        "webhook removed",
        extra={
            "org": org.name,
            "webhook": webhook.id,
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    return web.json_response({"webhook": webhook.as_json()})


async def deliveries(request: web.Request) -> web.Response:
    org, _ = await _managed(request)
    webhooks = request.app[PRIVATE].webhooks
    webhook = await webhooks.webhook(_id(request), org.name)
    return web.json_response({"deliveries": await webhooks.deliveries(webhook.id)})


async def retry(request: web.Request) -> web.Response:
    """Re-drive dead deliveries: those named, or (`"dead": true`) all of the webhook's."""
    org, actor = await _managed(request)
    webhooks = request.app[PRIVATE].webhooks
    webhook = await webhooks.webhook(_id(request), org.name)
    document = await json_object(request, _RETRY_BODY)
    named = document.get("deliveries", [])
    everything = document.get("dead") is True and not named
    if not everything and not (
        isinstance(named, list) and named and all(isinstance(each, str) for each in named)
    ):
        raise RegistryError(_RETRY_BODY)
    count = await webhooks.retry(webhook.id, [] if everything else named)
    log.info(
        "webhook deliveries re-driven",
        extra={"org": org.name, "webhook": webhook.id, "count": count, "user": actor.user},
    )
    return web.json_response({"retried": count})


async def _managed(request: web.Request) -> tuple[Org, Actor]:
    """The organisation of the route, if the actor may manage its webhooks."""
    actor = await actor_of(request)
    registry = request.app[PRIVATE]
    org = await registry.orgs.org(request.match_info["org"])
    await require_right(registry, actor, org, MANAGE_WEBHOOKS)
    return org, actor


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise NotFound(f"no webhook {text!r}: webhooks are numbered")
    return int(text)
