"""The pure parts of an edit: reading it, its changes, and putting the call's own values back where the approver
left a value as shown (`service.approvals.edits`)."""

from __future__ import annotations

import pytest

from service.approvals import EditRefused
from service.approvals.edits import apply_edit, changes, describe_changes, landing_problem, read_edit
from service.policy import Verdict, redact_arguments


def test_values_left_as_shown_are_the_calls_own_at_any_depth() -> None:
    original = {"auth": {"token": "s3cret", "user": "ann"}, "items": [{"password": "p"}, 2], "n": float("nan")}
    shown = redact_arguments(original)
    assert shown == {"auth": {"token": "[redacted]", "user": "ann"}, "items": [{"password": "[redacted]"}, 2],
                     "n": "[number: NaN]"}  # fmt: skip
    edited = {**shown, "auth": {"token": "[redacted]", "user": "bob"}, "extra": True}
    run = apply_edit(edited, original, shown)
    assert run["auth"] == {"token": "s3cret", "user": "bob"}
    assert run["items"] == [{"password": "p"}, 2] and run["extra"] is True
    assert run["n"] != run["n"], "NaN shown as a marker and left alone is the call's own NaN"


def test_changes_name_each_path_added_removed_or_changed_with_values_as_shown() -> None:
    before = {"jobId": "prod-1", "opts": {"force": True, "token": "[redacted]"}, "gone": 1}
    after = {"jobId": "prod-2", "opts": {"force": True, "token": "new-secret"}, "note": "x"}
    found = changes(before, after, redact_arguments(after))
    assert found == [
        {"path": "jobId", "from": "prod-1", "to": "prod-2"},
        {"path": "opts.token", "from": "[redacted]", "to": "[redacted]"},
        {"path": "gone", "from": 1},
        {"path": "note", "to": "x"},
    ]
    assert "new-secret" not in str(found)
    assert describe_changes(found) == (
        'jobId: "prod-1" → "prod-2"; opts.token: "[redacted]" → "[redacted]"; gone: removed (was 1); note: added "x"'
    )


def test_a_marker_where_no_value_was_redacted_is_refused_and_the_same_arguments_are_no_edit() -> None:
    shown = {"list": ["a", "[redacted]"], "jobId": "j"}
    assert read_edit({"list": ["a", "[redacted]"], "jobId": "j"}, shown) is None
    assert read_edit({"jobId": "j", "list": ["a", "[redacted]"]}, shown) is None, "key order does not matter"
    assert read_edit({"list": ["a", "[redacted]"], "jobId": 1}, shown) == {"list": ["a", "[redacted]"], "jobId": 1}
    with pytest.raises(EditRefused, match=r"'\[redacted\]' at list\[0\]"):
        read_edit({"list": ["[redacted]", "[redacted]"], "jobId": "j"}, shown)
    with pytest.raises(EditRefused, match=r"must be a JSON object .* not an array"):
        read_edit([1], shown)


def test_landing_allows_allow_and_the_same_rule_only() -> None:
    assert landing_problem(Verdict(action="allow", rule="other"), "x") is None
    assert landing_problem(Verdict(action="require_approval", rule="x"), "x") is None
    assert landing_problem(Verdict(action="require_approval", rule="x.cases[0]"), "x") is not None
    assert "denies it (rule x: no)" in (landing_problem(Verdict(action="deny", rule="x", reason="no"), "x") or "")
