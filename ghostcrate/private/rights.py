"""Who may do what to a private crate or an organisation: one table, one function each.

`RIGHTS` says what each role of an organisation may do and to which of its
crates; `decide` applies it (with a token's limits, `[auth] admin` and crate
owners) to one actor, one action and one crate, and `decide_org` to the
management of an organisation. Both return the rule that made the decision,
which a refusal names. Publish, yank, owners and the organisations' API ask
only these. `docs/identity.md` shows `rights_table()`; a test keeps the two equal.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from ghostcrate.private.errors import Forbidden, Refused
from ghostcrate.private.tokens import Actor

log = logging.getLogger(__name__)


OWNER, ADMIN, MEMBER, CONTRIBUTOR = "owner", "admin", "member", "contributor"
ROLES = (OWNER, ADMIN, MEMBER, CONTRIBUTOR)

#: Actions on crates (also the token scopes of the same names) and on organisations.
PUBLISH_NEW = "publish-new"
PUBLISH_UPDATE = "publish-update"
YANK = "yank"
CHANGE_OWNERS = "change-owners"
MANAGE_MEMBERS = "manage-members"
MANAGE_OWNERS = "manage-owners"
MANAGE_WEBHOOKS = "manage-webhooks"
CRATE_ACTIONS = (PUBLISH_NEW, PUBLISH_UPDATE, YANK, CHANGE_OWNERS)
ORG_ACTIONS = (MANAGE_MEMBERS, MANAGE_OWNERS, MANAGE_WEBHOOKS)

_WHAT = {
    PUBLISH_NEW: "publish a new crate in the namespace",
    PUBLISH_UPDATE: "publish versions",
    YANK: "yank and unyank",
    CHANGE_OWNERS: "change crate owners",
    MANAGE_MEMBERS: "manage members and teams (not owners)",
    MANAGE_OWNERS: "make or remove owners",
    MANAGE_WEBHOOKS: "add, list and remove webhooks and see their deliveries",
}


class Reach(enum.Enum):
    """Which crates of the organisation a right covers."""

    #: Every crate of the organisation: in its namespace, or owned by one of its teams.
    ORG = "yes"
    #: Only crates owned by a team of the organisation that the user is in.
    TEAM = "crates of their teams"


#: role -> action -> the crates it covers; an action missing from a role is not allowed.
RIGHTS: dict[str, dict[str, Reach]] = {
    OWNER: dict.fromkeys((*CRATE_ACTIONS, *ORG_ACTIONS), Reach.ORG),
    ADMIN: dict.fromkeys((*CRATE_ACTIONS, MANAGE_MEMBERS, MANAGE_WEBHOOKS), Reach.ORG),
    MEMBER: {PUBLISH_NEW: Reach.ORG, PUBLISH_UPDATE: Reach.TEAM, YANK: Reach.TEAM},
    CONTRIBUTOR: {PUBLISH_UPDATE: Reach.TEAM},
}

#: The rules a decision names.
RULE_TOKEN = "token-limits"
RULE_TOKEN_ORG = "token-org"
RULE_REGISTRY_ADMIN = "registry-admin"
RULE_OPEN_NAME = "open-name"
RULE_NAMESPACE = "org-namespace"
RULE_CRATE_OWNER = "crate-owner"
RULE_ORG_ROLE = "org-role"
RULE_TEAM_MEMBER = "team-member"


@dataclass(frozen=True, slots=True)
class Standing:
    """What decides an actor's rights on one crate (read from the database by `orgs.standing`)."""

    #: The crate's name as published (as asked, if it does not exist yet).
    crate: str
    exists: bool
    #: Whether the actor is one of the crate's user owners.
    owner: bool = False
    #: The organisation whose namespace holds the name, and the pattern that matched.
    namespace_org: str | None = None
    namespace: str | None = None
    #: Organisations whose teams own the crate.
    team_orgs: frozenset[str] = frozenset()
    #: The actor's role in each organisation they belong to (lowercase name -> role).
    roles: Mapping[str, str] = field(default_factory=dict)
    #: Organisations (lowercase) with a team that owns the crate and that the actor is in.
    in_team: frozenset[str] = frozenset()

    @property
    def orgs(self) -> list[str]:
        """The organisations the crate belongs to, namespace first."""
        found = [] if self.namespace_org is None else [self.namespace_org]
        return found + sorted(org for org in self.team_orgs if org not in found)

    def role(self, org: str) -> str | None:
        return self.roles.get(org.lower())


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: The rule that allowed or refused (one of the `RULE_*`).
    rule: str
    #: What the user is told, or why it was allowed.
    reason: str

    def require(self) -> None:
        """Raise `Refused` (403) naming the rule, unless allowed (then say why, in debug)."""
        if not self.allowed:
            raise Refused(f"{self.reason} (rule: {self.rule})", self.rule)
        log.debug("allowed", extra={"rule": self.rule, "reason": self.reason})


def roles_with(action: str) -> list[str]:
    return [role for role in ROLES if action in RIGHTS[role]]


def _plural(roles: list[str]) -> str:
    """`["owner", "admin", "member"]` as "owners, admins and members"."""
    words = [f"{role}s" for role in roles]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def decide(actor: Actor, action: str, standing: Standing) -> Decision:
    """May `actor` do `action` (one of `CRATE_ACTIONS`) to the crate of `standing`?"""
    limited = _token_limits(actor, action, standing)
    if limited is not None:
        return limited
    if actor.admin:
        return Decision(True, RULE_REGISTRY_ADMIN, "an administrator of the registry")
    if action == PUBLISH_NEW:
        return _decide_new(actor, standing)
    if standing.owner:
        return Decision(True, RULE_CRATE_OWNER, f"an owner of crate {standing.crate}")
    for org in standing.orgs:
        role = standing.role(org)
        reach = RIGHTS[role].get(action) if role is not None else None
        if reach is Reach.ORG or (reach is Reach.TEAM and org.lower() in standing.in_team):
            return Decision(True, RULE_ORG_ROLE, f"{role} of organisation {org}")
    return _not_owner(actor, action, standing)


