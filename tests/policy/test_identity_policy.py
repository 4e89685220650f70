"""What the policy says about identities: who a provider's claim names (`sso`, `email`), whom a grant acts for,
four-eyes rules, and the groups a rule's approvers name (an empty declared group lives at the identity provider)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.configfile import ConfigError
from service.policy import Policy, load_policy


def compiled(tmp_path: Path, **top: Any) -> Policy:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": "1", "default": "deny", **top}))
    return load_policy(path)


def refusal(tmp_path: Path, **top: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        compiled(tmp_path, **top)
    return info.value


PEOPLE = {
    "alice": {"email": "Alice@Example.com"},
    "bob": {"sso": "00u1bob"},
    "carol": {"email": "carol@example.com", "sso": "carol"},
}


def test_a_claim_value_names_the_person_with_that_sso_else_that_address(tmp_path):
    policy = compiled(tmp_path, people=PEOPLE)
    assert policy.person_for_identity("alice@example.COM") == "alice"  # addresses compare without case
    assert policy.person_for_identity("00u1bob") == "bob"
    assert policy.person_for_identity("carol") == "carol"
    assert policy.person_for_identity("00U1BOB") is None  # a subject is exact
    assert policy.person_for_identity("bob") is None  # never by the person's name alone
    assert policy.person_for_identity("") is None
    assert policy.person_for_identity("nobody@example.com") is None


def test_an_empty_sso_is_refused_at_its_place(tmp_path):
    error = refusal(tmp_path, people={"alice": {"sso": ""}})
    assert error.location == "people.alice.sso"


def test_a_grant_acts_for_a_declared_person_only(tmp_path):
    policy = compiled(tmp_path, people=PEOPLE, grants={"alice-laptop": {"acting_for": "alice"}})
    assert policy.acting_for == {"alice-laptop": "alice"}
    error = refusal(tmp_path, people=PEOPLE, grants={"ci": {"acting_for": "mallory"}})
    assert error.location == "grants.ci.acting_for"
    assert "unknown person 'mallory'" in error.message and "alice, bob, carol" in error.message


def test_four_eyes_and_the_named_groups_reach_the_verdict(tmp_path):
    policy = compiled(
        tmp_path,
        people=PEOPLE,
        groups={"ops": ["alice", "group:sre"], "sre": ["bob"], "unused": ["carol"]},
        tools={
            "cancel": {"approval": {"approvers": ["group:ops", "carol"], "four_eyes": True}},
            "delete": {"approval": {"approvers": ["alice"]}},
        },
    )
    spec = policy.evaluate("g", "jobs", "cancel").approval
    assert spec is not None and spec.four_eyes and spec.groups == ("ops", "sre")
    assert [a.name for a in spec.approvers] == ["alice", "bob", "carol"]
    assert "four eyes" in spec.describe()
    plain = policy.evaluate("g", "jobs", "delete").approval
    assert plain is not None and not plain.four_eyes and plain.groups == ()
    assert policy.group_names == ("ops", "sre", "unused")


def test_a_quorum_beyond_the_declared_members_needs_a_group_that_lives_at_the_provider(tmp_path):
    provider_group = compiled(
        tmp_path,
        people=PEOPLE,
        groups={"ops": []},  # members come from the identity provider's groups claim
        tools={"cancel": {"approval": {"approvers": ["group:ops"], "quorum": 3}}},
    )
    spec = provider_group.evaluate("g", "jobs", "cancel").approval
    assert spec is not None and spec.quorum == 3 and spec.approvers == () and spec.groups == ("ops",)
    error = refusal(
        tmp_path,
        people=PEOPLE,
        groups={"ops": ["alice"]},
        tools={"cancel": {"approval": {"approvers": ["group:ops"], "quorum": 2}}},
    )
    assert error.location == "tools.cancel.approval.quorum"
