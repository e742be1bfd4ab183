"""`ghostcrate user ...` and `ghostcrate token ...`: accounts of the private registry.

They work on the registry database directly, beside a running server: a
revocation reaches every worker through the changes feed within a second.
A new token is printed alone on standard output (for scripts); every other
message goes to standard error.
"""

from __future__ import annotations

import argparse
import sys
import time

from ghostcrate.appliance import exitcodes
from ghostcrate.config import Settings
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.registry import Registry


async def run_user(settings: Settings, args: argparse.Namespace) -> int:
    async with Registry.open(settings) as registry:
        try:
            if args.action == "add":
                user, seq = await registry.accounts.add_user(args.name, admin=args.admin)
                registry.generation.advance(seq)
                role = "an administrator" if user.admin else "a user"
                print(f"added {user.name} as {role}", file=sys.stderr)
            else:
                for user in await registry.accounts.users():
                    roles = (("admin", user.admin), ("disabled", user.disabled))
                    flags = [name for name, on in roles if on]
                    print(f"{user.name}\t{','.join(flags) or '-'}")
        except RegistryError as error:
            return _refused("user", error)
    return exitcodes.OK


async def run_token(settings: Settings, args: argparse.Namespace) -> int:
    async with Registry.open(settings) as registry:
        try:
            if args.action == "create":
                await _create(registry, args)
            elif args.action == "revoke":
                await registry.revoke_token(args.id)
                print(f"revoked token {args.id}", file=sys.stderr)
            else:
                await _list(registry, args.user)
        except RegistryError as error:
            return _refused("token", error)
    return exitcodes.OK


async def _create(registry: Registry, args: argparse.Namespace) -> None:
    token, info = await registry.accounts.create_token(
        args.user,
        name=args.name,
        scopes=tuple(args.scope),
        crates=tuple(args.crates),
        expires_in_days=args.expires,
        org=args.org,
    )
    print(token)
    print(
        f"created token {info.id} for {info.user}; it is shown only this once: "
        "paste it into `cargo login --registry <name>`",
        file=sys.stderr,
    )


async def _list(registry: Registry, user: str | None) -> None:
    print("id\tuser\tname\tscopes\tcrates\torg\tcreated\texpires\tstate")
    now = time.time()
    for info in await registry.accounts.tokens(user):
        state = "live"
        if info.revoked_at is not None:
            state = "revoked"
        elif info.expires_at is not None and info.expires_at <= now:
            state = "expired"
        expires = _day(info.expires_at) if info.expires_at is not None else "never"
        scopes = ",".join(info.scopes) or "all"
        crates = ",".join(info.crates) or "all"
        org = info.org or "-"
        fields = (str(info.id), info.user, info.name, scopes, crates, org, _day(info.created_at))
        print("\t".join((*fields, expires, state)))


def _refused(command: str, error: RegistryError) -> int:
    print(f"ghostcrate {command}: {error.detail}", file=sys.stderr)
    return exitcodes.USAGE if error.status < 500 else exitcodes.FAILED


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))