def _token_limits(actor: Actor, action: str, standing: Standing) -> Decision | None:
    """The refusal of a token's scopes, crate patterns or organisation, if they refuse."""
    try:
        actor.check(action, standing.crate)
    except Forbidden as error:
        return Decision(False, RULE_TOKEN, error.detail)
    if actor.org is not None and actor.org.lower() not in {o.lower() for o in standing.orgs}:
        return Decision(
            False,
            RULE_TOKEN_ORG,
            f"this token is limited to organisation {actor.org}, and crate {standing.crate} "
            "is neither in its namespace nor owned by one of its teams: use another token",
        )
    return None


def _not_owner(actor: Actor, action: str, standing: Standing) -> Decision:
    crate = standing.crate
    detail = (
        f"you ({actor.user}) are not an owner of crate {crate}: an owner or an administrator "
        f"can add you with `cargo owner --add {actor.user} {crate}`"
    )
    if not standing.orgs:
        return Decision(False, RULE_CRATE_OWNER, detail)
    roles = ", ".join(f"{org}: {standing.role(org) or 'not a member'}" for org in standing.orgs)
    return Decision(
        False,
        RULE_ORG_ROLE,
        f"{detail}, or the crate's organisation can give you a role with the `{action}` "
        f"right ({_rights_of(action)}; yours: {roles})",
    )


def _decide_new(actor: Actor, standing: Standing) -> Decision:
    org = standing.namespace_org
    if org is None:
        return Decision(True, RULE_OPEN_NAME, "a name outside every organisation's namespace")
    role = standing.role(org)
    if role is not None and PUBLISH_NEW in RIGHTS[role]:
        return Decision(True, RULE_NAMESPACE, f"{role} of organisation {org}")
    you = f"you ({actor.user}) are its {role}" if role else f"{actor.user} is not a member"
    return Decision(
        False,
        RULE_NAMESPACE,
        f"crate name `{standing.crate}` is in the namespace of organisation {org} "
        f"({standing.namespace}): only its {_plural(roles_with(PUBLISH_NEW))} may publish "
        f"a new crate there, and {you}; an owner or admin of {org} can run "
        f"`ghostcrate org member add {org} {actor.user} --role member`",
    )


def decide_org(actor: Actor, action: str, org: str, role: str | None) -> Decision:
    """May `actor` (whose role in `org` is `role`) do `action` (one of `ORG_ACTIONS`)?"""
    if actor.scopes or actor.crates:
        return Decision(
            False,
            RULE_TOKEN,
            "a token limited with --scope or --crates may not manage organisations: "
            "use a token without them",
        )
    if actor.org is not None and actor.org.lower() != org.lower():
        return Decision(
            False,
            RULE_TOKEN_ORG,
            f"this token is limited to organisation {actor.org}, not {org}: use another token",
        )
    if actor.admin:
        return Decision(True, RULE_REGISTRY_ADMIN, "an administrator of the registry")
    if role is not None and action in RIGHTS[role]:
        return Decision(True, RULE_ORG_ROLE, f"{role} of organisation {org}")
    return Decision(
        False,
        RULE_ORG_ROLE,
        f"you ({actor.user}) may not {_WHAT[action]} of organisation {org}: that is for its "
        f"{_plural(roles_with(action))}, and for the registry's administrators "
        f"(you are {'its ' + role if role else 'not a member'})",
    )


def decide_team_owner(actor: Actor, team: str, role: str | None, *, in_team: bool) -> Decision:
    """May `actor`, who may change a crate's owners, make team `team` (ORG:TEAM) one?

    As on crates.io, only the team's members may; here also its organisation's
    owners and admins (`role` is the actor's role in it), and `[auth] admin`.
    """
    if actor.admin:
        return Decision(True, RULE_REGISTRY_ADMIN, "an administrator of the registry")
    if in_team:
        return Decision(True, RULE_TEAM_MEMBER, f"a member of team {team}")
    if role is not None and MANAGE_MEMBERS in RIGHTS[role]:
        return Decision(True, RULE_ORG_ROLE, f"{role} of the organisation of team {team}")
    return Decision(
        False,
        RULE_TEAM_MEMBER,
        f"you ({actor.user}) are not in team {team}: only its members, and its "
        "organisation's owners and admins, may make it an owner of a crate",
    )


def _rights_of(action: str) -> str:
    parts = []
    for role in roles_with(action):
        reach = RIGHTS[role][action]
        parts.append(role if reach is Reach.ORG else f"{role} of an owning team")
    return ", ".join(parts)


def rights_table() -> str:
    """`RIGHTS` as the Markdown table `docs/identity.md` shows."""
    lines = [
        "| action | " + " | ".join(ROLES) + " |",
        "| --- | " + " | ".join("---" for _ in ROLES) + " |",
    ]
    for action in (*CRATE_ACTIONS, *ORG_ACTIONS):
        cells = [RIGHTS[role][action].value if action in RIGHTS[role] else "no" for role in ROLES]
        lines.append(f"| `{action}`: {_WHAT[action]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
