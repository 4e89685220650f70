"""A malformed policy file is refused with the file, the place in it and what is wrong."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from service.configfile import WHOLE_FILE, ConfigError
from service.policy import load_policy


def error_for(tmp_path: Path, policy: dict[str, Any] | str | bytes) -> ConfigError:
    path = tmp_path / "policy.json"
    if isinstance(policy, bytes):
        path.write_bytes(policy)
    else:
        path.write_text(policy if isinstance(policy, str) else json.dumps(policy, indent=2))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    error = info.value
    assert error.file == path
    assert str(error) == f"{path}: {error.location}: {error.message}"
    return error


def rule(**fields: Any) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": {"x": fields}}


# -- the file itself --------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path / "nope.json")
    assert (info.value.location, info.value.message) == (WHOLE_FILE, "file not found")
    with pytest.raises(ConfigError, match="is a directory"):
        load_policy(tmp_path)


@pytest.mark.parametrize(
    ("text", "location", "message"),
    [
        ('{"tools": {\n  "x": {,}}}', "line 2, column 9", "invalid JSON: Expecting property name"),
        ('{"default": "deny",\n "tools": {}\n', "line 3, column 1", "invalid JSON: Expecting ',' delimiter"),
        ('{"tools": {}}\n{"x": 1}', "line 2, column 1", "invalid JSON: Extra data"),
        ("{'tools': {}}", "line 1, column 2", "invalid JSON"),
        ("", WHOLE_FILE, "the file is empty"),
        ("[]", WHOLE_FILE, "expected a JSON object"),
    ],
)
def test_bad_json_names_line_and_column(tmp_path, text, location, message):
    error = error_for(tmp_path, text)
    assert error.location == location
    assert message in error.message


def test_not_utf8(tmp_path):
    error = error_for(tmp_path, b'{"tools": {"\xff": {}}}')
    assert error.location == "line 1, column 13"
    assert "not valid UTF-8" in error.message


def test_duplicate_key_is_refused_where_it_is(tmp_path):
    error = error_for(tmp_path, '{"tools": {"x": {"action": "allow"}, "x": {"action": "deny"}}}')
    assert error.location == "tools.x"
    assert "appears more than once" in error.message

    nested = '{"tools": {"x": {"limits": [{"counter": "c", "window": "minute", "max": 1, "max": 2}]}}}'
    assert error_for(tmp_path, nested).location == "tools.x.limits[0].max"


# -- keys and values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "location", "suggestion"),
    [
        ({"defualt": "allow"}, "defualt", "'default'"),
        (rule(limit=[]), "tools.x.limit", "'limits'"),
        (rule(actoin="deny"), "tools.x.actoin", "'action'"),
        (
            rule(limits=[{"counter": "c", "window": 60, "max": 1, "scoep": "grant"}]),
            "tools.x.limits[0].scoep",
            "'scope'",
        ),
        (rule(approval={"chanels": ["slack"]}), "tools.x.approval.chanels", "'channels'"),
        ({"grants": {"bot": {"tool": {}}}}, "grants.bot.tool", "'tools'"),
        (rule(rate_limit={"max": 1, "window": "minute", "scoep": "global"}), "tools.x.rate_limit.scoep", "'scope'"),
    ],
)
def test_unknown_key_with_did_you_mean(tmp_path, policy, location, suggestion):
    error = error_for(tmp_path, policy)
    assert error.location == location
    assert error.message.startswith(f"unknown key '{location.rsplit('.', 1)[-1]}'")
    assert f"did you mean {suggestion}?" in error.message
    assert "allowed here:" in error.message


def test_misspelt_required_key(tmp_path):
    """The missing key is reported first, and the misspelling beside it gets its suggestion."""
    error = error_for(tmp_path, rule(limits=[{"counter": "c", "windw": "minute", "max": 1}]))
    assert error.location == "tools.x.limits[0].window"
    assert error.message.startswith("required key is missing")
    assert "tools.x.limits[0].windw: unknown key 'windw' (did you mean 'window'?)" in error.message


def test_several_errors_are_all_listed(tmp_path):
    error = error_for(tmp_path, rule(actoin="deny", reasn="why"))
    assert error.location == "tools.x.actoin"
    assert "also tools.x.reasn: unknown key 'reasn' (did you mean 'reason'?)" in error.message


@pytest.mark.parametrize("window", ["minuet", "fortnight", 0, -60, 1.5, True, "60", None])
def test_bad_window(tmp_path, window):
    error = error_for(tmp_path, rule(limits=[{"counter": "c", "window": window, "max": 30}]))
    assert error.location == "tools.x.limits[0].window"
    assert "window" in error.message


def test_bad_window_names_the_choices(tmp_path):
    error = error_for(tmp_path, rule(limits=[{"counter": "c", "window": "minuet", "max": 30}]))
    assert "invalid window 'minuet'" in error.message
    assert "second, minute, hour, day or a whole number of seconds" in error.message


@pytest.mark.parametrize(
    ("policy", "location", "message"),
    [
        (rule(action="alow"), "tools.x.action", "'allow', 'deny' or 'require_approval' (got \"alow\")"),
        (rule(limits=[{"counter": "c", "window": "minute"}]), "tools.x.limits[0].max", "required key is missing"),
        (rule(limits=[{"counter": "c", "window": "minute", "max": "3"}]), "tools.x.limits[0].max", "integer"),
        (rule(limits=[{"counter": "c", "window": "minute", "max": -1}]), "tools.x.limits[0].max", "greater than"),
        (rule(limits=[{"counter": "", "window": "minute", "max": 1}]), "tools.x.limits[0].counter", "at least 1"),
        (rule(limits=[{"counter": "c", "window": "minute", "max": 1, "scope": "user"}]), "tools.x.limits[0].scope",
         "'grant' or 'global'"),
        (rule(rate_limit="lots"), "tools.x.rate_limit", "invalid rate_limit 'lots'"),
        (rule(rate_limit={"max": 1, "window": "eon"}), "tools.x.rate_limit.window", "invalid window 'eon'"),
        (rule(hide="yes"), "tools.x.hide", "boolean"),
        (rule(redact=["a..b"]), "tools.x.redact[0]", "invalid argument path 'a..b'"),
        (rule(require=[{"arg": "path"}]), "tools.x.require", "argument conditions are not supported"),
        (rule(deny_if=[{"arg": "path"}]), "tools.x.deny_if", "argument conditions are not supported"),
        ({"version": "2"}, "version", "'1'"),
        ({"default": "maybe"}, "default", "'allow', 'deny' or 'require_approval'"),
        ({"list_tools": "some"}, "list_tools", "'callable' or 'all'"),
        ({"tools": []}, "tools", "dictionary"),
        ({"grants": {"bot": {"default": "maybe"}}}, "grants.bot.default", "'allow', 'deny' or 'require_approval'"),
        ({"grants": {"bot": {"tools": {"x": {"limits": [{"counter": "c", "window": "eon", "max": 1}]}}}}},
         "grants.bot.tools.x.limits[0].window", "invalid window 'eon'"),
    ],
)  # fmt: skip
def test_bad_values(tmp_path, policy, location, message):
    error = error_for(tmp_path, policy)
    assert error.location == location
    assert message in error.message


# -- rule keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "location", "message"),
    [
        ("", 'tools[""]', "must not be empty"),
        ("x[", 'tools["x["]', "unclosed '['"),
        ("a b/x", 'tools["a b/x"]', "server names use only"),
        ("/x", "tools./x", "empty server part"),
        ("x/", "tools.x/", "empty tool part"),
        (" x", 'tools[" x"]', "leading or trailing spaces"),
        ("s/[z-a]", 'tools["s/[z-a]"]', "reversed"),
    ],
)
def test_bad_rule_keys(tmp_path, key, location, message):
    error = error_for(tmp_path, {"tools": {key: {}}})
    assert error.location == location
    assert message in error.message


def test_a_key_with_dots_is_located_unambiguously(tmp_path):
    error = error_for(tmp_path, {"tools": {"x.y": {"action": "nope"}}})
    assert error.location == 'tools["x.y"].action'


def test_ambiguous_tie(tmp_path):
    error = error_for(tmp_path, {"tools": {"get-*": {}, "*-job": {"action": "deny"}}})
    assert error.location == "tools.*-job"
    assert "ambiguous rules 'get-*' and '*-job'" in error.message

    in_grant = error_for(tmp_path, {"grants": {"bot": {"tools": {"jobs/a*": {}, "jobs/*b": {}}}}})
    assert in_grant.location == "grants.bot.tools.jobs/*b"
    assert "'jobs/a*'" in in_grant.message and "'jobs/*b'" in in_grant.message


def test_hide_entry_with_a_bad_pattern(tmp_path):
    error = error_for(tmp_path, {"hide": ["ok", "[z-a]"]})
    assert error.location == "hide[1]"


# -- rules that contradict themselves ---------------------------------------------------------------


def test_approval_on_a_rule_that_does_not_require_approval(tmp_path):
    for action in ("allow", "deny"):
        error = error_for(tmp_path, rule(action=action, approval={"timeout": "5m"}))
        assert error.location == "tools.x.approval"
        assert f"only applies to action 'require_approval', but this rule's action is '{action}'" in error.message
    in_grant = error_for(tmp_path, {"grants": {"bot": {"tools": {"x": {"action": "deny", "approval": {}}}}}})
    assert in_grant.location == "grants.bot.tools.x.approval"


def test_limits_on_a_deny_rule(tmp_path):
    error = error_for(tmp_path, rule(action="deny", limits=[{"counter": "c", "window": "minute", "max": 1}]))
    assert (error.location, error.message) == ("tools.x.limits", "limits have no effect on a deny rule")
    error = error_for(tmp_path, rule(action="deny", rate_limit={"max": 1, "window": "minute"}))
    assert error.location == "tools.x.rate_limit"


def test_counter_counted_twice_for_one_call(tmp_path):
    twice = [{"counter": "c", "window": "minute", "max": 1}, {"counter": "c", "window": "minute", "max": 2}]
    error = error_for(tmp_path, rule(limits=twice))
    assert error.location == "tools.x"
    assert "counter 'c' would be counted twice" in error.message

    also_shorthand = rule(
        rate_limit={"max": 1, "window": "minute"}, limits=[{"counter": "x_rate", "window": 60, "max": 2}]
    )
    assert "counter 'x_rate' would be counted twice" in error_for(tmp_path, also_shorthand).message


def test_rate_limit_shorthand_on_a_key_too_long_for_a_counter_name(tmp_path):
    key = "t" * 196
    error = error_for(tmp_path, {"tools": {key: {"rate_limit": {"max": 1, "window": 60}}}})
    assert error.location == f"tools.{key}.rate_limit"
    assert "at most 200 characters" in error.message and "limits" in error.message
    # the same rule with a named counter loads
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"tools": {key: {"limits": [{"counter": "t", "max": 1, "window": 60}]}}}))
    assert load_policy(path).rule_count == 1


def test_counter_with_two_meanings(tmp_path):
    policy = {
        "tools": {
            "a": {"limits": [{"counter": "shared", "window": "minute", "max": 1}]},
            "b": {"limits": [{"counter": "shared", "window": "minute", "max": 1, "scope": "global"}]},
        }
    }
    error = error_for(tmp_path, policy)
    assert error.location == "tools.b.limits[0]"
    assert "scope global here but with window 60s, scope grant at tools.a.limits[0]" in error.message


# -- approvers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "location", "message"),
    [
        (rule(approval={"approvers": ["nobody"]}), "tools.x.approval.approvers[0]", "unknown approver 'nobody'"),
        (rule(approval={"approvers": ["group:nope"]}), "tools.x.approval.approvers[0]", "unknown group 'nope'"),
        (rule(approval={"approvers": ["slack:alice"]}), "tools.x.approval.approvers[0]", "not a Slack user ID"),
        (rule(approval={"approvers": ["email:nope"]}), "tools.x.approval.approvers[0]", "not an email address"),
        (rule(approval={"approvers": ["pager:1"]}), "tools.x.approval.approvers[0]", "unknown approver kind 'pager'"),
        (rule(approval={"quorum": 2}), "tools.x.approval.quorum", "quorum 2 can never be reached"),
        (rule(approval={"quorum": 0}), "tools.x.approval.quorum", "greater than or equal to 1"),
        (rule(approval={"timeout": "5x"}), "tools.x.approval.timeout", "invalid duration '5x'"),
        (rule(approval={"timeout": 0}), "tools.x.approval.timeout", "more than 0 seconds"),
        (rule(approval={"timeout": "5m", "remind_before": "10m"}), "tools.x.approval.remind_before",
         "must be shorter than the timeout"),
        (rule(approval={"channels": ["pager"]}), "tools.x.approval.channels[0]", "'console', 'slack', 'email'"),
        (rule(approval={"channels": []}), "tools.x.approval.channels", "at least 1"),
        (rule(approval={"on_timeout": "retry"}), "tools.x.approval.on_timeout", "'deny' or 'approve'"),
        ({"groups": {"a": ["group:b"], "b": ["group:a"]}}, "groups.a", "cycle: a -> b -> a"),
        ({"groups": {"ops": ["ghost"]}}, "groups.ops[0]", "unknown approver 'ghost'"),
        ({"people": {"bad name": {}}}, 'people["bad name"]', "a person's name may use only"),
        ({"people": {"a": {"slack": "alice"}}}, "people.a.slack", "not a Slack user ID"),
        ({"people": {"a": {"email": "nope"}}}, "people.a.email", "not an email address"),
        ({"people": {"a": {"token_sha256": "abc"}}}, "people.a.token_sha256", "64 lowercase hex"),
    ],
)  # fmt: skip
def test_bad_approvals(tmp_path, policy, location, message):
    error = error_for(tmp_path, policy)
    assert error.location == location
    assert message in error.message


@pytest.mark.parametrize("field", ["timeout", "remind_before", "claim_within", "rejoin_within"])
@pytest.mark.parametrize("value", ["99999999d", "31d", 30 * 86400 + 1, "721h"])
def test_approval_durations_are_bounded(tmp_path, field, value):
    """A duration past 30 days is refused at load (it used to pass, then fail the held call with
    "year out of range" and stop the service from starting)."""
    approval = {"timeout": "30d", field: value} if field != "timeout" else {field: value}
    error = error_for(tmp_path, rule(approval=approval))
    assert error.location == f"tools.x.approval.{field}"
    assert "duration must be at most 30d (2592000 seconds)" in error.message
    assert repr(value) in error.message


@pytest.mark.parametrize("field", ["claim_within", "rejoin_within"])
@pytest.mark.parametrize(("value", "message"), [("5x", "invalid duration '5x'"), (0, "more than 0 seconds")])
def test_claim_and_rejoin_windows_are_validated_like_timeout(tmp_path, field, value, message):
    error = error_for(tmp_path, rule(approval={field: value}))
    assert error.location == f"tools.x.approval.{field}"
    assert message in error.message


def test_thirty_days_is_accepted(tmp_path):
    path = tmp_path / "policy.json"
    approval = {"timeout": "30d", "remind_before": "29d", "claim_within": "720h", "rejoin_within": 2592000}
    path.write_text(json.dumps(rule(approval=approval)))
    spec = load_policy(path).evaluate("g", "s", "x").approval
    assert spec is not None
    assert spec.timeout_seconds == spec.claim_within_seconds == spec.rejoin_within_seconds == 30 * 86400


@pytest.mark.parametrize(
    ("limit", "location", "message"),
    [
        ({"counter": "c", "window": "31d", "max": 1}, "tools.x.limits[0].window", "window must be at most 30d"),
        ({"counter": "c", "window": 10**12, "max": 1}, "tools.x.limits[0].window", "window must be at most 30d"),
        ({"counter": "c", "window": "minute", "max": 100_001}, "tools.x.limits[0].max", "less than or equal to 100000"),
    ],
)
def test_rate_limits_are_bounded(tmp_path, limit, location, message):
    error = error_for(tmp_path, rule(limits=[limit]))
    assert error.location == location
    assert message in error.message
    shorthand = error_for(tmp_path, rule(rate_limit={"max": limit["max"], "window": limit["window"]}))
    assert shorthand.location == location.replace("limits[0]", "rate_limit")


def test_quorum_counts_distinct_people(tmp_path):
    policy = {
        "people": {"alice": {"slack": "U0ALICE"}},
        "tools": {"x": {"approval": {"approvers": ["alice", "slack:U0ALICE"], "quorum": 2}}},
    }
    error = error_for(tmp_path, policy)
    assert error.location == "tools.x.approval.quorum"
    assert "1 distinct approver" in error.message


def test_config_error_survives_pickling(tmp_path):
    error = error_for(tmp_path, rule(action="alow"))
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.location, copy.message) == (error.file, error.location, error.message)


def test_policy_check_refuses_an_absurd_timeout_naming_file_place_and_bound(tmp_path):
    """The issue's reproduction: `timeout: 99999999d` passed `policy check`, then broke held calls."""
    from typer.testing import CliRunner

    from service.cli import app

    path = tmp_path / "policy.json"
    path.write_text(json.dumps(rule(action="require_approval", approval={"timeout": "99999999d"})))
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}: tools.x.approval.timeout: duration must be at most 30d (2592000 seconds), got '99999999d'" in (
        result.output
    )


