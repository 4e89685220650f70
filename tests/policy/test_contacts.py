"""A person's contacts by channel: the file's `slack`/`email` keys, the generic `contacts`, and raw
`<channel>:<id>` approvers checked by the channel's own contact check (registered by its plug-in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.approvals.channels import load_plugins
from service.configfile import ConfigError
from service.policy import contacts, load_policy


def load(tmp_path: Path, policy: dict[str, Any]):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return load_policy(path)


def approval_rule(approvers: list[str], **people: Any) -> dict[str, Any]:
    return {
        "version": "1",
        "default": "deny",
        "people": people,
        "tools": {"x": {"action": "require_approval", "approval": {"approvers": approvers}}},
    }


def approvers_of(policy) -> tuple:
    return policy.evaluate("agent", "srv", "x").approval.approvers


@pytest.fixture
def teams(monkeypatch):
    """A `teams` channel plug-in whose contacts are ids starting with 'T'."""
    monkeypatch.setitem(contacts._CHECKS, "teams", lambda v: None if v.startswith("T") else f"{v!r} is not a Teams id")


def test_the_files_keys_and_generic_contacts_become_contacts_by_channel(tmp_path):
    policy = load(
        tmp_path,
        approval_rule(
            ["alice", "email:BOB@example.com", "slack:U0CAROL"],
            alice={"slack": "U0ALICE", "email": "alice@example.com", "contacts": {"pager": "p-17"}},
            bob={"email": "bob@example.com"},
        ),
    )
    alice, bob, carol = approvers_of(policy)
    assert alice.contacts == {"slack": ("U0ALICE",), "email": ("alice@example.com",), "pager": ("p-17",)}
    assert alice.describe() == "alice (slack U0ALICE, email alice@example.com, pager p-17)"
    assert bob.name == "bob", "an address names the declared person whatever its case"
    assert (carol.name, carol.contacts) == ("slack:U0CAROL", {"slack": ("U0CAROL",)})


def test_a_registered_channel_checks_its_contacts_and_raw_approvers(tmp_path, teams):
    policy = load(tmp_path, approval_rule(["teams:T0DAVE", "erin"], erin={"contacts": {"teams": "T0ERIN"}}))
    assert [(a.name, a.contacts) for a in approvers_of(policy)] == [
        ("teams:T0DAVE", {"teams": ("T0DAVE",)}),
        ("erin", {"teams": ("T0ERIN",)}),
    ]
    with pytest.raises(ConfigError) as raw:
        load(tmp_path, approval_rule(["teams:dave"]))
    assert (raw.value.location, raw.value.message) == ("tools.x.approval.approvers[0]", "'dave' is not a Teams id")
    with pytest.raises(ConfigError) as person:
        load(tmp_path, approval_rule(["erin"], erin={"contacts": {"teams": "erin"}}))
    assert (person.value.location, person.value.message) == ("people.erin.contacts.teams", "'erin' is not a Teams id")


def test_an_unregistered_channel_is_no_approver_kind(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, approval_rule(["teams:T0DAVE"]))
    assert info.value.message == (
        "unknown approver kind 'teams' in 'teams:T0DAVE'; use a person's name, group:, slack: or email:"
    )


def test_loading_the_channel_plugins_registers_their_contact_checks():
    load_plugins(["bots.console", "bots.slack", "bots.email"])
    assert contacts.contact_channels() == ["slack", "email"], "the console has no contacts"
    assert contacts.check_contact("slack", "alice") == "'alice' is not a Slack user ID (like U0123ABC)"
    assert contacts.check_contact("email", "a@b.c") is None
