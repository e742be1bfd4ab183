"""`org_roles`: the organisation roles a provider's groups give, applied at every sign-in.

For each organisation that a provider's `org_roles` names, the membership of a
user who signs in through it follows their groups: the strongest role their
groups give, or no membership when none does (they left the group). Other
organisations are left alone. A sign-in never fails for this: an organisation
that does not exist, or the removal of its last owner, is logged and skipped.
"""

from __future__ import annotations

import logging

from ghostcrate.private.accounts import User
from ghostcrate.private.errors import RegistryError
from ghostcrate.private.registry import Registry

log = logging.getLogger(__name__)

#: When several groups give roles in one organisation, the strongest counts.
_STRENGTH = ("contributor", "member", "admin", "owner")


def org_roles(mapping: dict[str, str], groups: tuple[str, ...]) -> dict[str, str]:
    """Organisation -> role that `groups` give through `org_roles` (the strongest wins)."""
    found: dict[str, str] = {}
    for group in groups:
        target = mapping.get(group)
        if target is None:
            continue
        org, _, role = target.partition(":")
        if org not in found or _STRENGTH.index(role) > _STRENGTH.index(found[org]):
            found[org] = role
    return found


async def apply_org_roles(
    registry: Registry, provider: str, mapping: dict[str, str], user: User, groups: tuple[str, ...]
) -> dict[str, str | None]:
    """Make `user`'s membership of each organisation `mapping` names follow `groups`;
    organisation -> the role given (None: removed), for those that changed."""
    wanted = org_roles(mapping, groups)
    changed: dict[str, str | None] = {}
    for org in sorted({target.partition(":")[0] for target in mapping.values()}):
        role = wanted.get(org)
        try:
            if await registry.orgs.role(org, user.id) == role:
                continue
            if role is None:
                seq = await registry.orgs.remove_members(org, [user.name])
            else:
                seq = await registry.orgs.set_members(org, [(user.name, role)])
        except RegistryError as error:
            log.warning(
                "sso org role not applied",
                extra={"provider": provider, "user": user.name, "org": org, "why": error.detail},
            )
            continue
        await registry.apply(seq)
        changed[org] = role
    return changed