# -- standing approvals (approval.scopes) -----------------------------------------------------------


def scopes(value: Any) -> dict[str, Any]:
    return rule(action="require_approval", approval={"scopes": value})


@pytest.mark.parametrize(
    ("value", "location", "message"),
    [
        ({"forever": "1h"}, "tools.x.approval.scopes", "unknown scope 'forever'; a standing approval's scope is "
         "same_args or tool"),
        ({"tool": "0s"}, "tools.x.approval.scopes.tool", "duration must be more than 0 seconds"),
        ({"tool": -5}, "tools.x.approval.scopes.tool", "duration must be more than 0 seconds"),
        ({"tool": "8d"}, "tools.x.approval.scopes.tool", "a standing approval may last at most 7d"),
        ({"same_args": 1e400}, "tools.x.approval.scopes.same_args", "duration must be more than 0 seconds"),
        ({"tool": "soon"}, "tools.x.approval.scopes.tool", "invalid duration 'soon'"),
        ({"tool": True}, "tools.x.approval.scopes.tool", "expected a duration"),
        ("tool", "tools.x.approval.scopes", "dictionary"),
    ],
)  # fmt: skip
def test_bad_standing_scopes(tmp_path, value, location, message):
    error = error_for(tmp_path, scopes(value))
    assert error.location == location
    assert message in error.message


