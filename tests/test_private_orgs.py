"""Organisations (`Orgs`) and the rights table (`rights`) against a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from ghostcrate.private.accounts import Accounts
from ghostcrate.private.crates import Crates, NewVersion
from ghostcrate.private.db import Database
from ghostcrate.private.errors import Conflict, NotFound, Refused, RegistryError
from ghostcrate.private.orgs import Orgs, overlap, split_team
from ghostcrate.private.rights import (
    ADMIN,
    CHANGE_OWNERS,
    CONTRIBUTOR,
    CRATE_ACTIONS,
    MANAGE_MEMBERS,
    MANAGE_OWNERS,
    MANAGE_WEBHOOKS,
    MEMBER,
    OWNER,
    PUBLISH_NEW,
    PUBLISH_UPDATE,
    RIGHTS,
    ROLES,
    YANK,
    Reach,
    Standing,
    decide,
    decide_org,
    decide_team_owner,
    rights_table,
)
from ghostcrate.private.tokens import Actor

DOCS = Path(__file__).parent.parent / "docs" / "identity.md"


class Registry:
    """The parts of the registry these tests use, on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = Accounts(db)
        self.crates = Crates(db)
        self.orgs = Orgs(db)

    async def actor(self, name: str) -> Actor:
        user = await self.accounts.user(name)
        assert user is not None
        return Actor(user.id, user.name, user.admin, token_id=0)

    async def changes(self) -> int:
        row = await self.db.one("SELECT count(*) FROM changes WHERE kind = 'accounts'")
        assert row is not None
        return int(row[0])


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    async with Database.open(tmp_path / "registry.db") as db:
        yield Registry(db)


def test_the_docs_show_the_rights_table_as_the_code_has_it() -> None:
    assert rights_table() in DOCS.read_text(), "regenerate docs/identity.md's table"


def test_the_rights_table_is_the_issues() -> None:
    org_wide = {role: {a for a, r in RIGHTS[role].items() if r is Reach.ORG} for role in ROLES}
    team_only = {role: {a for a, r in RIGHTS[role].items() if r is Reach.TEAM} for role in ROLES}
    assert org_wide[OWNER] == {*CRATE_ACTIONS, MANAGE_MEMBERS, MANAGE_OWNERS, MANAGE_WEBHOOKS}
    assert org_wide[ADMIN] == {*CRATE_ACTIONS, MANAGE_MEMBERS, MANAGE_WEBHOOKS}
    assert (org_wide[MEMBER], team_only[MEMBER]) == ({PUBLISH_NEW}, {PUBLISH_UPDATE, YANK})
    assert (org_wide[CONTRIBUTOR], team_only[CONTRIBUTOR]) == (set(), {PUBLISH_UPDATE})


def crate_of_acme(role: str | None, *, in_team: bool) -> Standing:
    """acme-core, in acme's namespace and owned by its team; the actor has `role` in acme."""
    return Standing(
        "acme-core",
        True,
        namespace_org="acme",
        namespace="acme-*",
        team_orgs=frozenset({"acme"}),
        roles={} if role is None else {"acme": role},
        in_team=frozenset({"acme"}) if in_team else frozenset(),
    )


BOB = Actor(2, "bob", False, token_id=1)


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("in_team", [True, False])
@pytest.mark.parametrize("action", [PUBLISH_UPDATE, YANK, CHANGE_OWNERS])
def test_decide_follows_the_table_for_every_role_and_action(
    role: str | None, in_team: bool, action: str
) -> None:
    reach = RIGHTS[role].get(action) if role is not None else None
    expected = reach is Reach.ORG or (reach is Reach.TEAM and in_team)
    decision = decide(BOB, action, crate_of_acme(role, in_team=in_team))
    assert decision.allowed is expected
    assert decision.rule == "org-role"
    if not expected:
        with pytest.raises(Refused, match=r"\(rule: org-role\)") as refused:
            decision.require()
        assert (refused.value.status, refused.value.rule) == (403, "org-role")


@pytest.mark.parametrize("role", [*ROLES, None])
def test_only_roles_with_the_right_publish_a_new_name_in_the_namespace(role: str | None) -> None:
    new = Standing(
        "acme-new", False, namespace_org="acme", namespace="acme-*", roles={"acme": role or ""}
    )
    if role is None:
        new = replace(new, roles={})
    decision = decide(BOB, PUBLISH_NEW, new)
    assert decision.allowed is (role in (OWNER, ADMIN, MEMBER))
    assert decision.rule == "org-namespace"
    if not decision.allowed:
        assert "namespace of organisation acme (acme-*)" in decision.reason


def test_outside_namespaces_todays_rules_hold() -> None:
    assert decide(BOB, PUBLISH_NEW, Standing("free", False)).rule == "open-name"
    assert decide(BOB, YANK, Standing("free", True, owner=True)).rule == "crate-owner"
    refusal = decide(BOB, YANK, Standing("free", True))
    assert (refusal.allowed, refusal.rule) == (False, "crate-owner")
    assert "cargo owner --add bob free" in refusal.reason
    root = replace(BOB, admin=True)
    assert decide(root, YANK, Standing("free", True)).rule == "registry-admin"
    assert decide(root, PUBLISH_NEW, crate_of_acme(None, in_team=False)).allowed


