"""The rules of standing approvals that need no database: parsing what an approver asks for, judging it against
the decision's rule, and what a quorum agreed to."""

from __future__ import annotations

import json

import pytest

from service.approvals import StandingNotAllowed, StandingTerms
from service.approvals.standing import agreed_terms, allowed_scopes, check_terms
from service.models import Decision


def decision(scopes: dict | str | None) -> Decision:
    return Decision(
        id="d_1",
        server="jobs",
        tool="cancel",
        grant="agent",
        arguments="{}",
        args_sha256="0" * 64,
        policy_version="v",
        rule="cancel",
        approvers="[]",
        channels="console",
        created_at=0.0,
        expires_at=1.0,
        scopes=scopes if isinstance(scopes, str) else json.dumps(scopes or {}),
    )


@pytest.mark.parametrize(
    ("scope", "duration", "seconds"),
    [("tool", "30m", 1800.0), ("same_args", 3600, 3600.0), ("tool", "1800", 1800.0), ("tool", "90.5", 90.5)],
)
def test_terms_parse(scope, duration, seconds):
    assert StandingTerms.parse(scope, duration) == StandingTerms(scope, seconds)


@pytest.mark.parametrize(
    ("scope", "duration", "message"),
    [
        ("forever", "1m", "unknown scope 'forever'"),
        ("tool", None, "needs a duration"),
        ("tool", "0s", "more than 0 seconds"),
        ("tool", "-5", "invalid duration"),
        ("tool", "8d", "at most 7d"),
        ("tool", float("inf"), "more than 0 seconds"),
        ("tool", float("nan"), "more than 0 seconds"),
        ("tool", "1" * 400, "invalid duration"),
        ("tool\x00", "1m", "unknown scope"),
        ("", "1m", "unknown scope"),
    ],
)
def test_malformed_terms_are_refused(scope, duration, message):
    with pytest.raises(StandingNotAllowed, match=message) as info:
        StandingTerms.parse(scope, duration)
    assert info.value.status_code == 422


def test_terms_are_judged_against_the_decisions_rule():
    allowed = decision({"same_args": 3600.0, "tool": 1800.0})
    check_terms(allowed, None)  # approve once: always
    check_terms(allowed, StandingTerms("tool", 1800.0))
    with pytest.raises(StandingNotAllowed, match="may last at most 30m"):
        check_terms(allowed, StandingTerms("tool", 1801.0))
    with pytest.raises(StandingNotAllowed, match="does not allow scope 'tool'"):
        check_terms(decision({"same_args": 60.0}), StandingTerms("tool", 60.0))
    with pytest.raises(StandingNotAllowed, match="one-off approvals only"):
        check_terms(decision(None), StandingTerms("tool", 60.0))


def test_a_damaged_scopes_column_allows_nothing():
    assert allowed_scopes(decision("not json")) == {}
    assert allowed_scopes(decision("[1, 2]")) == {}
    with pytest.raises(StandingNotAllowed):
        check_terms(decision("not json"), StandingTerms("tool", 60.0))


def test_a_quorum_agrees_to_the_narrowest_scope_and_the_shortest_time_or_to_nothing():
    tool_30m, args_1h = StandingTerms("tool", 1800.0), StandingTerms("same_args", 3600.0)
    assert agreed_terms([tool_30m]) == tool_30m
    assert agreed_terms([tool_30m, args_1h]) == StandingTerms("same_args", 1800.0)
    assert agreed_terms([tool_30m, StandingTerms("tool", 600.0)]) == StandingTerms("tool", 600.0)
    assert agreed_terms([tool_30m, None]) is None
    assert agreed_terms([None]) is None
    assert agreed_terms([]) is None