@pytest.mark.parametrize(
    ("limit", "location", "message"),
    [
        (
            {"counter": "spend", "window": "day", "max": 1000, "amount": "args.amount +"},
            "tools.x.limits[0].amount",
            "invalid CEL expression: at 1:14: Syntax error",
        ),
        (
            {"counter": "spend", "window": "day", "max": 1000, "amount": "arg.amount"},
            "tools.x.limits[0].amount",
            "undeclared reference to 'arg.amount'",
        ),
        (
            {"counter": "spend", "window": "day", "max": 1000, "amount": "args.kind == 'x'"},
            "tools.x.limits[0].amount",
            "an amount must be a number, but this expression is always a bool",
        ),
        (
            {"counter": "spend", "window": "day", "max": 1000, "amount": ""},
            "tools.x.limits[0].amount",
            "at least 1 character",
        ),
        (
            {"counter": "spend", "window": "day", "max": 1e16, "amount": "args.amount"},
            "tools.x.limits[0].max",
            "finite number of at most 1000000000000000",
        ),
        ({"counter": "c", "window": "day", "max": 2.5}, "tools.x.limits[0].max", "needs a whole number for max"),
    ],
)
def test_bad_amount_limits_are_reported_at_their_place(tmp_path, limit, location, message):
    error = error_for(tmp_path, rule(limits=[limit]))
    assert error.location == location
    assert message in error.message


