"""A rule's `cases`: the first case whose CEL `when` is true decides a call, otherwise the rule's own
keys do; bad expressions are load errors with their place; a case that cannot be evaluated denies."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.configfile import ConfigError
from service.policy import Policy, explain, load_policy

NOW = dt.datetime(2026, 12, 1, 12, 30, tzinfo=dt.UTC).timestamp()

CANCEL = {
    "version": "1",
    "default": "deny",
    "people": {"olga": {"email": "olga@example.com"}},
    "groups": {"ops": ["olga"]},
    "tools": {
        "cancel-async-job": {
            "action": "allow",
            "cases": [
                {"when": "args.jobId.startsWith('prod-')", "action": "require_approval",
                 "approval": {"approvers": ["group:ops"]}, "reason": "production job"},
                {"when": "args.jobId == 'forbidden'", "action": "deny", "reason": "never this one"},
            ],
        }
    },
}  # fmt: skip


def load(tmp_path: Path, policy: dict[str, Any]) -> Policy:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy, indent=2))
    return load_policy(path)


def load_error(tmp_path: Path, policy: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, policy)
    return caught.value


def rule_with(*cases: dict[str, Any], **rule: Any) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": {"x": {**rule, "cases": list(cases)}}}


# -- deciding -----------------------------------------------------------------------------------


def test_the_issue_example_chooses_by_argument(tmp_path: Path) -> None:
    policy = load(tmp_path, CANCEL)
    prod = policy.evaluate("agent", "jobs", "cancel-async-job", {"jobId": "prod-7"}, now=NOW)
    assert prod.action == "require_approval"
    assert prod.rule == "cancel-async-job.cases[0]"
    assert prod.reason == "production job"
    assert prod.approval is not None and [a.name for a in prod.approval.approvers] == ["olga"]

    dev = policy.evaluate("agent", "jobs", "cancel-async-job", {"jobId": "dev-7"}, now=NOW)
    assert dev.action == "allow"
    assert dev.rule == "cancel-async-job"  # no case is true: the rule's own keys

    denied = policy.evaluate("agent", "jobs", "cancel-async-job", {"jobId": "forbidden"}, now=NOW)
    assert (denied.action, denied.rule, denied.reason) == ("deny", "cancel-async-job.cases[1]", "never this one")


def test_the_readme_example_means_what_the_readme_says(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("### Conditions on arguments (`cases`)", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    policy = load(
        tmp_path,
        {"version": "1", "default": "deny", "groups": {"ops": ["olga"]},
         "people": {"olga": {"email": "olga@example.com"}}, "tools": json.loads(example)},
    )  # fmt: skip
    office = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC).timestamp()
    night = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC).timestamp()

    def action(job: str, grant: str = "agent", now: float = office) -> str:
        return policy.evaluate(grant, "jobs", "cancel-async-job", {"jobId": job}, now=now).action

    assert action("prod-42") == "require_approval"
    assert action("job-payroll") == "deny"
    assert action("job-7") == "allow"
    assert action("job-7", "intern") == "allow"
    assert action("job-7", "intern", night) == "deny"


def test_the_first_true_case_wins(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        rule_with(
            {"when": "args.n > 10", "action": "deny", "reason": "more than ten"},
            {"when": "args.n > 5", "action": "require_approval"},
            action="allow",
        ),
    )
    assert policy.evaluate("g", "s", "x", {"n": 11}, now=NOW).reason == "more than ten"
    assert policy.evaluate("g", "s", "x", {"n": 6}, now=NOW).action == "require_approval"
    assert policy.evaluate("g", "s", "x", {"n": 1}, now=NOW).action == "allow"


def test_a_case_sees_tool_server_grant_and_now(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "*/x": {
                    "action": "deny",
                    "cases": [
                        {
                            "when": "grant == 'ci-bot' && server == 'jobs' && tool == 'x' && now.getHours() < 18",
                            "action": "allow",
                        }
                    ],
                }
            },
        },
    )
    assert policy.evaluate("ci-bot", "jobs", "x", {}, now=NOW).action == "allow"
    assert policy.evaluate("intern", "jobs", "x", {}, now=NOW).action == "deny"
    assert policy.evaluate("ci-bot", "other", "x", {}, now=NOW).action == "deny"
    assert policy.evaluate("ci-bot", "jobs", "x", {}, now=NOW + 6 * 3600).action == "deny"  # 18:30


def test_a_grant_override_can_carry_cases_too(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        {
            "version": "1",
            "default": "deny",
            "tools": {"x": {"action": "allow"}},
            "grants": {
                "intern": {"tools": {"x": {"action": "allow", "cases": [{"when": "args.n > 1", "action": "deny"}]}}}
            },
        },
    )
    denied = policy.evaluate("intern", "s", "x", {"n": 2}, now=NOW)
    assert (denied.action, denied.rule) == ("deny", "grants.intern.tools.x.cases[0]")
    assert policy.evaluate("agent", "s", "x", {"n": 2}, now=NOW).action == "allow"


def test_a_case_has_its_own_limits_and_the_rules_redaction(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        rule_with(
            {"when": "args.size > 100", "action": "allow",
             "limits": [{"counter": "big", "window": "hour", "max": 2}]},
            action="allow", redact=["prompt"], rate_limit={"max": 60, "window": "minute"},
        ),
    )  # fmt: skip
    big = policy.evaluate("g", "s", "x", {"size": 500}, now=NOW)
    assert [limit.counter for limit in big.limits] == ["big"]
    assert big.redact == ("prompt",)
    small = policy.evaluate("g", "s", "x", {"size": 5}, now=NOW)
    assert [limit.counter for limit in small.limits] == ["x_rate"]


# -- failing closed -----------------------------------------------------------------------------


def test_a_case_that_errors_denies_with_a_clear_reason(tmp_path: Path) -> None:
    policy = load(tmp_path, CANCEL)
    verdict = policy.evaluate("agent", "jobs", "cancel-async-job", {"job": "prod-7"}, now=NOW)
    assert verdict.action == "deny"
    assert verdict.rule == "cancel-async-job.cases[0]"
    assert verdict.reason is not None
    assert "args.jobId.startsWith('prod-')" in verdict.reason
    assert 'Key not found in map : "jobId"' in verdict.reason
    assert verdict.reason.endswith("so the call is denied")


def test_an_error_does_not_fall_through_to_a_later_case_or_the_rule(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        rule_with(
            {"when": "args.amount > 1000", "action": "deny"},
            {"when": "true", "action": "allow"},
            action="allow",
        ),
    )
    assert policy.evaluate("g", "s", "x", {"amount": "lots"}, now=NOW).action == "deny"
    assert policy.evaluate("g", "s", "x", {"amount": 5}, now=NOW).action == "allow"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"amount": float("nan")}, "NaN or infinite"),
        ({"amount": 2**70}, "outside CEL's 64-bit range"),
        ({"cmd": "ls\x00rm"}, "NUL character"),
    ],
)
def test_arguments_a_condition_cannot_hold_deny_the_call(tmp_path: Path, args: dict[str, Any], problem: str) -> None:
    # NaN > 1000 is false: evaluating anyway would skip the deny case and allow the call.
    policy = load(tmp_path, rule_with({"when": "has(args.amount) && args.amount > 1000", "action": "deny"}))
    verdict = policy.evaluate("g", "s", "x", args, now=NOW)
    assert verdict.action == "deny"
    assert verdict.rule == "x"
    assert verdict.reason is not None and problem in verdict.reason


# -- the cache ----------------------------------------------------------------------------------


def test_the_verdict_cache_never_answers_for_a_rule_with_cases(tmp_path: Path) -> None:
    policy = load(tmp_path, CANCEL)
    answers = [
        policy.evaluate("agent", "jobs", "cancel-async-job", {"jobId": job}, now=NOW).action
        for job in ("prod-1", "dev-1", "prod-2", "forbidden", "dev-2")
    ]
    assert answers == ["require_approval", "allow", "require_approval", "deny", "allow"]


def test_rules_without_cases_are_still_cached(tmp_path: Path) -> None:
    policy = load(tmp_path, {"version": "1", "default": "deny", "tools": {"y": {"action": "allow"}}})
    first = policy.evaluate("g", "s", "y", {"a": 1}, now=NOW)
    assert policy.evaluate("g", "s", "y", {"a": 2}, now=NOW) is first


def test_without_arguments_a_rule_with_cases_answers_with_its_own_keys(tmp_path: Path) -> None:
    # tools/list and the dashboard ask about the tool, not a call.
    policy = load(tmp_path, CANCEL)
    assert policy.evaluate("agent", "jobs", "cancel-async-job").rule == "cancel-async-job"


def test_a_tool_some_of_whose_calls_are_allowed_is_listed(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "deny-unless": {"action": "deny", "cases": [{"when": "args.safe == true", "action": "allow"}]},
                "always-denied": {"action": "deny", "cases": [{"when": "args.x == 1", "action": "deny"}]},
            },
        },
    )
    assert policy.visible("g", "s", "deny-unless") is True
    assert policy.visible("g", "s", "always-denied") is False


# -- load errors --------------------------------------------------------------------------------


def test_a_syntax_error_is_reported_with_its_place_and_the_parsers_message(tmp_path: Path) -> None:
    error = load_error(tmp_path, rule_with({"when": "args.jobId.startsWith('prod-'", "action": "deny"}))
    assert error.location == "tools.x.cases[0].when"
    assert error.message.startswith("invalid CEL expression: at 1:")
    assert "Syntax error" in error.message
    assert "^" in error.message  # the caret under the spot


def test_a_type_error_is_reported_at_load(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        rule_with({"when": "true", "action": "deny"}, {"when": "arg.jobId == 'x'", "action": "deny"}),
    )
    assert error.location == "tools.x.cases[1].when"
    assert "undeclared reference to 'arg" in error.message


def test_a_case_in_a_grant_override_is_located_there(tmp_path: Path) -> None:
    policy = {
        "version": "1",
        "grants": {"ci-bot": {"tools": {"x": {"cases": [{"when": "size(args)", "action": "deny"}]}}}},
    }
    error = load_error(tmp_path, policy)
    assert error.location == "grants.ci-bot.tools.x.cases[0].when"
    assert "must be true or false" in error.message


@pytest.mark.parametrize(
    ("case", "location", "message"),
    [
        ({"when": "true"}, "tools.x.cases[0]", "a case needs an action"),
        ({"when": "true", "action": "allow", "hide": True}, "tools.x.cases[0].hide", "a case cannot hide a tool"),
        ({"when": "true", "action": "deny", "limits": [{"counter": "c", "window": "minute", "max": 1}]},
         "tools.x.cases[0].limits", "limits have no effect on a deny rule"),
        ({"when": "true", "action": "allow", "approval": {"approvers": []}},
         "tools.x.cases[0].approval", "only applies to action 'require_approval'"),
        ({"when": "true", "action": "require_approval", "approval": {"approvers": ["nobody"]}},
         "tools.x.cases[0].approval.approvers[0]", "unknown approver 'nobody'"),
        ({"when": "", "action": "deny"}, "tools.x.cases[0].when", "at least 1 character"),
        ({"when": "true", "action": "deny", "rate_limit": "5/minute"}, "tools.x.cases[0].rate_limit", ""),
    ],
)  # fmt: skip
def test_a_case_is_checked_like_a_rule(tmp_path: Path, case: dict[str, Any], location: str, message: str) -> None:
    error = load_error(tmp_path, rule_with(case))
    assert location in str(error)
    assert message in str(error)


def test_a_case_with_approval_and_no_action_requires_approval(tmp_path: Path) -> None:
    policy = load(tmp_path, rule_with({"when": "true", "approval": {"timeout": "5m"}}, action="allow"))
    verdict = policy.evaluate("g", "s", "x", {}, now=NOW)
    assert verdict.action == "require_approval"
    assert verdict.approval is not None and verdict.approval.timeout_seconds == 300


# -- explain and the command line ---------------------------------------------------------------


def test_explain_names_the_case_that_decided(tmp_path: Path) -> None:
    policy = load(tmp_path, CANCEL)
    text = explain(policy, "agent", "jobs", "cancel-async-job", {"jobId": "forbidden"})
    assert "tools.cancel-async-job.cases[0]: when args.jobId.startsWith('prod-') -> require_approval: false" in text
    assert "tools.cancel-async-job.cases[1]: when args.jobId == 'forbidden' -> deny: true" in text
    assert "decided by case: tools.cancel-async-job.cases[1] (deny)" in text
    assert "action: deny" in text
    assert "reason: never this one" in text

    text = explain(policy, "agent", "jobs", "cancel-async-job", {"jobId": "dev-1"})
    assert "decided by case: none is true, so the rule's own keys decide" in text
    assert "action: allow" in text

    text = explain(policy, "agent", "jobs", "cancel-async-job", {"other": 1})
    assert "could not be evaluated" in text
    assert "tools.cancel-async-job.cases[1]" in text and "not reached" in text
    assert "action: deny" in text


def test_explain_without_arguments_lists_the_cases(tmp_path: Path) -> None:
    text = explain(load(tmp_path, CANCEL), "agent", "jobs", "cancel-async-job")
    assert "tools.cancel-async-job.cases[0]: when args.jobId.startsWith('prod-') -> require_approval" in text
    assert "no --args given" in text
    assert "action: allow" in text


def test_cli_check_and_explain_with_args(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(CANCEL))
    runner = CliRunner()
    assert runner.invoke(app, ["policy", "check", str(good)]).exit_code == 0
    result = runner.invoke(
        app,
        ["policy", "explain", "-f", str(good), "-s", "jobs", "-t", "cancel-async-job", "--args", '{"jobId": "prod-9"}'],
    )
    assert result.exit_code == 0, result.output
    assert "decided by case: tools.cancel-async-job.cases[0] (require_approval)" in result.stdout

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rule_with({"when": "args.(", "action": "deny"})))
    result = runner.invoke(app, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{bad}: tools.x.cases[0].when: invalid CEL expression: at 1:6: Syntax error")
