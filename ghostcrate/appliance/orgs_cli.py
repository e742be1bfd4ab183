"""`ghostcrate org ...` and `ghostcrate team ...`: organisations of the private registry.

They work on the registry database directly, beside a running server, as the
operator (no rights are checked: whoever can write the database is its
administrator); every worker applies a change within a second. Listings go
to standard output, tab-separated; every other message to standard error.
"""

from __future__ import annotations

import argparse
import sys

from ghostcrate.appliance import exitcodes
from ghostcrate.config import Settings
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.orgs import split_team
from ghostcrate.private.registry import Registry


async def run_org(settings: Settings, args: argparse.Namespace) -> int:
    async with Registry.open(settings) as registry:
        try:
            await _org(registry, args)
        except RegistryError as error:
            return _refused("org", error)
    return exitcodes.OK


async def run_team(settings: Settings, args: argparse.Namespace) -> int:
    async with Registry.open(settings) as registry:
        try:
            await _team(registry, args)
        except RegistryError as error:
            return _refused("team", error)
    return exitcodes.OK


async def _org(registry: Registry, args: argparse.Namespace) -> None:
    orgs = registry.orgs
    if args.action == "add":
        seq = await orgs.add_org(args.org, tuple(args.namespace), args.owner)
        registry.generation.advance(seq)
        print(f"added organisation {args.org}", file=sys.stderr)
    elif args.action == "list":
        print("org\tnamespaces\tmembers\tteams")
        for org in await orgs.orgs():
            namespaces = ",".join(org.namespaces) or "-"
            print(f"{org.name}\t{namespaces}\t{len(org.members)}\t{len(org.teams)}")
    elif args.action == "show":
        org = await orgs.org(args.org)
        print(f"org\t{org.name}")
        for pattern in org.namespaces:
            print(f"namespace\t{pattern}")
        for user, role in org.members:
            print(f"member\t{user}\t{role}")
        for team in org.teams:
            print(f"team\t{team.login}\t{','.join(team.members) or '-'}")
    elif args.member_action == "add":
        registry.generation.advance(await orgs.set_members(args.org, [(args.user, args.role)]))
        print(f"{args.user} is now {args.role} of organisation {args.org}", file=sys.stderr)
    else:
        registry.generation.advance(await orgs.remove_members(args.org, [args.user]))
        print(f"removed {args.user} from organisation {args.org}", file=sys.stderr)


async def _team(registry: Registry, args: argparse.Namespace) -> None:
    orgs = registry.orgs
    if args.action == "list":
        print("team\tmembers")
        for each in (await orgs.org(args.org)).teams:
            print(f"{each.login}\t{','.join(each.members) or '-'}")
        return
    if args.action == "member":
        *names, user = args.names
        org, team = _team_of(names)
        seq = await orgs.set_team_members(org, team, [user], add=args.member_action == "add")
        registry.generation.advance(seq)
        done = "added to" if args.member_action == "add" else "removed from"
        print(f"{user} {done} team {org}:{team}", file=sys.stderr)
        return
    org, team = _team_of(args.names)
    if args.action == "add":
        registry.generation.advance(await orgs.add_team(org, team))
        print(f"added team {org}:{team}", file=sys.stderr)
    else:
        registry.generation.advance(await orgs.remove_team(org, team))
        print(f"removed team {org}:{team}", file=sys.stderr)


def _team_of(names: list[str]) -> tuple[str, str]:
    """(org, team) of `ORG:TEAM` or `ORG TEAM` on the command line."""
    if len(names) == 2 and ":" not in "".join(names):
        return names[0], names[1]
    parts = split_team(names[0]) if len(names) == 1 else None
    if parts is None:
        raise RegistryError(f"expected ORG:TEAM or ORG TEAM, not {' '.join(names)!r}")
    return parts


def _refused(command: str, error: RegistryError) -> int:
    print(f"ghostcrate {command}: {error.detail}", file=sys.stderr)
    return exitcodes.USAGE if error.status < 500 else exitcodes.FAILED