def test_scopes_load_and_are_explained(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(scopes({"same_args": "1h", "tool": 1800})))
    verdict = load_policy(path).evaluate("agent", "jobs", "x", {})
    assert verdict.approval is not None and dict(verdict.approval.scopes) == {"same_args": 3600.0, "tool": 1800.0}
    assert "standing approvals: same_args up to 1h, tool up to 30m" in verdict.approval.describe()
    path.write_text(json.dumps(rule(action="require_approval", approval={})))
    assert load_policy(path).evaluate("agent", "jobs", "x", {}).approval.scopes == {}


def test_a_counter_cannot_both_count_calls_and_add_amounts(tmp_path):
    policy = {
        "tools": {
            "pay": {"limits": [{"counter": "c", "window": "day", "max": 100, "amount": "args.amount"}]},
            "refund": {"limits": [{"counter": "c", "window": "day", "max": 100}]},
        }
    }
    error = error_for(tmp_path, policy)
    assert error.location == "tools.refund.limits[0]"
    assert "counter 'c' counts calls here but adds up an amount at tools.pay.limits[0]" in error.message


def test_an_amount_limit_loads_with_a_large_or_fractional_max_and_says_what_it_adds(tmp_path):
    path = tmp_path / "policy.json"
    limits = [{"counter": "spend", "window": "day", "max": 2_500_000.5, "amount": "args.amount"}]
    path.write_text(json.dumps(rule(limits=limits)))
    [limit] = load_policy(path).evaluate("g", "s", "x").limits
    assert limit.max == 2_500_000.5
    assert limit.describe() == "spend: at most 2.5e+06 of `args.amount` in any 1d, per grant"


def test_an_editable_rule_offers_no_standing_approvals(tmp_path):
    """An edit is for one call; a standing approval covers later calls with their own arguments. A rule
    (or a case) that asks for both is refused at load, naming the place, rather than one silently winning."""
    error = error_for(tmp_path, rule(action="require_approval", editable=True, approval={"scopes": {"tool": "30m"}}))
    assert error.location == "tools.x.approval.scopes"
    assert "`editable` and standing `scopes` do not combine" in error.message
    case = {"when": "true", "action": "require_approval", "editable": True, "approval": {"scopes": {"same_args": "1h"}}}
    error = error_for(tmp_path, rule(action="allow", cases=[case]))
    assert error.location == "tools.x.cases[0].approval.scopes"
