"""The pinned form of a tool's definition, its hash, its diff; and how `on_tool_change` combines with a rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.configfile import ConfigError
from service.policy import ToolChangeNote, load_policy, with_tool_change
from service.tooldefs import definition_of, definition_sha256, unified_diff
from service.tooldefs.definitions import bounded_diff, definition_text

CANCEL = {
    "name": "cancel-async-job",
    "title": "Cancel async job",
    "description": "Cancel a pending job.",
    "inputSchema": {"type": "object", "properties": {"jobId": {"type": "string"}}, "required": ["jobId"]},
    "annotations": {"destructiveHint": True, "readOnlyHint": False},
    "_meta": {"ui": "anything"},
    "icons": [{"src": "https://example.com/i.png"}],
    "execution": {"taskSupport": "optional"},
}


def test_the_pinned_fields_are_what_tells_an_agent_what_a_tool_does():
    pinned = definition_of(CANCEL)
    assert set(pinned) == {"name", "title", "description", "inputSchema", "annotations"}
    with_output = definition_of({**CANCEL, "outputSchema": {"type": "object"}})
    assert "outputSchema" in with_output


def test_the_hash_ignores_key_order_and_metadata_but_not_meaning():
    reordered = json.loads(json.dumps(CANCEL, sort_keys=True))
    reordered["inputSchema"] = dict(reversed(list(CANCEL["inputSchema"].items())))
    base = definition_sha256(definition_of(CANCEL))
    assert definition_sha256(definition_of(reordered)) == base
    assert definition_sha256(definition_of({**CANCEL, "_meta": {"other": 1}, "icons": []})) == base
    for changed in (
        {**CANCEL, "description": "Cancel a pending job. "},
        {**CANCEL, "annotations": {"readOnlyHint": False}},  # the destructive hint removed
        {**CANCEL, "inputSchema": {**CANCEL["inputSchema"], "additionalProperties": True}},  # widened
        {**CANCEL, "title": "Cancel"},
        {**CANCEL, "outputSchema": {"type": "object"}},
    ):
        assert definition_sha256(definition_of(changed)) != base


@pytest.mark.parametrize(
    "description",
    ["a NUL \x00 in it", "a lone surrogate \udc80", "é and 中文", "", "x" * 1_000_000],
    ids=["nul", "surrogate", "non-ascii", "empty", "1MB"],
)
def test_odd_descriptions_store_and_hash_the_same_after_a_round_trip(description):
    definition = definition_of({**CANCEL, "description": description})
    stored = definition_text(definition)
    assert "\x00" not in stored and stored.isascii()  # every database takes it
    assert definition_sha256(json.loads(stored)) == definition_sha256(definition)


def test_the_diff_shows_what_changed_line_by_line():
    before = definition_of(CANCEL)
    after = definition_of(
        {
            **CANCEL,
            "description": "Cancel a job and delete its results.",
            "annotations": {"readOnlyHint": False},
            "inputSchema": {
                **CANCEL["inputSchema"],
                "properties": {"jobId": {"type": "string"}, "all": {"type": "boolean"}},
            },
        }
    )
    diff = unified_diff(before, after, label="jobs/cancel", accepted_sha256="a" * 64, current_sha256="b" * 64)
    lines = diff.splitlines()
    assert lines[0] == "--- jobs/cancel (accepted, sha256 aaaaaaaaaaaa)"
    assert lines[1] == "+++ jobs/cancel (current, sha256 bbbbbbbbbbbb)"
    assert '-    "destructiveHint": true,' in lines
    assert '-  "description": "Cancel a pending job.",' in lines
    assert '+  "description": "Cancel a job and delete its results.",' in lines
    assert '+      "all": {' in lines


def test_a_new_tool_diffs_against_nothing():
    diff = unified_diff(None, definition_of(CANCEL), label="jobs/x", accepted_sha256=None, current_sha256="c" * 64)
    assert diff.splitlines()[0] == "--- jobs/x (never accepted)"
    assert all(line.startswith(("+", "-", "@")) for line in diff.splitlines())


def test_a_huge_diff_is_cut_at_a_line_and_says_so():
    after = definition_of({**CANCEL, "inputSchema": {"enum": [f"value-{i}" for i in range(5000)]}})
    diff = unified_diff(
        definition_of(CANCEL), after, label="jobs/x", accepted_sha256="a" * 64, current_sha256="b" * 64, limit=4000
    )
    assert len(diff) <= 4000
    assert diff.endswith("`holdgate tools diff` or the dashboard shows the whole diff)")
    assert "more line(s) cut" in diff.splitlines()[-1]
    assert bounded_diff("short", 10) == "short"


# -- on_tool_change in the policy ------------------------------------------------------------------


def load(tmp_path: Path, policy: dict[str, Any]):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": "1", "default": "allow", **policy}))
    return load_policy(path)


NOTE = ToolChangeNote(kind="changed", accepted_sha256="a" * 64, current_sha256="b" * 64, diff="-x\n+y")


def test_on_tool_change_defaults_to_require_approval_by_every_declared_person(tmp_path):
    policy = load(tmp_path, {"people": {"alice": {"email": "a@example.com"}}})
    rule = policy.on_tool_change("jobs")
    assert (rule.action, rule.label) == ("require_approval", "on_tool_change")
    assert [a.name for a in rule.approval.approvers] == ["alice"]


def test_a_server_setting_overrides_the_top_level_one(tmp_path):
    policy = load(
        tmp_path,
        {
            "on_tool_change": "deny",
            "people": {"alice": {}, "bob": {}},
            "servers": {
                "jobs": {"on_tool_change": "require_approval", "tool_change_approval": {"approvers": ["bob"]}},
                "time": {"tool_change_approval": {"approvers": ["alice"], "timeout": "1h"}},
            },
        },
    )
    jobs, time, other = policy.on_tool_change("jobs"), policy.on_tool_change("time"), policy.on_tool_change("x")
    assert (jobs.action, jobs.label, [a.name for a in jobs.approval.approvers]) == (
        "require_approval",
        "servers.jobs.on_tool_change",
        ["bob"],
    )
    assert (time.action, time.label, time.approval.timeout_seconds) == ("deny", "on_tool_change", 3600)
    assert (other.action, other.label) == ("deny", "on_tool_change")


@pytest.mark.parametrize(
    ("policy", "location", "words"),
    [
        ({"on_tool_change": "hold"}, "on_tool_change", "'require_approval', 'deny' or 'allow'"),
        ({"servers": {"jobs": {"on_tool_change": "block"}}}, "servers.jobs.on_tool_change", "'deny'"),
        ({"servers": {"jobs": {"on_change": "deny"}}}, "servers.jobs.on_change", "did you mean 'on_tool_change'"),
        ({"servers": {"no/slash": {"on_tool_change": "deny"}}}, "servers.no/slash", "server name"),
        ({"tool_change_approval": {"approvers": ["nobody"]}}, "tool_change_approval.approvers[0]", "nobody"),
    ],
)
def test_policy_check_refuses_a_bad_setting_naming_its_place(tmp_path, policy, location, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, policy)
    assert info.value.location == location, str(info.value)
    assert words.lower() in info.value.message.lower(), info.value.message


@pytest.mark.parametrize(
    ("rule", "setting", "expected"),
    [
        ({"action": "allow"}, "require_approval", ("require_approval", "on_tool_change")),
        ({"action": "allow"}, "deny", ("deny", "on_tool_change")),
        ({"action": "allow"}, "allow", ("allow", "x")),
        ({"action": "deny", "reason": "no"}, "require_approval", ("deny", "x")),
        ({"action": "deny", "reason": "no"}, "allow", ("deny", "x")),
        ({"action": "require_approval"}, "require_approval", ("require_approval", "x")),
        ({"action": "require_approval"}, "deny", ("deny", "on_tool_change")),
        ({"action": "require_approval"}, "allow", ("require_approval", "x")),
    ],
)
def test_the_stricter_of_the_rule_and_on_tool_change_decides(tmp_path, rule, setting, expected):
    policy = load(tmp_path, {"on_tool_change": setting, "tools": {"x": rule}})
    verdict = policy.evaluate("agent", "jobs", "x", {})
    combined = with_tool_change(verdict, policy.on_tool_change("jobs"), NOTE, "jobs", "x")
    assert (combined.action, combined.rule) == expected
    if combined.action == "require_approval":
        assert combined.tool_change is NOTE, "the approvers are told of the change"
    if expected[1] == "on_tool_change" and combined.action == "deny":
        assert "holdgate tools accept jobs x" in (combined.reason or "")
    if rule["action"] == "deny":
        assert combined.reason == "no"


def test_a_rule_with_limits_keeps_counting_them_when_held(tmp_path):
    policy = load(tmp_path, {"tools": {"x": {"rate_limit": {"max": 3, "window": "minute"}}}})
    verdict = policy.evaluate("agent", "jobs", "x", {})
    held = with_tool_change(verdict, policy.on_tool_change("jobs"), NOTE, "jobs", "x")
    assert held.action == "require_approval" and held.limits == verdict.limits


def test_explain_says_what_a_changed_definition_would_get(tmp_path):
    from service.policy import explain

    policy = load(tmp_path, {"servers": {"jobs": {"on_tool_change": "deny"}}})
    text = explain(policy, None, "jobs", "x")
    assert "changed, or new): deny (servers.jobs.on_tool_change)" in text
    assert "new): require_approval (on_tool_change)" in explain(policy, None, "time", "x")
