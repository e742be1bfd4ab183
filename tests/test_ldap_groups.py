"""`[auth.ldap] groups`: which memberships a user's directory groups give."""

from __future__ import annotations

from ghostcrate.private.ldap_groups import wanted

MAPPING = {
    "developers": ["acme:member"],
    "CN=Leads, OU=Groups, DC=corp": ["acme:owner", "tools:contributor"],
    "platform": ["acme:Platform"],
    "writers": ["docs:writers"],
}


def test_groups_match_by_cn_or_by_dn_in_any_case_and_spacing() -> None:
    found = wanted(
        MAPPING,
        ["cn=Developers,ou=groups,dc=corp", "cn=leads,ou=groups,dc=corp", "cn=other,dc=corp"],
    )
    assert found.roles == {"acme": "owner", "tools": "contributor"}
    assert found.teams == set()
    assert found.groups == ["cn=Developers,ou=groups,dc=corp", "cn=leads,ou=groups,dc=corp"]


def test_the_strongest_role_wins_whatever_the_order() -> None:
    groups = ["cn=developers,dc=corp", "cn=leads,ou=groups,dc=corp"]
    assert wanted(MAPPING, groups).roles["acme"] == "owner"
    assert wanted(MAPPING, list(reversed(groups))).roles["acme"] == "owner"


def test_a_team_gives_membership_of_its_organisation() -> None:
    found = wanted(MAPPING, ["cn=platform,dc=corp", "cn=writers,dc=corp"])
    assert found.teams == {("acme", "platform"), ("docs", "writers")}
    assert found.roles == {"acme": "member", "docs": "member"}


def test_no_matching_group_gives_nothing() -> None:
    found = wanted(MAPPING, ["cn=nobody,dc=corp", "ou=developers,dc=corp"])
    assert (found.roles, found.teams, found.groups) == ({}, set(), [])
