"""What the policy accepts of the client channel: the channel `client`, and the approver `client` (the person at
the calling client may approve their own agent's call) only where it can work; misuse is refused at its place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.configfile import ConfigError
from service.policy import Policy, load_policy

PEOPLE = {"alice": {"email": "alice@example.com"}, "bob": {"email": "bob@example.com"}}


def policy_file(tmp_path: Path, approval: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / "policy.json"
    document = {
        "version": "1",
        "default": "deny",
        "people": PEOPLE,
        "tools": {"cancel": {"action": "require_approval", "approval": approval}},
        **top,
    }
    path.write_text(json.dumps(document))
    return path


def compiled(tmp_path: Path, approval: dict[str, Any], **top: Any) -> Policy:
    return load_policy(policy_file(tmp_path, approval, **top))


def refusal(tmp_path: Path, approval: dict[str, Any], **top: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        compiled(tmp_path, approval, **top)
    return info.value


def test_the_channel_and_the_approver_client_reach_the_verdict(tmp_path):
    policy = compiled(tmp_path, {"approvers": ["alice", "client"], "channels": ["slack", "client"], "quorum": 2})
    spec = policy.evaluate("ci", "jobs", "cancel").approval
    assert spec is not None
    assert spec.channels == ("slack", "client")
    assert [a.name for a in spec.approvers] == ["alice", "client"]  # two distinct approvers: quorum 2 is reachable


def test_the_channel_alone_needs_no_approver_client(tmp_path):
    policy = compiled(tmp_path, {"approvers": ["alice"], "channels": ["client"]})
    spec = policy.evaluate("ci", "jobs", "cancel").approval
    assert spec is not None and [a.name for a in spec.approvers] == ["alice"]


def test_the_approver_client_without_the_channel_is_refused_at_its_place(tmp_path):
    error = refusal(tmp_path, {"approvers": ["alice", "client"], "channels": ["slack"]})
    assert error.location == "tools.cancel.approval.approvers[1]"
    assert "add 'client' to approval.channels" in error.message


def test_four_eyes_with_the_approver_client_is_refused(tmp_path):
    error = refusal(tmp_path, {"approvers": ["client", "alice"], "channels": ["client"], "four_eyes": True})
    assert error.location == "tools.cancel.approval.four_eyes"
    assert "contradict" in error.message


def test_the_approver_client_in_a_group_and_a_person_named_client_are_refused(tmp_path):
    in_group = refusal(
        tmp_path, {"approvers": ["group:ops"], "channels": ["client"]}, groups={"ops": ["alice", "client"]}
    )
    assert in_group.location == "groups.ops[1]" and "not in a group" in in_group.message
    person = refusal(
        tmp_path, {"approvers": ["alice"], "channels": ["console"]}, people={**PEOPLE, "client": {"email": "c@x.io"}}
    )
    assert person.location == "people.client" and "reserved" in person.message


def test_policy_check_names_the_place_and_the_problem(tmp_path):
    path = policy_file(tmp_path, {"approvers": ["client"], "channels": ["console"]})
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"{path}: tools.cancel.approval.approvers[0]: the approver 'client'")