def test_a_tokens_limits_come_before_every_right() -> None:
    scoped = replace(BOB, admin=True, scopes=frozenset({YANK}))
    assert decide(scoped, PUBLISH_UPDATE, Standing("free", True, owner=True)).rule == (
        "token-limits"
    )
    org_token = replace(BOB, admin=True, org="acme")
    refusal = decide(org_token, YANK, Standing("free", True, owner=True))
    assert (refusal.allowed, refusal.rule) == (False, "token-org")
    assert decide(org_token, YANK, crate_of_acme(None, in_team=False)).allowed
    team_only = Standing("lib", True, team_orgs=frozenset({"Acme"}))  # owned by its team
    assert decide(org_token, YANK, team_only).allowed
    assert not decide_org(org_token, MANAGE_MEMBERS, "other", None).allowed
    assert decide_org(replace(BOB, org="acme"), MANAGE_MEMBERS, "ACME", ADMIN).allowed


@pytest.mark.parametrize("role", [*ROLES, None])
def test_managing_an_organisation_follows_the_table(role: str | None) -> None:
    for action in (MANAGE_MEMBERS, MANAGE_OWNERS):
        decision = decide_org(BOB, action, "acme", role)
        assert decision.allowed is (role is not None and action in RIGHTS[role])
        assert decision.rule == "org-role"
    assert decide_org(replace(BOB, admin=True), MANAGE_OWNERS, "acme", None).allowed
    scoped = replace(BOB, admin=True, crates=("acme-*",))
    assert decide_org(scoped, MANAGE_MEMBERS, "acme", OWNER).rule == "token-limits"


def test_a_team_is_made_an_owner_by_its_members_and_its_orgs_owners_and_admins() -> None:
    for role, in_team, rule in [
        (None, True, "team-member"),
        (CONTRIBUTOR, True, "team-member"),
        (ADMIN, False, "org-role"),
        (OWNER, False, "org-role"),
    ]:
        decision = decide_team_owner(BOB, "acme:platform", role, in_team=in_team)
        assert (decision.allowed, decision.rule) == (True, rule)
    for role in (None, MEMBER, CONTRIBUTOR):
        decision = decide_team_owner(BOB, "acme:platform", role, in_team=False)
        assert (decision.allowed, decision.rule) == (False, "team-member")
    root = replace(BOB, admin=True)
    assert decide_team_owner(root, "acme:platform", None, in_team=False).allowed


def test_patterns_overlap_and_team_logins_split() -> None:
    assert overlap("acme-*", "acme-x*")
    assert overlap("acme_*", "ACME-core")
    assert not overlap("acme-*", "acmex*")
    assert not overlap("acme-core", "acme-tools")
    assert split_team("acme:platform") == ("acme", "platform")
    assert split_team("github:acme:platform") == ("acme", "platform")
    assert split_team("acme") is None
    assert split_team("acme:") is None


async def users(registry: Registry, *names: str) -> None:
    for name in names:
        await registry.accounts.add_user(name)


async def test_organisations_members_and_teams_are_recorded(registry: Registry) -> None:
    await users(registry, "alice", "bob", "carol", "eve")
    orgs = registry.orgs
    before = await registry.changes()
    await orgs.add_org("acme", ("acme-*",), owner="alice")
    with pytest.raises(Conflict, match="already exists"):
        await orgs.add_org("ACME")
    with pytest.raises(Conflict, match="overlaps acme-\\* of organisation acme"):
        await orgs.add_org("other", ("acme-tools",))
    with pytest.raises(RegistryError, match="invalid namespace"):
        await orgs.add_org("other", ("*",))
    with pytest.raises(RegistryError, match="invalid organisation name"):
        await orgs.add_org("a:b")
    with pytest.raises(NotFound, match="no user 'zed'"):
        await orgs.add_org("other", owner="zed")
    await orgs.set_members("acme", [("bob", MEMBER), ("carol", CONTRIBUTOR)])
    with pytest.raises(RegistryError, match="unknown role 'boss'"):
        await orgs.set_members("acme", [("bob", "boss")])
    await orgs.add_team("acme", "platform")
    with pytest.raises(Conflict, match="team acme:Platform already exists"):
        await orgs.add_team("acme", "Platform")
    await orgs.set_team_members("acme", "platform", ["bob", "carol"], add=True)
    with pytest.raises(RegistryError, match="eve is not a member of organisation acme"):
        await orgs.set_team_members("acme", "platform", ["eve"], add=True)

    org = await orgs.org("Acme")
    assert org.as_json() == {
        "name": "acme",
        "namespaces": ["acme-*"],
        "members": [
            {"login": "alice", "role": "owner"},
            {"login": "bob", "role": "member"},
            {"login": "carol", "role": "contributor"},
        ],
        "teams": [{"name": "platform", "login": "acme:platform", "members": ["bob", "carol"]}],
    }
    assert await registry.changes() == before + 4  # one per successful write

    # Leaving a member out of the org takes them out of its teams.
    await orgs.remove_members("acme", ["carol"])
    assert (await orgs.org("acme")).teams[0].members == ("bob",)
    with pytest.raises(NotFound, match="carol is not a member"):
        await orgs.remove_members("acme", ["carol"])
    assert await orgs.role("acme", (await registry.actor("bob")).user_id) == MEMBER
    with pytest.raises(NotFound, match="no organisation 'nope'"):
        await orgs.role("nope", 1)


