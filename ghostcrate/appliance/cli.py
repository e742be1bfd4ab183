"""The `ghostcrate` command: parses arguments, loads settings, calls the application."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from yarl import URL

from ghostcrate import __version__
from ghostcrate.appliance import exitcodes, preflight
from ghostcrate.appliance.logs import configure_logging
from ghostcrate.config import (
    CONFIG_ENV,
    ConfigError,
    ConfigSource,
    LoadedSettings,
    LogSettings,
    load_settings,
    masked,
)

DESCRIPTION = """\
GhostCrate: a caching crates.io mirror and private Cargo registry.

Settings come from defaults < the TOML file (--config or $GHOSTCRATE_CONFIG)
< GHOSTCRATE_* environment variables < command-line options. The variable
for a key is GHOSTCRATE_<KEY>, or GHOSTCRATE_<TABLE>__<KEY> for a key in a
table: GHOSTCRATE_DATA_DIR, GHOSTCRATE_UPSTREAM__INDEX_TTL.
"""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help=f"TOML config file (default: ${CONFIG_ENV}, else built-in defaults)",
    )
    common.add_argument("--data-dir", type=Path, metavar="DIR", help="overrides data_dir")
    # The commands a person runs at a terminal: progress and a summary, no log lines.
    person = argparse.ArgumentParser(add_help=False, parents=[common])
    person.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also write the log's info lines (in [log] format) to standard error",
    )
    person.add_argument(
        "--log-format",
        choices=("json", "text"),
        help="write log lines in this format at [log] level (default: warnings only, as text)",
    )
    parser = argparse.ArgumentParser(
        prog="ghostcrate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ghostcrate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the mirror and private registry (until SIGTERM or Ctrl-C)",
        description="Serve the sparse index, crate downloads and the registry API on "
        "[server] listen.",
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="overrides [server] listen")
    serve.set_defaults(run=_serve)

    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration and print every setting with its origin",
        description="Exit 0 and print the effective settings if the configuration is valid "
        "(derived ones, and a proxy from the environment, with what they come from); exit "
        f"{exitcodes.CONFIG} with every problem, one a line naming the key and where it was set.",
    )
    check.set_defaults(run=_check_config)

    verify = commands.add_parser(
        "verify",
        parents=[person],
        help="re-hash every cached crate against its index entry, in every tier",
        description="Check every cached crate (disk and S3) against the sha256 of its cached "
        "index entry, and every cached index file's syntax; remove what fails. Safe while "
        f"serving. Exit 0 if all was sound, {exitcodes.FOUND_BAD} if anything was removed.",
    )
    verify.set_defaults(run=_maintenance("verify"))

    gc = commands.add_parser(
        "gc",
        parents=[person],
        help="evict down to the disk limit and remove orphans and abandoned temporary files",
        description="Evict the least recently used files until the disk tier is under "
        "[cache] disk_max_bytes, and remove temporary files of dead processes, files the "
        "mirror would never write, and empty directories. Safe while serving.",
    )
    gc.set_defaults(run=_maintenance("gc"))

    warm = commands.add_parser(
        "warm",
        parents=[person],
        help="fill the cache from Cargo.lock files and crate specs",
        description="Fetch into the cache every crates.io package of the given Cargo.lock "
        "files (directories are searched for them), and for each crate spec (name or "
        "name@req) its newest matching version with every dependency cargo could need "
        "(normal and build, all targets, optional ones included). Works on data_dir "
        "directly, beside a running server or without one; run it again to resume. Exit "
        f"{exitcodes.FAILED} if anything failed.",
    )
    warm.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="a Cargo.lock, or a directory to search"
    )
    warm.add_argument(
        "--crate",
        action="append",
        default=[],
        dest="crates",
        metavar="SPEC",
        help="a crate spec, name or name@req (repeatable), e.g. serde@1 or 'tokio@>=1.30, <2'",
    )
    warm.add_argument(
        "--crates-file", type=Path, metavar="FILE", help="crate specs, one a line (# comments)"
    )
    warm.add_argument(
        "--concurrency", type=_positive, default=8, metavar="N", help="parallel fetches (default 8)"
    )
    warm.set_defaults(run=_warm)

    export = commands.add_parser(
        "export",
        parents=[person],
        help="write the cache (or part of it) to one bundle file",
        description="Write every cached index file and crate (or, with --lockfile, those "
        "the lock files need) to a bundle: a tar file whose manifest lists each file's "
        "sha256. With --since, leave out what an earlier bundle already carried (or what "
        "has not changed since a date). With --private, also every private crate version "
        "(its .crate, index entry, yanked state and owners by user name; never a token): "
        "--lockfile limits them to the versions the lock files lock, --since leaves out "
        "those the earlier bundle carried (or published before the date). A version "
        "carried before is not carried again when it is yanked later.",
    )
    export.add_argument(
        "--output", "-o", type=Path, required=True, metavar="FILE", help="the bundle to write"
    )
    export.add_argument(
        "--since", metavar="BUNDLE_OR_DATE", help="an earlier bundle, or a date (2026-11-01)"
    )
    export.add_argument(
        "--lockfile",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="only what this Cargo.lock (or the ones below this directory) needs; repeatable",
    )
    export.add_argument(
        "--private",
        action="store_true",
        help="also carry the private registry's crates (default: the mirror's files only)",
    )
    export.set_defaults(run=_bundle_command("export"))

    load = commands.add_parser(
        "import",
        parents=[person],
        help="verify a bundle and add what the cache lacks",
        description="Check every file of the bundle against its manifest and every crate "
        "against its index entry; refuse the whole bundle if anything fails, otherwise "
        "add what the cache lacks. Private crates in the bundle (export --private) are "
        "registered, each name becoming private here; a version already here with the same "
        "checksum is skipped, one with another checksum, or a name here in another "
        "spelling, refuses the bundle. A new crate is owned by those of its owners who are "
        "users here (by name), else only administrators may yank it. Running it twice adds "
        "nothing. Safe while serving: a running server sees the new crates at once.",
    )
    load.add_argument("bundle", type=Path, metavar="FILE", help="a bundle written by export")
    load.set_defaults(run=_bundle_command("import"))
    _account_commands(commands, common)
    _backup_commands(commands, person)
    _org_commands(commands, common)
    _audit_command(commands, common)
    _webhook_commands(commands, common)
    return parser


def _backup_commands(commands: Any, person: argparse.ArgumentParser) -> None:
    """`backup` (and `backup --verify`) and `restore`."""
    backup = commands.add_parser(
        "backup",
        parents=[person],
        help="take a consistent backup while serving, or --verify one",
        description="Write one file with the registry database (a consistent copy of one "
        "moment, taken while the server serves and publishes), every private crate it "
        "knows, the signing keys and the configuration file; mirrored crates only with "
        "--with-cache (they can be fetched again). The file is mode 0600: it holds "
        "secrets. With --verify FILE, check a backup without restoring it.",
    )
    what = backup.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE_OR_DIR",
        help="the backup to write; in a directory, named ghostcrate-backup-<UTC time>.tar.gz",
    )
    what.add_argument("--verify", type=Path, metavar="FILE", help="check this backup")
    backup.add_argument(
        "--with-cache", action="store_true", help="also the mirror's cached index and crates"
    )
    backup.add_argument(
        "--keep",
        type=_positive,
        metavar="N",
        help="with --output DIR: then remove all but the N newest backups there",
    )
    backup.set_defaults(run=_backup)
    restore = commands.add_parser(
        "restore",
        parents=[person],
        help="restore a backup into an empty data_dir",
        description="Verify the backup, then restore it into data_dir, which must be empty "
        "or not exist (it is never mixed with live data). The backed-up configuration file "
        "is written to <data_dir>/restored-config/ for you to put in place.",
    )
    restore.add_argument("backup", type=Path, metavar="FILE", help="a file written by backup")
    restore.set_defaults(run=_restore)


def _backup(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    from ghostcrate.appliance.backup_cli import run_backup

    configure_logging(_command_log(loaded.settings.log, args))
    return run_backup(loaded.settings, args, _config_file(args))


def _restore(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    from ghostcrate.appliance.backup_cli import run_restore

    configure_logging(_command_log(loaded.settings.log, args))
    return run_restore(loaded.settings, args.backup)


def _config_file(args: argparse.Namespace) -> Path | None:
    """The configuration file in use (--config, else $GHOSTCRATE_CONFIG), if any."""
    path = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    return path if path is not None and path.is_file() else None


def _account_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`user` and `token`: `--config` and `--data-dir` go before or after the action."""
    from ghostcrate.private.tokens import SCOPES

    # The actions' copies of the common options set nothing unless given, so that they
    # do not overwrite what was given before the action.
    common_again = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common_again.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    common_again.add_argument("--data-dir", type=Path, metavar="DIR", help="overrides data_dir")
    user = commands.add_parser(
        "user",
        parents=[common],
        help="add, list, disable and enable users of the private registry, set passwords",
        description="Users own private crates, hold the tokens cargo publishes with, and "
        "sign in with a password (POST /api/v1/session). A change reaches every worker of a "
        "running server within a second.",
    )
    user_actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    stdin = argparse.ArgumentParser(add_help=False)
    stdin.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line of standard input (for scripts)",
    )
    add = user_actions.add_parser(
        "add", parents=[common_again, stdin], help="add a user (with a password: --password-stdin)"
    )
    add.add_argument("name", metavar="NAME", help="login name (letters, digits, . - _)")
    add.add_argument("--admin", action="store_true", help="may administer every crate")
    user_actions.add_parser("list", parents=[common_again], help="list users")
    for action, text in (
        ("disable", "stop the user's tokens and sessions, and their sign-in"),
        ("enable", "let a disabled user in again"),
        ("set-password", "set the user's password (asked twice) and end their sessions"),
        ("promote", "make the user an administrator (--demote: no longer one)"),
        ("demote", "make the user no longer an administrator"),
    ):
        parents = [common_again, stdin] if action == "set-password" else [common_again]
        parser = user_actions.add_parser(action, parents=parents, help=text)
        parser.add_argument("name", metavar="NAME", help="the user")
        if action == "promote":
            parser.add_argument(
                "--demote", action="store_true", help="take the administrator's rights away"
            )
        parser.set_defaults(demote=action == "demote")
    user.set_defaults(run=_accounts("user"))

    token = commands.add_parser(
        "token",
        parents=[common],
        help="create, list and revoke API tokens for cargo",
        description="Only a hash of each token is stored: `create` prints the token once, "
        "alone on standard output.",
    )
    token_actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_actions.add_parser("create", parents=[common_again], help="create a token")
    create.add_argument("--user", required=True, metavar="NAME", help="whose token it is")
    create.add_argument("--name", default="cargo", help="a label for lists (default: cargo)")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        choices=SCOPES,
        help="limit the token to this action (repeatable; default: all of them)",
    )
    create.add_argument(
        "--crates",
        action="append",
        default=[],
        metavar="PATTERN",
        help="limit the token to crates matching this pattern, e.g. 'acme-*' (repeatable)",
    )
    create.add_argument(
        "--expires",
        type=float,
        metavar="DAYS",
        help="the token stops working after DAYS days (a fraction too: 0.5 is 12 hours)",
    )
    create.add_argument(
        "--org",
        metavar="ORG",
        help="limit the token to crates of this organisation (its namespace, its teams' crates)",
    )
    listing = token_actions.add_parser("list", parents=[common_again], help="list tokens")
    listing.add_argument("--user", metavar="NAME", help="only this user's tokens")
    revoke = token_actions.add_parser("revoke", parents=[common_again], help="revoke a token")
    revoke.add_argument("id", type=int, metavar="ID", help="the token's id (see `token list`)")
    token.set_defaults(run=_accounts("token"))

    keys = commands.add_parser(
        "keys",
        parents=[common],
        help="rotate the key that signs session tokens",
        description="Session tokens (POST /api/v1/session) are signed with the newest key in "
        "data_dir/keys. `rotate` makes a new one (its id is printed on standard output); "
        "older keys verify the tokens they signed until these expire, then are removed. "
        "Safe while serving: every worker signs with the new key within a second.",
    )
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    key_actions.add_parser("rotate", parents=[common_again], help="make a new signing key")
    keys.set_defaults(run=_accounts("keys"))


