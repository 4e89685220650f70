"""CEL conditions (`service.policy.conditions`): compiled once with a clear error, evaluated per call,
and every way a call's data or an expression can go wrong ends in `ConditionFailed`, never a raise."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from service.policy.conditions import (
    INT64_MIN,
    MAX_DEPTH,
    UINT64_MAX,
    CallVariables,
    ConditionFailed,
    ConditionSyntaxError,
    call_variables,
    compile_condition,
)

NOW = dt.datetime(2026, 12, 1, 12, 30, tzinfo=dt.UTC).timestamp()  # a Tuesday, 12:30 UTC


def variables(args: Any, *, tool: str = "cancel-async-job", server: str = "jobs", grant: str = "ci-bot", now=NOW):
    return call_variables(args, tool=tool, server=server, grant=grant, now=now)


def check(source: str, args: Any = None, **context: Any) -> bool | ConditionFailed:
    prepared = variables(args, **context)
    assert isinstance(prepared, CallVariables), prepared
    return compile_condition(source).evaluate(prepared)


# -- compiling ----------------------------------------------------------------------------------


def test_a_syntax_error_carries_the_parsers_message_and_position() -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition("args.jobId.startsWith('prod-'")
    message = str(caught.value)
    assert "Syntax error" in message
    assert "at 1:" in message  # line and column
    assert "args.jobId.startsWith('prod-'" in message  # the expression, with a caret under the spot
    assert "^" in message
    assert "INVALID_ARGUMENT" not in message  # the library's status codes are not the user's business


def test_a_misspelt_variable_is_refused_at_compile_time() -> None:
    with pytest.raises(ConditionSyntaxError, match="undeclared reference to 'arg"):
        compile_condition("arg.jobId == 'x'")


def test_a_function_applied_to_the_wrong_type_is_refused_at_compile_time() -> None:
    with pytest.raises(ConditionSyntaxError, match="no matching overload for 'startsWith'"):
        compile_condition("args.jobId.startsWith(1)")


@pytest.mark.parametrize("source", ["size(args.recipients)", "'text'", "now", "1 + 2"])
def test_an_expression_that_is_never_a_bool_is_refused(source: str) -> None:
    with pytest.raises(ConditionSyntaxError, match="must be true or false"):
        compile_condition(source)


@pytest.mark.parametrize("source", ["", "   "])
def test_an_empty_condition_is_refused(source: str) -> None:
    with pytest.raises(ConditionSyntaxError, match="non-empty"):
        compile_condition(source)


def test_a_compiled_condition_is_reused_across_calls() -> None:
    condition = compile_condition("args.jobId.startsWith('prod-')")
    answers = []
    for job in ("prod-1", "dev-1", "prod-2"):
        prepared = variables({"jobId": job})
        assert isinstance(prepared, CallVariables)
        answers.append(condition.evaluate(prepared))
    assert answers == [True, False, True]


# -- what a condition sees ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "args", "expected"),
    [
        ("args.jobId.startsWith('prod-')", {"jobId": "prod-42"}, True),
        ("args.jobId.startsWith('prod-')", {"jobId": "dev-42"}, False),
        ("args.amount > 100 && grant == 'ci-bot'", {"amount": 150}, True),
        ("args.amount > 100 && grant == 'ci-bot'", {"amount": 99}, False),
        ("args.price > 100", {"price": 100.5}, True),  # a JSON double against an int literal
        ("size(args.recipients) > 3", {"recipients": ["a", "b", "c", "d"]}, True),
        ("size(args.recipients) > 3", {"recipients": ["a"]}, False),
        ("args.recipients.exists(r, !r.endsWith('@corp.example'))", {"recipients": ["x@corp.example"]}, False),
        ("args.recipients.all(r, r.endsWith('@corp.example'))", {"recipients": ["x@corp.example"]}, True),
        ("args.options.force == true", {"options": {"force": True}}, True),
        ("args.items[1].id == 7", {"items": [{"id": 1}, {"id": 7}]}, True),
        ("has(args.jobId)", {}, False),
        ("'jobId' in args", {"jobId": "x"}, True),
        ("args.?jobId.orValue('') == ''", {}, True),  # the optional extension
        ("args.email.lowerAscii().endsWith('@corp.example')", {"email": "Ann@CORP.example"}, True),  # strings
        ("args.note == null", {"note": None}, True),
        ("args['dashed-key'] == 1", {"dashed-key": 1}, True),
        ("size(args) == 0", None, True),  # no arguments at all is an empty map
    ],
)
def test_args_reach_the_expression_as_json_values(source: str, args: Any, expected: bool) -> None:
    assert check(source, args) is expected


def test_tool_server_and_grant_are_strings() -> None:
    source = "tool == 'cancel-async-job' && server == 'jobs' && grant.startsWith('ci-')"
    assert check(source, {}) is True
    assert check(source, {}, grant="intern") is False


def test_now_is_the_injected_clock_as_a_timestamp() -> None:
    assert check("now == timestamp('2026-12-01T12:30:00Z')") is True
    assert check("now.getHours() >= 9 && now.getHours() < 18") is True
    assert check("now.getHours() >= 9 && now.getHours() < 18", now=NOW + 8 * 3600) is False
    assert check("now.getDayOfWeek() == 2") is True  # Tuesday
    assert check("now - timestamp(args.since) > duration('1h')", {"since": "2026-12-01T10:00:00Z"}) is True


def test_logic_absorbs_an_error_where_cel_says_so() -> None:
    # CEL's && and || are commutative: an error on one side does not matter if the other decides.
    assert check("false && args.missing == 'x'", {}) is False
    assert check("args.missing == 'x' && false", {}) is False
    assert check("args.missing == 'x' || true", {}) is True
    assert check("!has(args.limit) || args.limit > 10", {}) is True


# -- failing closed at run time -----------------------------------------------------------------


def test_a_missing_key_fails_closed_and_says_which() -> None:
    outcome = check("args.jobId.startsWith('prod-')", {"job": "prod-1"})
    assert isinstance(outcome, ConditionFailed)
    assert "args.jobId.startsWith('prod-')" in outcome.reason
    assert 'Key not found in map : "jobId"' in outcome.reason


def test_a_wrong_type_fails_closed() -> None:
    outcome = check("args.amount > 100", {"amount": "lots"})
    assert isinstance(outcome, ConditionFailed)
    assert "No matching overloads" in outcome.reason


def test_an_error_that_no_logic_absorbs_fails_closed() -> None:
    assert isinstance(check("args.missing == 'x' || false", {}), ConditionFailed)
    assert isinstance(check("args.n + 1 > 0", {"n": 2**63 - 1}), ConditionFailed)  # int overflow


def test_a_result_that_is_not_a_bool_fails_closed() -> None:
    # `args.x` type-checks (it could be a bool), so only the call shows it is not.
    outcome = check("args.flag", {"flag": "yes"})
    assert isinstance(outcome, ConditionFailed)
    assert "gave a string, not true or false" in outcome.reason
    assert check("args.flag", {"flag": True}) is True


def test_a_reason_never_quotes_an_argument_value() -> None:
    # The audit redacts secret arguments; the reason (to the agent and into the audit) must not leak them.
    secret = "sk-live-0123456789abcdef"
    outcome = check("args.table[args.api_key] == 1", {"table": {}, "api_key": secret})
    assert isinstance(outcome, ConditionFailed)
    assert secret not in outcome.reason
    assert "Key not found" in outcome.reason
    outcome = check("args.text.matches(args.pattern)", {"text": "x", "pattern": f"({secret}"})
    assert isinstance(outcome, ConditionFailed)
    assert secret not in outcome.reason


# -- values CEL cannot hold faithfully ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (2**64, "outside CEL's 64-bit range"),
        (INT64_MIN - 1, "outside CEL's 64-bit range"),
        (10**400, "outside CEL's 64-bit range"),
        (float("nan"), "NaN or infinite"),
        (float("inf"), "NaN or infinite"),
        (-math.inf, "NaN or infinite"),
        ("\ud800", "not valid Unicode"),
        ({1: "a"}, "key that is not a string"),
        ((1, 2), "tuple, not a JSON value"),
        ({1, 2}, "set, not a JSON value"),
        (b"bytes", "bytes, not a JSON value"),
        (object(), "object, not a JSON value"),
    ],
)
def test_a_value_cel_cannot_hold_fails_closed_before_evaluation(value: Any, problem: str) -> None:
    outcome = variables({"outer": [{"v": value}]})
    assert isinstance(outcome, ConditionFailed)
    assert problem in outcome.reason
    assert "args.outer[0].v" in outcome.reason  # where, so the operator can find it


def test_the_edges_of_the_integer_range_are_accepted() -> None:
    assert check("args.low < 0 && args.high > 0u", {"low": INT64_MIN, "high": UINT64_MAX}) is True
    assert check("args.big > 100", {"big": 2**63}) is True  # beyond int64: a uint, still comparable


@pytest.mark.parametrize("args", [{"cmd": "ls\x00; rm -rf /"}, {"cmds": ["ls", "x\x00rm"]}, {"k\x00rm": 1}])
def test_a_nul_in_a_string_fails_closed(args: dict[str, Any]) -> None:
    # cel-expr-python cuts strings at a NUL: `args.cmd.contains('rm')` would be false for the first
    # call and let it through a deny case. Refuse to decide instead.
    outcome = variables(args)
    assert isinstance(outcome, ConditionFailed)
    assert "NUL character" in outcome.reason


def test_deep_nesting_fails_closed_instead_of_crashing_the_process() -> None:
    # The C++ runtime crashes (SIGSEGV) converting a list nested ~10,000 deep; the check refuses first.
    deep: Any = "x"
    for _ in range(10_000):
        deep = [deep]
    outcome = variables({"deep": deep})
    assert isinstance(outcome, ConditionFailed)
    assert f"nested more than {MAX_DEPTH} levels deep" in outcome.reason


def test_nesting_up_to_the_limit_is_evaluated() -> None:
    nested: Any = "x"
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert check("size(args.v) == 1", {"v": nested}) is True
    outcome = variables({"v": [nested]})
    assert isinstance(outcome, ConditionFailed)
    assert f"nested more than {MAX_DEPTH} levels deep" in outcome.reason


@pytest.mark.parametrize("args", [[1, 2], "text", 3])
def test_arguments_that_are_not_an_object_fail_closed(args: Any) -> None:
    outcome = variables(args)
    assert isinstance(outcome, ConditionFailed)
    assert "args is not a JSON object" in outcome.reason


@pytest.mark.parametrize("field", ["tool", "server", "grant"])
def test_a_name_that_is_not_valid_unicode_fails_closed(field: str) -> None:
    outcome = variables({}, **{field: "bad\udcff"})
    assert isinstance(outcome, ConditionFailed)
    assert f"{field} is a string that is not valid Unicode" in outcome.reason


def test_evaluation_leaves_the_arguments_untouched() -> None:
    args = {"jobId": "prod-1", "items": [{"id": 1}], "n": 3}
    before = repr(args)
    assert check("args.items.exists(i, i.id == 1) && args.n == 3", args) is True
    assert repr(args) == before


def test_nothing_a_client_can_send_makes_evaluation_raise() -> None:
    """Every condition over every odd value answers True, False or ConditionFailed."""
    odd_values: list[Any] = [
        None, True, 0, -1, 2**63 - 1, 2**63, UINT64_MAX, 1.5, -0.0, 1e308, "", "x" * 100_000, "é", "é\x00",
        [], {}, [None, [1, [2.5]]], {"": {"a": [True]}}, "\ud800", float("nan"), 2**64, {2: 3}, (1,), b"x",
    ]  # fmt: skip
    conditions = [
        compile_condition(source)
        for source in (
            "args.v == args.v",
            "args.v > 0",
            "args.v.startsWith('x')",
            "size(args.v) > 1",
            "args.v.exists(x, x == 1)",
            "has(args.v.a)",
            "int(args.v) == 1",
            "string(args.v) == '1'",
            "args.v",
        )
    ]
    for value in odd_values:
        prepared = variables({"v": value})
        for condition in conditions:
            outcome = condition.evaluate(prepared) if isinstance(prepared, CallVariables) else prepared
            assert outcome is True or outcome is False or isinstance(outcome, ConditionFailed), (value, condition)
