"""`ghostcrate webhook ...`: organisations' webhooks, and every webhook's delivery log.

Like `ghostcrate org`, it works on the registry database beside a running
server, as the operator; the running server's deliverer picks up what changes
(a re-driven dead letter within a fraction of a second). Listings go to
standard output, tab-separated; other messages to standard error.
"""

from __future__ import annotations

import argparse
import sys

from ghostcrate.appliance import exitcodes
from ghostcrate.config import Settings, masked
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.registry import Registry
from ghostcrate.private.webhook_targets import Targets


async def run_webhook(settings: Settings, args: argparse.Namespace) -> int:
    async with Registry.open(settings) as registry:
        try:
            await _webhook(registry, settings, args)
        except RegistryError as error:
            print(f"ghostcrate webhook: {error.detail}", file=sys.stderr)
            return exitcodes.USAGE if error.status < 500 else exitcodes.FAILED
    return exitcodes.OK


async def _webhook(registry: Registry, settings: Settings, args: argparse.Namespace) -> None:
    webhooks = registry.webhooks
    if args.action == "add":
        events = [event for part in args.events for event in part.split(",") if event]
        targets = Targets.parse(settings.webhooks.allow_targets)
        webhook, secret = await webhooks.add(args.org, args.url, events, targets)
        print(f"added webhook {webhook.id} of organisation {webhook.org}", file=sys.stderr)
        print("its signing secret, shown only now:", file=sys.stderr)
        print(secret)
    elif args.action == "list":
        print("id\towner\turl\tevents")
        for each in await webhooks.webhooks(args.org):
            print(f"{each.id}\t{each.owner}\t{masked(each.url)}\t{','.join(each.events)}")
    elif args.action == "remove":
        if (await webhooks.webhook(args.id)).org is None:
            raise RegistryError(f"webhook {args.id} is the config's: remove it from the config")
        webhook = await webhooks.remove(args.id)
        print(f"removed webhook {webhook.id} ({webhook.owner})", file=sys.stderr)
    elif args.action == "deliveries":
        await webhooks.webhook(args.id)
        print("delivery\tevent\tcrate\tversion\tstate\tattempts\tlast_status\tlast_error\tcreated")
        for entry in await webhooks.deliveries(args.id, args.limit):
            if args.state is None or entry["state"] == args.state:
                print("\t".join(_cell(entry[key]) for key in _COLUMNS))
    else:
        if not args.deliveries and args.webhook is None:
            raise RegistryError("name dead deliveries, or give --webhook ID for all of its dead")
        count = await webhooks.retry(args.webhook, args.deliveries)
        print(f"{count} dead deliveries are pending again", file=sys.stderr)


_COLUMNS = (
    "delivery",
    "event",
    "crate",
    "version",
    "state",
    "attempts",
    "last_status",
    "last_error",
    "created_at",
)


def _cell(value: object) -> str:
    return "-" if value is None else str(value).replace("\t", " ").replace("\n", " ")