def _accounts(command: str) -> Callable[[LoadedSettings, argparse.Namespace], int]:
    def run(loaded: LoadedSettings, args: argparse.Namespace) -> int:
        from ghostcrate.appliance.accounts_cli import run_token, run_user
        from ghostcrate.appliance.keys_cli import run_keys

        configure_logging(LogSettings(level="warning", format="text"))
        runner = {"user": run_user, "token": run_token, "keys": run_keys}[command]
        return asyncio.run(runner(loaded.settings, args))

    return run


def _org_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`org` and `team`: organisations, their members and roles, their teams."""
    from ghostcrate.private.rights import ROLES

    again = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    again.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    again.add_argument("--data-dir", type=Path, metavar="DIR", help="overrides data_dir")
    org = commands.add_parser(
        "org",
        parents=[common],
        help="add, list and show organisations and manage their members",
        description="An organisation claims crate names (--namespace 'acme-*') and has members "
        "in roles (owner, admin, member, contributor) and teams that own crates. "
        "See docs/identity.md for what each role may do.",
    )
    actions = org.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[again], help="add an organisation")
    add.add_argument("org", metavar="ORG")
    add.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="PATTERN",
        help="crate names the organisation claims, e.g. 'acme-*' (repeatable)",
    )
    add.add_argument("--owner", metavar="USER", help="its first owner")
    actions.add_parser("list", parents=[again], help="list organisations")
    show = actions.add_parser("show", parents=[again], help="namespaces, members and teams")
    show.add_argument("org", metavar="ORG")
    member = actions.add_parser("member", parents=[again], help="add or remove a member")
    member_actions = member.add_subparsers(dest="member_action", required=True, metavar="ACTION")
    member_add = member_actions.add_parser(
        "add", parents=[again], help="add a member, or change a member's role"
    )
    member_remove = member_actions.add_parser("remove", parents=[again], help="remove a member")
    for parser in (member_add, member_remove):
        parser.add_argument("org", metavar="ORG")
        parser.add_argument("user", metavar="USER")
    member_add.add_argument("--role", choices=ROLES, default="member", help="default: member")
    org.set_defaults(run=_orgs("org"))

    team = commands.add_parser(
        "team",
        parents=[common],
        help="add, remove and list an organisation's teams and their members",
        description="A team (ORG:TEAM) may own crates: `cargo owner --add ORG:TEAM CRATE`.",
    )
    team_actions = team.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("add", "remove"):
        parser = team_actions.add_parser(action, parents=[again], help=f"{action} a team")
        parser.add_argument("names", nargs="+", metavar="ORG:TEAM", help="or ORG TEAM")
    team_member = team_actions.add_parser(
        "member", parents=[again], help="add or remove a team member"
    )
    team_member_actions = team_member.add_subparsers(
        dest="member_action", required=True, metavar="ACTION"
    )
    for action in ("add", "remove"):
        parser = team_member_actions.add_parser(action, parents=[again], help=f"{action} one")
        parser.add_argument("names", nargs="+", metavar="ORG:TEAM USER")
    listing = team_actions.add_parser("list", parents=[again], help="list an org's teams")
    listing.add_argument("org", metavar="ORG")
    team.set_defaults(run=_orgs("team"))


def _audit_command(commands: Any, common: argparse.ArgumentParser) -> None:
    """`audit`: show, export and verify the audit log."""
    command = commands.add_parser(
        "audit",
        parents=[common],
        help="show, export (JSON lines) or --verify the audit log",
        description="Print the audit log's records, oldest first: every write (publish, yank, "
        "owners, organisations, sign-ins, tokens, users, keys) and every refused request, with "
        "who, from where, the request id and the outcome. Filters combine. With --verify, "
        "walk the hash chain instead: exit 0 if it is whole, "
        f"{exitcodes.BROKEN} naming the first record removed, edited or added by hand. "
        "See docs/audit.md.",
    )
    command.add_argument(
        "--since",
        metavar="WHEN",
        help="records from then on: 2026-12-01, 2026-12-01T08:00, 24h, 7d",
    )
    command.add_argument(
        "--user", metavar="LOGIN", help="records where LOGIN acted or was acted on"
    )
    command.add_argument("--crate", metavar="NAME", help="records about this crate")
    command.add_argument(
        "--format",
        choices=("text", "jsonl"),
        default="text",
        help="text (one readable line per record, the default) or jsonl (a JSON object per "
        "line, hashes included)",
    )
    command.add_argument(
        "--json", dest="format", action="store_const", const="jsonl", help="--format jsonl"
    )
    command.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE instead of standard output"
    )
    command.add_argument(
        "--verify", action="store_true", help="check the hash chain from the first record"
    )
    command.set_defaults(run=_audit)


def _audit(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    from ghostcrate.appliance.audit_cli import run_audit

    configure_logging(LogSettings(level="warning", format="text"))
    return asyncio.run(run_audit(loaded.settings, args))


def _webhook_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`webhook`: organisations' webhooks, delivery logs, re-driving dead letters."""
    from ghostcrate.config.model import WEBHOOK_EVENTS

    again = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    again.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    again.add_argument("--data-dir", type=Path, metavar="DIR", help="overrides data_dir")
    webhook = commands.add_parser(
        "webhook",
        parents=[common],
        help="add, list and remove webhooks, show their deliveries, re-drive dead ones",
        description="Webhooks tell receivers of publishes, yanks and owner changes, signed "
        "with HMAC-SHA256. An organisation's are managed here or through the API; the "
        "config's ([[webhooks.endpoints]]) only in the config. See docs/webhooks.md.",
    )
    actions = webhook.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", parents=[again], help="add a webhook to an organisation; prints its secret"
    )
    add.add_argument("--org", required=True, metavar="ORG", help="the organisation")
    add.add_argument("url", metavar="URL", help="http:// or https:// URL of the receiver")
    add.add_argument(
        "--events",
        action="append",
        default=[],
        metavar="EVENT,...",
        help=f"what it is told of (default: all of {', '.join(WEBHOOK_EVENTS)})",
    )
    listing = actions.add_parser("list", parents=[again], help="list webhooks")
    listing.add_argument("--org", default=None, metavar="ORG", help="only this organisation's")
    remove = actions.add_parser("remove", parents=[again], help="remove an organisation's webhook")
    remove.add_argument("id", type=int, metavar="ID")
    log = actions.add_parser("deliveries", parents=[again], help="a webhook's delivery log")
    log.add_argument("id", type=int, metavar="ID")
    log.add_argument("--state", choices=("pending", "delivered", "dead"), default=None)
    log.add_argument("--limit", type=_positive, default=100, help="newest N (default: 100)")
    retry = actions.add_parser("retry", parents=[again], help="re-drive dead deliveries")
    retry.add_argument("deliveries", nargs="*", metavar="DELIVERY", help="delivery ids")
    retry.add_argument("--webhook", type=int, default=None, metavar="ID", help="all its dead")
    webhook.set_defaults(run=_webhooks)