async def test_the_last_owner_cannot_leave_and_nothing_of_the_change_stays(
    registry: Registry,
) -> None:
    await users(registry, "alice", "bob")
    await registry.orgs.add_org("acme", ("acme-*",), owner="alice")
    with pytest.raises(Conflict, match="without an owner"):
        await registry.orgs.set_members("acme", [("bob", OWNER), ("alice", MEMBER), ("bob", ADMIN)])
    with pytest.raises(Conflict, match="without an owner"):
        await registry.orgs.remove_members("acme", ["alice"])
    assert (await registry.orgs.org("acme")).members == (("alice", OWNER),)
    await registry.orgs.set_members("acme", [("bob", OWNER), ("alice", MEMBER)])
    assert (await registry.orgs.org("acme")).members == (("alice", MEMBER), ("bob", OWNER))
    # An organisation made without an owner takes members: only the registry's admins manage it.
    await registry.orgs.add_org("free")
    await registry.orgs.set_members("free", [("bob", MEMBER)])


def version(name: str) -> NewVersion:
    return NewVersion(name, "1.0.0", "0" * 64, 1, {"name": name}, (), None, {})


async def test_standing_reads_namespace_roles_and_owning_teams(registry: Registry) -> None:
    await users(registry, "alice", "bob", "carol")
    await registry.orgs.add_org("acme", ("acme-*",), owner="alice")
    await registry.orgs.set_members("acme", [("bob", MEMBER)])
    await registry.orgs.add_team("acme", "platform")
    await registry.orgs.set_team_members("acme", "platform", ["bob"], add=True)
    alice, bob, carol = [await registry.actor(name) for name in ("alice", "bob", "carol")]
    await registry.crates.add_version(version("acme-core"), alice)
    await registry.crates.add_version(version("lib"), carol)

    new = await registry.crates.standing(bob, "ACME_new")
    assert (new.exists, new.namespace_org, new.namespace, new.role("acme")) == (
        False,
        "acme",
        "acme-*",
        MEMBER,
    )
    core = await registry.crates.standing(bob, "acme_core")
    assert (core.crate, core.exists, core.owner, core.team_orgs) == (
        "acme-core",
        True,
        False,
        frozenset(),
    )
    assert not decide(bob, YANK, core).allowed

    await registry.crates.change_owners("acme-core", ["acme:platform"], alice, add=True)
    core = await registry.crates.standing(bob, "acme-core")
    assert (core.team_orgs, core.in_team) == (frozenset({"acme"}), frozenset({"acme"}))
    assert decide(bob, YANK, core).allowed
    assert [team.login for team in await registry.orgs.team_owners("acme-core")] == [
        "acme:platform"
    ]
    # Only the team's members and its org's owners and admins make it an owner.
    with pytest.raises(Refused, match=r"you \(carol\) are not in team acme:platform"):
        await registry.crates.change_owners("lib", ["acme:platform"], carol, add=True)
    await registry.crates.change_owners("lib", ["alice"], carol, add=True)
    # A team of acme owning a crate outside its namespace makes it acme's crate too.
    await registry.crates.change_owners("lib", ["acme:platform"], alice, add=True)
    lib = await registry.crates.standing(bob, "lib")
    assert (lib.namespace_org, lib.orgs) == (None, ["acme"])
    assert decide(bob, PUBLISH_UPDATE, lib).allowed
    with pytest.raises(NotFound, match="could not find team with login `acme:nope`"):
        await registry.crates.change_owners("lib", ["acme:nope"], carol, add=True)
    with pytest.raises(Refused, match="rule: org-role"):
        await registry.crates.change_owners("lib", ["bob"], bob, add=True)

    # Removing the team takes away what its members had through it.
    await registry.orgs.remove_team("acme", "platform")
    assert not decide(bob, YANK, await registry.crates.standing(bob, "acme-core")).allowed
    assert await registry.orgs.team_owners("lib") == []


async def test_a_token_limited_to_an_organisation_carries_it(registry: Registry) -> None:
    await users(registry, "bob")
    await registry.orgs.add_org("Acme", ("acme-*",))
    token, info = await registry.accounts.create_token("bob", org="acme")
    assert info.org == "Acme"
    assert (await registry.accounts.authenticate(token)).org == "Acme"
    assert [t.org for t in await registry.accounts.tokens("bob")] == ["Acme"]
    with pytest.raises(NotFound, match="no organisation 'nope'"):
        await registry.accounts.create_token("bob", org="nope")
