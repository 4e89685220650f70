"""The compiled policy as users rely on it: what a policy file means for each (grant, server, tool)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.configfile import ConfigError
from service.policy import Limit, Policy, args_digest, canonical_json, explain, load_policy, redact_arguments
from service.policy.engine import MAX_NAME_LENGTH
from service.policy.redaction import REDACTED

POLICYLAYER_EXAMPLE = {
    "version": "1",
    "default": "deny",
    "tools": {
        "cancel-async-job": {
            "limits": [{"counter": "cancel-async-job_rate", "window": "minute", "max": 30, "scope": "grant"}]
        }
    },
}


def write(tmp_path: Path, policy: dict[str, Any] | str, name: str = "policy.json") -> Path:
    path = tmp_path / name
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy, indent=2))
    return path


def load(tmp_path: Path, policy: dict[str, Any] | str, **kwargs: Any) -> Policy:
    return load_policy(write(tmp_path, policy), **kwargs)


def load_error(tmp_path: Path, policy: dict[str, Any] | str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, policy)
    return info.value


# -- PolicyLayer compatibility ----------------------------------------------------------------------


def test_policylayer_example_loads_unchanged(tmp_path):
    policy = load(tmp_path, POLICYLAYER_EXAMPLE)

    verdict = policy.evaluate("agent", "jobs", "cancel-async-job")
    assert verdict.action == "allow"
    assert verdict.rule == "cancel-async-job"
    assert verdict.limits == (Limit(counter="cancel-async-job_rate", window_seconds=60, max=30, scope="grant"),)
    assert verdict.approval is None

    for server, tool in [("jobs", "submit-llm-request-async"), ("jobs", "list-async-jobs"), ("time", "now")]:
        other = policy.evaluate("agent", server, tool)
        assert other.action == "deny"
        assert other.rule == "default"
        assert other.limits == ()
    # the rule applies on any server: a key without '/' names a tool wherever it is
    assert policy.evaluate("someone-else", "other-server", "cancel-async-job").action == "allow"
    assert policy.rule_count == 1


def test_policylayer_top_level_hide_and_all_tools_limits(tmp_path):
    policy = load(
        tmp_path,
        {
            "version": "1",
            "default": "allow",
            "hide": ["delete-*"],
            "all_tools": {"limits": [{"counter": "everything", "window": "hour", "max": 1000, "scope": "global"}]},
            "tools": {"delete-file": {"action": "allow"}, "read-file": {}},
        },
    )
    hidden = policy.evaluate("g", "fs", "delete-file")
    assert hidden.action == "deny" and hidden.hide and hidden.rule == "hide[0]"
    assert not policy.visible("g", "fs", "delete-file")
    everything = Limit("everything", 3600, 1000, "global")
    assert policy.evaluate("g", "fs", "read-file").limits == (everything,)
    assert policy.evaluate("g", "fs", "unlisted").limits == (everything,)  # the allow default too


# -- actions, reasons, hide -------------------------------------------------------------------------


def test_action_reason_and_hide(tmp_path):
    policy = load(
        tmp_path,
        {
            "default": "allow",
            "tools": {
                "rm": {"action": "deny", "reason": "deletes files"},
                "secret-tool": {"action": "deny", "hide": True},
                "shown-but-allowed": {"action": "allow", "hide": True},
                "cancel": {"action": "require_approval", "reason": "someone may wait for the job"},
            },
        },
    )
    rm = policy.evaluate("g", "fs", "rm")
    assert (rm.action, rm.reason, rm.hide) == ("deny", "deletes files", False)
    assert policy.evaluate("g", "fs", "secret-tool").hide
    hidden_allowed = policy.evaluate("g", "fs", "shown-but-allowed")
    assert hidden_allowed.action == "allow" and hidden_allowed.hide
    cancel = policy.evaluate("g", "jobs", "cancel")
    assert cancel.action == "require_approval" and cancel.reason == "someone may wait for the job"
    assert cancel.approval is not None
    assert policy.evaluate("g", "fs", "anything").action == "allow"


def test_default_reason_and_require_approval_default(tmp_path):
    policy = load(tmp_path, {"default": "deny", "default_reason": "not on the list"})
    assert policy.evaluate("g", "s", "t").reason == "not on the list"
    held = load(tmp_path, {"default": "require_approval"}).evaluate("g", "s", "t")
    assert held.action == "require_approval" and held.approval is not None


# -- rule keys and specificity ----------------------------------------------------------------------


def test_tool_server_tool_and_glob_keys(tmp_path):
    policy = load(
        tmp_path,
        {
            "default": "deny",
            "tools": {
                "read": {"action": "allow"},
                "fs/write": {"action": "allow"},
                "time/*": {"action": "allow"},
                "get-*": {"action": "allow"},
                "*/list-?obs": {"action": "allow"},
                "job[0-9]/run": {"action": "allow"},
            },
        },
    )
    allowed = [
        ("any", "read"),
        ("fs", "write"),
        ("time", "get_current_time"),
        ("time", "convert_time"),
        ("jobs", "get-async-job-result"),
        ("jobs", "list-jobs"),
        ("jobs", "list-Xobs"),
        ("job7", "run"),
    ]
    denied = [
        ("other", "write"),  # fs/write names its server
        ("fs", "writer"),  # an exact tool is not a prefix
        ("timer", "x"),  # time/* is server 'time' exactly
        ("jobs", "get"),  # get-* needs the dash
        ("jobs", "list-async-jobs"),  # ? is exactly one character
        ("jobX", "run"),
        ("job10", "run"),
        ("fs", "READ"),  # case-sensitive
    ]
    for server, tool in allowed:
        assert policy.evaluate("g", server, tool).action == "allow", (server, tool)
    for server, tool in denied:
        assert policy.evaluate("g", server, tool).action == "deny", (server, tool)


def test_tool_key_and_star_server_key_are_the_same_pattern(tmp_path):
    error = load_error(tmp_path, {"tools": {"delete-file": {"action": "deny"}, "*/delete-file": {"action": "allow"}}})
    assert "delete-file" in error.message and "*/delete-file" in error.message


def test_most_specific_rule_wins(tmp_path):
    policy = load(
        tmp_path,
        {
            "default": "deny",
            "tools": {
                "*": {"action": "allow", "reason": "*"},
                "delete-*": {"action": "deny", "reason": "delete-*"},
                "ev*/delete-*": {"action": "deny", "reason": "ev*/delete-*"},
                "delete-file": {"action": "require_approval", "reason": "delete-file"},
                "ev*/delete-file": {"action": "require_approval", "reason": "ev*/delete-file"},
                "everything/delete-*": {"action": "deny", "reason": "everything/delete-*"},
                "everything/delete-f*": {"action": "deny", "reason": "everything/delete-f*"},
                "everything/delete-file": {"action": "allow", "reason": "everything/delete-file"},
            },
        },
    )

    def rule(server: str, tool: str) -> str:
        verdict = policy.evaluate("g", server, tool)
        assert verdict.reason == verdict.rule  # each rule's reason is its key
        return verdict.rule

    assert rule("everything", "delete-file") == "everything/delete-file"  # exact server and tool
    assert rule("everything", "delete-folder") == "everything/delete-f*"  # more literal tool characters
    assert rule("everything", "delete-all") == "everything/delete-*"  # exact server beats exact tool
    assert rule("evolve", "delete-file") == "ev*/delete-file"  # exact tool, then longer server literal
    assert rule("other", "delete-file") == "delete-file"  # exact tool beats globbed tool
    assert rule("evolve", "delete-all") == "ev*/delete-*"  # more literal server characters
    assert rule("other", "delete-all") == "delete-*"
    assert rule("other", "read") == "*"
    assert policy.evaluate("g", "other", "read").action == "allow"


def test_specificity_does_not_depend_on_file_order(tmp_path):
    tools = {
        "*": {"action": "deny"},
        "get-*": {"action": "allow"},
        "jobs/get-*": {"action": "require_approval"},
        "jobs/get-async-job-result": {"action": "deny", "reason": "exact"},
    }
    forward = load(tmp_path, {"tools": tools})
    backward = load(tmp_path, {"tools": dict(reversed(list(tools.items())))})
    for server, tool in [("jobs", "get-async-job-result"), ("jobs", "get-x"), ("other", "get-x"), ("a", "b")]:
        assert forward.evaluate("g", server, tool) == backward.evaluate("g", server, tool)
    assert forward.evaluate("g", "jobs", "get-x").action == "require_approval"
    assert forward.evaluate("g", "other", "get-x").action == "allow"


def test_many_glob_rules_pick_the_most_specific_match(tmp_path):
    """Globs bucketed by first character and floating globs ('*x') are compared correctly."""
    policy = load(
        tmp_path,
        {
            "default": "deny",
            "tools": {
                "s/*-job": {"action": "allow", "reason": "s/*-job"},
                "s/cancel-*": {"action": "deny", "reason": "s/cancel-*"},
                "s/cancel-async-*": {"action": "require_approval", "reason": "s/cancel-async-*"},
                "s/*": {"action": "allow", "reason": "s/*"},
                "*/*-async-job": {"action": "deny", "reason": "*/*-async-job"},
                "s?/*": {"action": "allow", "reason": "s?/*"},
            },
        },
    )
    assert policy.evaluate("g", "s", "cancel-async-job").reason == "s/cancel-async-*"
    assert policy.evaluate("g", "s", "cancel-sync-job").reason == "s/cancel-*"  # 7 literals beat 4
    assert policy.evaluate("g", "s", "run-job").reason == "s/*-job"
    assert policy.evaluate("g", "s", "x").reason == "s/*"
    assert policy.evaluate("g", "t", "cancel-async-job").reason == "*/*-async-job"
    assert policy.evaluate("g", "sx", "cancel-async-job").reason == "s?/*"  # more literal server characters
    assert policy.evaluate("g", "t", "x").rule == "default"


def test_ambiguous_tie_is_a_load_error_naming_both(tmp_path):
    error = load_error(tmp_path, {"tools": {"get-*": {"action": "allow"}, "*-job": {"action": "deny"}}})
    assert error.file == tmp_path / "policy.json"
    assert error.location == "tools.*-job"
    assert "ambiguous" in error.message
    assert "'get-*'" in error.message and "'*-job'" in error.message
    assert "get--job" in error.message  # an example call that matches both

    error = load_error(tmp_path, {"tools": {"a*/x": {}, "*a/x": {}}})
    assert "'a*/x'" in error.message and "'*a/x'" in error.message


def test_equal_specificity_without_overlap_is_fine(tmp_path):
    policy = load(
        tmp_path,
        {"tools": {"get-*": {"action": "allow"}, "put-*": {"action": "deny"}, "a/x*": {}, "b/x*": {}}},
    )
    assert policy.evaluate("g", "s", "get-1").action == "allow"
    assert policy.evaluate("g", "s", "put-1").action == "deny"


# -- windows and limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400), (90, 90), (1, 1), ("30s", 30), ("2h", 7200)],
)
def test_window_names_and_numbers(tmp_path, window, seconds):
    policy = load(tmp_path, {"tools": {"t": {"limits": [{"counter": "c", "window": window, "max": 5}]}}})
    assert policy.evaluate("g", "s", "t").limits == (Limit("c", seconds, 5, "grant"),)


def test_rate_limit_shorthand(tmp_path):
    policy = load(
        tmp_path,
        {
            "tools": {
                "submit": {"rate_limit": {"max": 10, "window": "minute"}},
                "jobs/cancel": {"rate_limit": {"max": 2, "window": 3600, "scope": "global"}},
                "status": {"rate_limit": "5/hour"},
            }
        },
    )
    submit = policy.evaluate("g", "jobs", "submit")
    assert submit.action == "allow"
    assert submit.limits == (Limit("submit_rate", 60, 10, "grant"),)
    assert policy.evaluate("g", "jobs", "cancel").limits == (Limit("jobs/cancel_rate", 3600, 2, "global"),)
    assert policy.evaluate("g", "jobs", "status").limits == (Limit("status_rate", 3600, 5, "grant"),)


def test_limits_and_rate_limit_together(tmp_path):
    policy = load(
        tmp_path,
        {
            "tools": {
                "t": {
                    "rate_limit": {"max": 10, "window": "minute"},
                    "limits": [{"counter": "daily", "window": "day", "max": 100, "scope": "global"}],
                }
            }
        },
    )
    assert set(policy.evaluate("g", "s", "t").limits) == {
        Limit("t_rate", 60, 10, "grant"),
        Limit("daily", 86400, 100, "global"),
    }


def test_a_counter_shared_by_rules_must_mean_one_thing(tmp_path):
    shared = {"counter": "writes", "window": "minute", "max": 5}
    policy = load(tmp_path, {"tools": {"a": {"limits": [shared]}, "b": {"limits": [{**shared, "max": 9}]}}})
    assert policy.evaluate("g", "s", "a").limits[0].counter == policy.evaluate("g", "s", "b").limits[0].counter

    error = load_error(tmp_path, {"tools": {"a": {"limits": [shared]}, "b": {"limits": [{**shared, "window": 5}]}}})
    assert error.location == "tools.b.limits[0]"
    assert "writes" in error.message and "tools.a.limits[0]" in error.message


# -- grants -----------------------------------------------------------------------------------------


def test_grant_specific_rules_and_default(tmp_path):
    policy = load(
        tmp_path,
        {
            "default": "deny",
            "tools": {
                "read": {"action": "allow"},
                "jobs/*": {"action": "allow"},
                "delete": {"action": "deny", "reason": "global"},
            },
            "grants": {
                "ci-bot": {
                    "tools": {"delete": {"action": "allow", "rate_limit": {"max": 1, "window": "hour"}}},
                },
                "intern": {
                    "default": "require_approval",
                    "tools": {"jobs/cancel*": {"action": "deny", "reason": "interns cannot cancel"}},
                },
            },
        },
    )
    bot = policy.evaluate("ci-bot", "fs", "delete")
    assert bot.action == "allow" and bot.rule == "grants.ci-bot.tools.delete"
    assert bot.limits == (Limit("grants.ci-bot.tools.delete_rate", 3600, 1, "grant"),)
    assert policy.evaluate("someone", "fs", "delete").reason == "global"

    # a grant's rule beats a more specific global rule
    cancel = policy.evaluate("intern", "jobs", "cancel-async-job")
    assert (cancel.action, cancel.rule) == ("deny", "grants.intern.tools.jobs/cancel*")
    assert policy.evaluate("other", "jobs", "cancel-async-job").action == "allow"

    # global rules still apply to a grant with overrides; its own default replaces the global one
    assert policy.evaluate("intern", "fs", "read").action == "allow"
    unlisted = policy.evaluate("intern", "fs", "unlisted")
    assert (unlisted.action, unlisted.rule) == ("require_approval", "grants.intern.default")
    assert policy.evaluate("ci-bot", "fs", "unlisted").rule == "default"
    assert policy.rule_count == 5


def test_rate_limit_shorthand_in_a_grant_override_has_its_own_counter(tmp_path):
    """The override's shorthand is not the global rule's counter: named after the rule, `<rule>_rate`."""
    policy = load(
        tmp_path,
        {
            "tools": {"delete": {"rate_limit": {"max": 10, "window": "minute", "scope": "global"}}},
            "grants": {
                "ci-bot": {"tools": {"delete": {"rate_limit": {"max": 1, "window": "hour", "scope": "global"}}}},
                "intern": {"tools": {"delete": {"rate_limit": {"max": 2, "window": "minute", "scope": "global"}}}},
            },
        },
    )
    assert policy.evaluate("agent", "fs", "delete").limits == (Limit("delete_rate", 60, 10, "global"),)
    bot = policy.evaluate("ci-bot", "fs", "delete")
    assert bot.limits == (Limit("grants.ci-bot.tools.delete_rate", 3600, 1, "global"),)
    intern = policy.evaluate("intern", "fs", "delete")
    assert intern.limits == (Limit("grants.intern.tools.delete_rate", 60, 2, "global"),)
    assert bot.limits[0].counter == f"{bot.rule}_rate"


def test_top_level_hide_beats_grant_rules(tmp_path):
    policy = load(
        tmp_path,
        {"default": "allow", "hide": ["fs/*"], "grants": {"admin": {"tools": {"fs/read": {"action": "allow"}}}}},
    )
    assert policy.evaluate("admin", "fs", "read").action == "deny"


# -- approvals --------------------------------------------------------------------------------------


def test_require_approval_with_approval_block(tmp_path):
    policy = load(
        tmp_path,
        {
            "people": {
                "alice": {"slack": "U0ALICE", "email": "alice@example.com"},
                "bob": {"email": "bob@example.com"},
                "carol": {},
            },
            "groups": {"ops": ["alice", "bob"], "all": ["group:ops", "carol"]},
            "tools": {
                "cancel": {
                    "action": "require_approval",
                    "approval": {
                        "approvers": ["group:ops", "slack:U0ALICE", "email:dave@example.com"],
                        "channels": ["slack", "email"],
                        "timeout": "30m",
                        "on_timeout": "approve",
                        "quorum": 2,
                        "remind_before": "5m",
                        "claim_within": "1h",
                        "rejoin_within": 90,
                    },
                },
                "implicit": {"approval": {"approvers": ["group:all"]}},
                "plain": {"action": "require_approval"},
            },
        },
    )
    spec = policy.evaluate("g", "jobs", "cancel").approval
    assert spec is not None
    # alice appears via the group and via her Slack ID: she counts once
    assert [a.name for a in spec.approvers] == ["alice", "bob", "email:dave@example.com"]
    assert spec.approvers[0].contacts == {"slack": ("U0ALICE",), "email": ("alice@example.com",)}
    assert spec.channels == ("slack", "email")
    assert spec.timeout_seconds == 1800
    assert spec.on_timeout == "approve"
    assert spec.quorum == 2
    assert spec.remind_before_seconds == 300
    assert (spec.claim_within_seconds, spec.rejoin_within_seconds) == (3600, 90)

    # an approval block without an action means require_approval (fail closed)
    implicit = policy.evaluate("g", "jobs", "implicit")
    assert implicit.action == "require_approval"
    assert [a.name for a in implicit.approval.approvers] == ["alice", "bob", "carol"]

    # without a block: every declared person, quorum 1, 15 minutes, deny on timeout, console
    plain = policy.evaluate("g", "jobs", "plain").approval
    assert [a.name for a in plain.approvers] == ["alice", "bob", "carol"]
    assert (plain.quorum, plain.timeout_seconds, plain.on_timeout, plain.channels) == (1, 900, "deny", ("console",))
    # an approval not collected lapses after 10 minutes; a caller that stopped waiting may rejoin for 2
    for spec in (plain, implicit.approval):
        assert (spec.claim_within_seconds, spec.rejoin_within_seconds) == (600, 120)


def test_require_approval_without_people_means_the_local_operator(tmp_path):
    spec = load(tmp_path, {"tools": {"t": {"action": "require_approval"}}}).evaluate("g", "s", "t").approval
    assert spec.approvers == ()
    assert "local operator" in spec.describe()


# -- tools/list -------------------------------------------------------------------------------------


def test_visible_shows_only_callable_tools_by_default(tmp_path):
    policy = load(
        tmp_path,
        {
            "default": "deny",
            "tools": {
                "allowed": {"action": "allow"},
                "held": {"action": "require_approval"},
                "limited": {"rate_limit": {"max": 0, "window": "minute"}},
                "denied": {"action": "deny"},
                "hidden": {"action": "allow", "hide": True},
            },
            "grants": {"admin": {"tools": {"denied": {"action": "allow"}}}},
        },
    )
    shown = {t for t in ["allowed", "held", "limited", "denied", "hidden", "unlisted"] if policy.visible("g", "s", t)}
    assert shown == {"allowed", "held", "limited"}
    assert policy.visible("admin", "s", "denied")


def test_visible_with_list_tools_all(tmp_path):
    policy = load(
        tmp_path,
        {
            "list_tools": "all",
            "default": "deny",
            "hide": ["secret"],
            "tools": {"denied": {"action": "deny"}, "hidden": {"hide": True}},
        },
    )
    assert policy.visible("g", "s", "denied")
    assert policy.visible("g", "s", "unlisted")
    assert not policy.visible("g", "s", "hidden")
    assert not policy.visible("g", "s", "secret")


# -- names and cache --------------------------------------------------------------------------------


def test_overlong_names_are_denied(tmp_path):
    policy = load(tmp_path, {"default": "allow"})
    assert policy.evaluate("g", "s", "x" * MAX_NAME_LENGTH).action == "allow"
    long = policy.evaluate("g", "s", "x" * (MAX_NAME_LENGTH + 1))
    assert long.action == "deny" and long.rule == "name-length"
    assert policy.evaluate("g", "s" * (MAX_NAME_LENGTH + 1), "t").action == "deny"


def test_cache_gives_the_same_answers(tmp_path):
    spec = {
        "default": "deny",
        "tools": {"get-*": {"action": "allow"}, "jobs/*": {"action": "require_approval"}, "x": {"action": "allow"}},
        "grants": {"a": {"tools": {"x": {"action": "deny"}}}},
    }
    cached = load(tmp_path, spec, cache_size=3)  # tiny cache: cleared and refilled many times
    uncached = load(tmp_path, spec, cache_size=0)
    calls = [(g, s, t) for g in ("a", "b") for s in ("jobs", "fs") for t in ("get-x", "x", "y")] * 3
    for call in calls:
        assert cached.evaluate(*call) == uncached.evaluate(*call), call
    assert len(cached._cache) <= 3
    assert uncached._cache == {}


def test_hostile_tool_names_do_not_backtrack(tmp_path):
    policy = load(tmp_path, {"default": "deny", "tools": {"s/*a*a*a*a*a*b": {"action": "allow"}}})
    import time

    started = time.perf_counter()
    assert policy.evaluate("g", "s", "a" * 250).action == "deny"
    assert policy.evaluate("g", "s", "a" * 249 + "b").action == "allow"
    assert time.perf_counter() - started < 0.5


# -- version ----------------------------------------------------------------------------------------


def test_version_is_a_content_hash(tmp_path):
    first = load(tmp_path, POLICYLAYER_EXAMPLE)
    again = load(tmp_path, POLICYLAYER_EXAMPLE)
    assert first.version == again.version
    assert len(first.version) >= 8 and all(c in "0123456789abcdef" for c in first.version)

    changed = load(tmp_path, {**POLICYLAYER_EXAMPLE, "default": "allow"})
    assert changed.version != first.version
    # the same file in another place has the same version; any byte change makes a new one
    elsewhere = load_policy(write(tmp_path, json.dumps(POLICYLAYER_EXAMPLE, indent=2), "other.json"))
    assert elsewhere.version == first.version
    reformatted = load(tmp_path, json.dumps(POLICYLAYER_EXAMPLE))
    assert reformatted.version != first.version


# -- redaction and hashing --------------------------------------------------------------------------


def test_policy_redact_paths_reach_the_verdict(tmp_path):
    policy = load(
        tmp_path,
        {"redact": ["auth.token", "ssn"], "tools": {"submit": {"redact": ["prompt", "ssn"]}, "other": {}}},
    )
    assert policy.evaluate("g", "s", "submit").redact == ("auth.token", "ssn", "prompt")
    assert policy.evaluate("g", "s", "other").redact == ("auth.token", "ssn")
    assert policy.evaluate("g", "s", "unlisted").redact == ("auth.token", "ssn")


def test_redact_arguments_paths_and_secret_keys():
    args = {
        "prompt": "tell me a secret",
        "model": "gpt",
        "options": {"note": "keep", "inner": {"prompt": "nested is a different path"}},
        "messages": [{"content": "a", "role": "user"}, {"content": "b", "role": "assistant"}, "plain"],
        "apiKey": "sk-123",
        "headers": {"X-Api-Key": "k", "Authorization": "Bearer t", "accept": "json"},
        "max_tokens": 100,
        "password": {"nested": "whole value goes"},
    }
    original = json.loads(json.dumps(args))
    redacted = redact_arguments(args, ["prompt", "messages.content", "options.missing", "model.deeper"])
    assert args == original, "the caller's arguments are never changed"
    assert redacted["prompt"] == REDACTED
    assert redacted["model"] == "gpt"
    assert redacted["options"] == {"note": "keep", "inner": {"prompt": "nested is a different path"}}
    assert redacted["messages"] == [
        {"content": REDACTED, "role": "user"},
        {"content": REDACTED, "role": "assistant"},
        "plain",
    ]
    assert redacted["apiKey"] == REDACTED
    assert redacted["headers"] == {"X-Api-Key": REDACTED, "Authorization": REDACTED, "accept": "json"}
    assert redacted["max_tokens"] == REDACTED  # redacting too much is the safe failure
    assert redacted["password"] == REDACTED
    assert redact_arguments(None) == {}


def test_redact_arguments_nested_path():
    args = {"auth": {"user": "u", "session": "s"}, "x": 1}
    assert redact_arguments(args, ["auth.session"]) == {"auth": {"user": "u", "session": REDACTED}, "x": 1}
    assert redact_arguments(args, ["auth"]) == {"auth": REDACTED, "x": 1}


def test_args_digest_is_stable_across_key_order():
    one = {"b": 1, "a": {"y": [1, 2, {"q": "é", "p": None}], "x": True}}
    two = {"a": {"x": True, "y": [1, 2, {"p": None, "q": "é"}]}, "b": 1}
    assert canonical_json(one) == '{"a":{"x":true,"y":[1,2,{"p":null,"q":"é"}]},"b":1}'

    def digest(args):
        return args_digest(b"k" * 32, args)

    assert digest(one) == digest(two)
    assert len(digest(one)) == 64
    assert digest({"a": [1, 2]}) != digest({"a": [2, 1]})  # list order matters
    assert digest({"a": 1}) != digest({"a": "1"})
    assert digest(None) == digest({})
    # the hash is of the real arguments, not the redacted ones
    assert digest({"token": "a"}) != digest({"token": "b"})


# -- explain ----------------------------------------------------------------------------------------


def test_explain_names_the_deciding_rule_and_the_losers(tmp_path):
    policy = load(
        tmp_path,
        {"tools": {"jobs/cancel-*": {"action": "deny", "reason": "no"}, "cancel-async-job": {"action": "allow"}}},
    )
    text = explain(policy, "agent", "jobs", "cancel-async-job", {"jobId": "1", "token": "t"})
    assert "decided by: rule 'jobs/cancel-*' at tools.jobs/cancel-*" in text
    assert "'jobs/cancel-*' names the server exactly" in text
    assert "action: deny" in text and "reason: no" in text
    assert '"token": "[redacted]"' in text
    assert "arguments digest (binds an approval to this call): HMAC-SHA256" in text