def _webhooks(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    from ghostcrate.appliance.webhooks_cli import run_webhook

    configure_logging(LogSettings(level="warning", format="text"))
    if args.action == "add" and not args.events:
        from ghostcrate.config.model import WEBHOOK_EVENTS

        args.events = [",".join(WEBHOOK_EVENTS)]
    return asyncio.run(run_webhook(loaded.settings, args))


def _orgs(command: str) -> Callable[[LoadedSettings, argparse.Namespace], int]:
    def run(loaded: LoadedSettings, args: argparse.Namespace) -> int:
        from ghostcrate.appliance.orgs_cli import run_org, run_team

        configure_logging(LogSettings(level="warning", format="text"))
        runner = run_org if command == "org" else run_team
        return asyncio.run(runner(loaded.settings, args))

    return run


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "listen", None):
        overrides["server.listen"] = args.listen
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return overrides


def _check_config(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    dumped = loaded.settings.model_dump(mode="json")
    shown: dict[str, tuple[Any, str]] = {}
    for key, origin in loaded.origins.items():
        value: Any = dumped
        for part in key.split("."):
            value = value[part]
        shown[key] = (value, origin)
    shown.update(_derived(loaded))
    print("configuration is valid")
    for key, (value, origin) in sorted(shown.items()):
        print(f"{key} = {masked(value)!r}  ({origin})")
    return 0


def _derived(loaded: LoadedSettings) -> dict[str, tuple[Any, str]]:
    """What GhostCrate works out itself (public_url, the outbound proxy), and from what."""
    from ghostcrate.proxy.upstream import proxy_for

    server, upstream = loaded.settings.server, loaded.settings.upstream
    derived: dict[str, tuple[Any, str]] = {}
    if server.public_url is None:
        derived["server.public_url"] = (server.base_url, "from server.listen")
    index = URL(upstream.index)
    environment = urllib.request.getproxies()
    proxy = upstream.proxy or environment.get(index.scheme)
    if proxy is None:
        return derived
    origin = loaded.origins["upstream.proxy"]
    if upstream.proxy is None:
        variable = f"{index.scheme}_proxy"  # lower case wins, as urllib reads them
        origin = f"from {variable if os.environ.get(variable) == proxy else variable.upper()}"
    if proxy_for(index.scheme, index.host or "", upstream.proxy, environment) is None:
        origin += f"; not for {index.host}, which NO_PROXY exempts"
    derived["upstream.proxy"] = (proxy, origin)
    return derived


def _maintenance(command: str) -> Callable[[LoadedSettings, argparse.Namespace], int]:
    def run(loaded: LoadedSettings, args: argparse.Namespace) -> int:
        from ghostcrate.appliance.maintenance import run_gc, run_verify

        configure_logging(_command_log(loaded.settings.log, args))
        return asyncio.run((run_verify if command == "verify" else run_gc)(loaded.settings))

    return run


def _warm(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    from ghostcrate.appliance.maintenance import run_warm
    from ghostcrate.proxy.warm import BadInput, warm_inputs

    configure_logging(_command_log(loaded.settings.log, args))
    try:
        lockfiles, specs = warm_inputs(args.paths, args.crates, args.crates_file)
        return asyncio.run(run_warm(loaded.settings, lockfiles, specs, args.concurrency))
    except BadInput as error:  # also an unreadable Cargo.lock
        print(f"ghostcrate warm: {error}", file=sys.stderr)
        return exitcodes.USAGE


def _bundle_command(command: str) -> Callable[[LoadedSettings, argparse.Namespace], int]:
    def run(loaded: LoadedSettings, args: argparse.Namespace) -> int:
        from ghostcrate.appliance.maintenance import run_export, run_import
        from ghostcrate.proxy.bundle import BundleError, Selection
        from ghostcrate.proxy.warm import BadInput, find_lockfiles

        configure_logging(_command_log(loaded.settings.log, args))
        if command == "import" and not args.bundle.is_file():
            print(f"ghostcrate import: {args.bundle} is not a file", file=sys.stderr)
            return exitcodes.USAGE
        try:
            selection = None
            if command == "export":
                selection = Selection.from_arguments(args.since, find_lockfiles(args.lockfile))
        except (BundleError, BadInput) as error:  # a --since or --lockfile that cannot be used
            print(f"ghostcrate {command}: {error}", file=sys.stderr)
            return exitcodes.USAGE
        try:
            if selection is None:
                return asyncio.run(run_import(loaded.settings, args.bundle))
            return asyncio.run(
                run_export(loaded.settings, args.output, selection, private=args.private)
            )
        except BundleError as error:
            print(f"ghostcrate {command}: {error}", file=sys.stderr)
            return exitcodes.FAILED

    return run


def _command_log(settings: LogSettings, args: argparse.Namespace) -> LogSettings:
    """What a command run by a person logs: warnings as text, unless asked for more."""
    if args.log_format is not None:
        return settings.model_copy(update={"format": args.log_format})
    if args.verbose:
        return settings.model_copy(
            update={"level": "debug" if settings.level == "debug" else "info"}
        )
    return LogSettings(level="warning", format="text")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _serve(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    from ghostcrate.appliance.serve import serve

    source = ConfigSource(args.config, dict(os.environ), _overrides(args))
    return serve(loaded.settings, source)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = load_settings(args.config, os.environ, _overrides(args))
    except ConfigError as error:
        for problem in error.problems:
            print(f"ghostcrate: configuration error: {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    found = preflight.problems(loaded)
    if args.command == "serve" and not found:
        server = loaded.settings.server
        in_use = preflight.address_in_use(server.host, server.port)
        found = [in_use] if in_use is not None else []
    if found:
        for problem in found:
            print(f"ghostcrate: {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    if args.command != "serve":
        from ghostcrate.private import audit

        audit.ORIGIN.set(audit.Origin.command_line())  # what a command changes, the CLI did
    code: int = args.run(loaded, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
