"""`ghostcrate user ...` as an operator runs it: passwords, disable, enable, promote, demote."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from argon2 import PasswordHasher

from ghostcrate.private.accounts import Accounts
from ghostcrate.private.db import Database
from ghostcrate.private.passwords import Passwords
from tests.support.appliance import Appliance


def appliance_at(tmp_path: Path) -> Appliance:
    """An appliance's config and data directory (not started: the CLI works on the files)."""
    return Appliance(tmp_path / "appliance", "http://127.0.0.1:9/")


def password_hash(appliance: Appliance, name: str) -> str | None:
    with closing(sqlite3.connect(appliance.data_dir / "private" / "registry.db")) as connection:
        row = connection.execute("SELECT password_hash FROM users WHERE name = ?", (name,))
        found: str | None = row.fetchone()[0]
        return found


def users(appliance: Appliance) -> str:
    listed = appliance.run("user", "list")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


def test_user_actions_change_the_user_and_say_so_on_stderr(tmp_path: Path) -> None:
    appliance = appliance_at(tmp_path)
    added = appliance.run("user", "add", "alice", "--password-stdin", input="correct horse\n")
    assert (added.returncode, added.stdout) == (0, ""), added.stderr
    stored = password_hash(appliance, "alice")
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert users(appliance) == "alice\t-\n"

    for action, shown, listed in (
        ("promote", "is an administrator now", "alice\tadmin\n"),
        ("disable", "disabled", "alice\tadmin,disabled\n"),
        ("enable", "enabled again", "alice\tadmin\n"),
        ("demote", "is no longer an administrator", "alice\t-\n"),
    ):
        done = appliance.run("user", action, "alice")
        assert (done.returncode, done.stdout) == (0, ""), done.stderr
        assert f"alice: {shown}" in done.stderr
        assert users(appliance) == listed
    assert appliance.run("user", "promote", "alice").returncode == 0
    assert appliance.run("user", "promote", "--demote", "alice").returncode == 0
    assert users(appliance) == "alice\t-\n"

    changed = appliance.run(
        "user", "set-password", "alice", "--password-stdin", input="battery staple\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert "password set" in changed.stderr
    new = password_hash(appliance, "alice")
    assert new is not None
    assert new != stored


def test_user_add_keeps_its_old_form(tmp_path: Path) -> None:
    appliance = appliance_at(tmp_path)
    added = appliance.run("user", "add", "root", "--admin")
    assert added.returncode == 0, added.stderr
    assert "added root as an administrator" in added.stderr
    assert password_hash(appliance, "root") is None
    assert users(appliance) == "root\tadmin\n"


def test_bad_requests_exit_2_with_a_message_and_change_nothing(tmp_path: Path) -> None:
    appliance = appliance_at(tmp_path)
    assert appliance.run("user", "add", "alice").returncode == 0
    for args, stdin, message in (
        (("disable", "nobody"), None, "no user 'nobody'"),
        (("set-password", "nobody", "--password-stdin"), "long enough pw\n", "no user 'nobody'"),
        (("set-password", "alice", "--password-stdin"), "short\n", "at least 8 characters"),
        (("set-password", "alice", "--password-stdin"), "", "no password line"),
        (("add", "bob", "--password-stdin"), "x\n", "at least 8 characters"),
    ):
        refused = appliance.run("user", *args, input=stdin)
        assert refused.returncode == 2, refused
        assert message in refused.stderr
        assert refused.stdout == ""
    assert password_hash(appliance, "alice") is None
    assert users(appliance) == "alice\t-\n"


async def test_a_hash_with_older_parameters_verifies_and_is_upgraded(tmp_path: Path) -> None:
    weak = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    today = Passwords()
    async with Database.open(tmp_path / "registry.db") as db:
        accounts = Accounts(db, weak)
        user, _ = await accounts.add_user("alice", password="old parameters")
        found = await accounts.password_hash("alice")
        assert found is not None
        old = found[1]
        assert old is not None
        assert "m=1024,t=1,p=1" in old

        checked = await today.check(old, "old parameters")
        assert (checked.ok, checked.needs_rehash) == (True, True)
        assert not (await today.check(old, "wrong password")).ok

        await Accounts(db, today).rehash(user.id, old, "old parameters")
        found = await accounts.password_hash("alice")
        assert found is not None
        new = found[1]
        assert new is not None
        assert new != old
        assert "m=65536,t=3,p=4" in new
        checked = await today.check(new, "old parameters")
        assert (checked.ok, checked.needs_rehash) == (True, False)


async def test_an_unknown_user_is_checked_against_a_dummy_hash(tmp_path: Path) -> None:
    passwords = Passwords()
    assert not (await passwords.check(None, "anything")).ok
    assert not (await passwords.check("not a hash", "anything")).ok
