"""`ghostcrate user ...` and `ghostcrate token ...`: accounts of the private registry.

They work on the registry database directly, beside a running server: a
revocation reaches every worker through the changes feed within a second.
A new token is printed alone on standard output (for scripts); every other
message goes to standard error. A password is read from the terminal (asked
twice) or, with `--password-stdin`, as one line of standard input.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from ghostcrate.appliance import exitcodes
from ghostcrate.config import Settings
from ghostcrate.private.accounts import Accounts
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.registry import Registry


class NoPassword(Exception):
    """The password could not be read (the two entries differ, or nothing came)."""


async def run_user(settings: Settings, args: argparse.Namespace) -> int:
    try:
        password = _password(args)
    except NoPassword as error:
        print(f"ghostcrate user: {error}", file=sys.stderr)
        return exitcodes.USAGE
    async with Registry.open(settings) as registry:
        try:
            await _user_action(registry, args, password)
        except RegistryError as error:
            return _refused("user", error)
    return exitcodes.OK


async def _user_action(registry: Registry, args: argparse.Namespace, password: str | None) -> None:
    accounts = registry.accounts
    if args.action == "add":
        user, seq = await accounts.add_user(args.name, admin=args.admin, password=password)
        registry.generation.advance(seq)
        role = "an administrator" if user.admin else "a user"
        print(f"added {user.name} as {role}", file=sys.stderr)
    elif args.action == "list":
        for user in await accounts.users():
            roles = (("admin", user.admin), ("disabled", user.disabled))
            flags = [name for name, on in roles if on]
            print(f"{user.name}\t{','.join(flags) or '-'}")
    else:
        registry.generation.advance(await _change(accounts, args, password))
        print(f"{args.name}: {_DONE[args.action, getattr(args, 'demote', False)]}", file=sys.stderr)


async def _change(accounts: Accounts, args: argparse.Namespace, password: str | None) -> int:
    """Carry out a change of one user; its seq."""
    match args.action:
        case "disable" | "enable":
            return await accounts.set_disabled(args.name, disabled=args.action == "disable")
        case "promote" | "demote":
            return await accounts.set_admin(args.name, admin=not args.demote)
        case _:
            assert password is not None
            return await accounts.set_password(args.name, password)


_DONE = {
    ("disable", False): "disabled: its tokens and sessions no longer work",
    ("enable", False): "enabled again",
    ("set-password", False): "password set; its sessions are ended",
    ("promote", False): "is an administrator now",
    ("promote", True): "is no longer an administrator",
    ("demote", True): "is no longer an administrator",
}


def _password(args: argparse.Namespace) -> str | None:
    """The password an action needs: a line of standard input, or asked twice at the terminal."""
    if args.action not in ("add", "set-password"):
        return None
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not line:
            raise NoPassword("--password-stdin: standard input has no password line")
        return line
    if args.action == "add":
        return None
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("the same again: ") != first:
        raise NoPassword("the two passwords differ; nothing was changed")
    return first


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
