"""Deciding a recorded call whose arguments are partly unknown (`service.policy.partial`): odd records."""

from __future__ import annotations

import json
from pathlib import Path

from service.policy import load_policy
from service.policy.partial import RecordedArguments, Undecided, decide


def policy(tmp_path: Path, when: str):
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps({"version": "1", "default": "allow", "tools": {"t": {"cases": [{"when": when, "action": "deny"}]}}})
    )
    return load_policy(path)


def decided(tmp_path: Path, when: str, arguments: RecordedArguments) -> str:
    answer = decide(policy(tmp_path, when), "g", "s", "t", arguments, now=1e9)
    return "undecidable" if isinstance(answer, Undecided) else answer.action


def test_a_redacted_value_inside_a_list(tmp_path: Path) -> None:
    recorded = RecordedArguments.parse(json.dumps({"items": [{"name": "a"}, {"name": "b", "token": "[redacted]"}]}))
    assert recorded.unknown == (("items", 1, "token"),)
    assert decided(tmp_path, "args.items[0].name == 'a'", recorded) == "deny"
    assert decided(tmp_path, "args.items[1].token == 'x'", recorded) == "undecidable"
    assert decided(tmp_path, "args.items.exists(i, i.name == 'z')", recorded) == "undecidable"  # iterates the list


def test_arguments_too_deep_to_record_are_denied_by_any_case(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    recorded = RecordedArguments.parse(json.dumps({"x": 1})[:-1] + ', "d": ' + deep + "}")
    assert recorded.too_deep
    assert decided(tmp_path, "grant == 'nobody'", recorded) == "deny"  # fail closed, as it was live
    marker = RecordedArguments.parse(json.dumps({"[arguments nested too deeply to record]": True}))
    assert marker.too_deep and decided(tmp_path, "grant == 'nobody'", marker) == "deny"


def test_arguments_the_audit_did_not_keep(tmp_path: Path) -> None:
    for recorded in (RecordedArguments.parse("{}", unrecordable=True), RecordedArguments.parse("not json")):
        assert recorded.all_unknown
        assert decided(tmp_path, "args.jobId == 'x'", recorded) == "undecidable"
        assert decided(tmp_path, "grant == 'g'", recorded) == "deny"  # reads no argument: decided


def test_a_nul_and_a_redaction_marker_as_a_key(tmp_path: Path) -> None:
    recorded = RecordedArguments.parse(json.dumps({"a\u0000b": "[redacted]", "[redacted]": 1}))
    assert recorded.unknown == (("a\u0000b",),)
    assert decided(tmp_path, "args['[redacted]'] == 1", recorded) == "deny"
