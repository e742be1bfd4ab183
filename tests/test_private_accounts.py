"""Users and tokens (`Accounts`) against a real SQLite file: hashes, scopes, patterns, caching."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from ghostcrate.config import Settings
from ghostcrate.private.accounts import Accounts
from ghostcrate.private.db import Database
from ghostcrate.private.errors import Conflict, Forbidden, NotFound, RegistryError
from ghostcrate.private.registry import Registry
from ghostcrate.private.tokens import Actor, looks_like_token, token_hash


@pytest.fixture
async def accounts(tmp_path: Path) -> AsyncIterator[Accounts]:
    async with Database.open(tmp_path / "registry.db") as db:
        yield Accounts(db)


async def test_users_and_tokens_are_created_listed_and_revoked(accounts: Accounts) -> None:
    await accounts.add_user("alice", admin=True)
    await accounts.add_user("bob")
    with pytest.raises(Conflict, match="already exists"):
        await accounts.add_user("Alice")  # names differ only in case: the same user
    with pytest.raises(RegistryError, match="invalid user name"):
        await accounts.add_user("-x")
    assert [(u.name, u.admin) for u in await accounts.users()] == [("alice", True), ("bob", False)]

    token, info = await accounts.create_token("bob", scopes=("yank",), crates=("acme-*",))
    assert looks_like_token(token)
    assert (info.user, info.scopes, info.crates, info.revoked_at) == (
        "bob",
        ("yank",),
        ("acme-*",),
        None,
    )
    actor = await accounts.authenticate(token)
    assert (actor.user, actor.admin, actor.token_id) == ("bob", False, info.id)
    assert actor.scopes == frozenset({"yank"})

    await accounts.revoke_token(info.id)
    [listed] = await accounts.tokens("BOB")
    assert listed.id == info.id
    assert listed.revoked_at is not None
    with pytest.raises(NotFound, match="no live token"):
        await accounts.revoke_token(info.id)
    accounts.forget()
    with pytest.raises(Forbidden, match="revoked"):
        await accounts.authenticate(token)


async def test_only_a_hash_of_a_token_is_stored(accounts: Accounts, tmp_path: Path) -> None:
    await accounts.add_user("alice")
    token, _ = await accounts.create_token("alice")
    files, hashes = _stored(tmp_path)
    assert token.encode() not in files
    assert hashes == [token_hash(token)]


def _stored(directory: Path) -> tuple[bytes, list[str]]:
    """Every byte of the database's files (WAL included), and the token hashes in it."""
    files = b"".join(path.read_bytes() for path in directory.glob("registry.db*"))
    with closing(sqlite3.connect(directory / "registry.db")) as connection:
        hashes = [row[0] for row in connection.execute("SELECT hash FROM tokens")]
    return files, hashes


async def test_tokens_that_are_not_valid_are_refused_with_403(accounts: Accounts) -> None:
    await accounts.add_user("alice")
    with pytest.raises(Forbidden, match="not a GhostCrate token") as refused:
        await accounts.authenticate("hunter2")
    assert refused.value.status == 403
    with pytest.raises(Forbidden, match="unknown here"):
        await accounts.authenticate("gcr_" + "A" * 43)
    token, _ = await accounts.create_token("alice", expires_in_days=0.2 / 86400)
    assert (await accounts.authenticate(token)).expires_at is not None  # now remembered
    await asyncio.sleep(0.25)
    with pytest.raises(Forbidden, match="expired"):
        await accounts.authenticate(token)  # remembered, and yet refused once expired


async def test_create_token_refuses_what_it_cannot_honour(accounts: Accounts) -> None:
    await accounts.add_user("alice")
    with pytest.raises(NotFound, match="user add carol"):
        await accounts.create_token("carol")
    with pytest.raises(RegistryError, match="unknown scope publish"):
        await accounts.create_token("alice", scopes=("publish",))
    for pattern in ("acme-[ab]", "a*b", "ac?e", "*acme", "1acme"):
        with pytest.raises(RegistryError, match="invalid crate pattern"):
            await accounts.create_token("alice", crates=(pattern,))
    with pytest.raises(RegistryError, match="positive number of days"):
        await accounts.create_token("alice", expires_in_days=0)
    assert await accounts.tokens() == []


@pytest.mark.parametrize(
    ("scopes", "crates", "scope", "crate", "allowed"),
    [
        ((), (), "change-owners", "anything", True),
        (("yank",), (), "yank", "anything", True),
        (("yank",), (), "publish-update", "anything", False),
        (("publish-new", "publish-update"), (), "publish-update", "x", True),
        ((), ("acme-*",), "yank", "acme-core", True),
        ((), ("acme-*",), "yank", "ACME_core", True),  # names compare as crates.io's do
        ((), ("acme-*",), "yank", "acme", False),
        ((), ("acme-*",), "yank", "other", False),
        ((), ("serde",), "yank", "serde", True),
        ((), ("serde",), "yank", "serde_json", False),
        ((), ("*",), "yank", "serde", True),
        (("yank",), ("acme-*", "tools"), "yank", "tools", True),
        (("yank",), ("acme-*",), "publish-new", "acme-x", False),
    ],
)
def test_scopes_and_crate_patterns(
    scopes: tuple[str, ...], crates: tuple[str, ...], scope: str, crate: str, allowed: bool
) -> None:
    actor = Actor(1, "alice", admin=False, token_id=1, scopes=frozenset(scopes), crates=crates)
    assert actor.allows(scope, crate) is allowed
    if allowed:
        actor.check(scope, crate)
    else:
        with pytest.raises(Forbidden, match="this token") as refused:
            actor.check(scope, crate)
        assert "--scope" in refused.value.detail or "--crates" in refused.value.detail


async def test_a_remembered_token_is_forgotten_when_another_process_revokes_it(
    tmp_path: Path,
) -> None:
    """Two registries on one data directory stand for two workers (or a worker and the CLI)."""
    settings = Settings(data_dir=tmp_path)
    async with Registry.open(settings) as worker, Registry.open(settings) as cli:
        await cli.accounts.add_user("alice")
        token, info = await cli.accounts.create_token("alice")
        assert (await worker.accounts.authenticate(token)).token_id == info.id
        await cli.revoke_token(info.id)
        # Remembered: without the changes feed, this worker would accept it for a minute.
        assert (await worker.accounts.authenticate(token)).token_id == info.id
        assert worker.stale()
        await worker.sync()  # what every authenticated route does first
        with pytest.raises(Forbidden, match="revoked"):
            await worker.accounts.authenticate(token)
