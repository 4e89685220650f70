"""`explain`: a person-readable account of how the policy decides one call.

Names the rule that decides and why it beats every other key that also matched, the case that
decided (for a rule with `cases`, given arguments), then the action, reason, limits, approval and,
if arguments are given, what the audit will record for them.
Slow on purpose (it looks at every rule); the gateway uses `Policy.evaluate`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from service.policy.conditions import ConditionFailed
from service.policy.engine import Candidate, CompiledRule, Policy
from service.policy.limits import charges
from service.policy.patterns import KeyPattern
from service.policy.redaction import redact_arguments
from service.policy.verdict import Verdict

DIGEST_NOT_SHOWN = (
    "HMAC-SHA256 of the unredacted arguments under the service's key; not computed here, or this page would let "
    "anyone test guesses of a redacted value against the digest the audit shows"
)


def explain(policy: Policy, grant: str | None, server: str, tool: str, args: dict[str, Any] | None = None) -> str:
    """The explanation as text, several lines."""
    grant_name = grant or ""
    now = time.time()
    verdict = policy.evaluate(grant_name, server, tool, args, now=now)
    candidates = list(policy.candidates(grant_name, server, tool))
    winner = candidates[0]
    lines = [
        f"policy: {policy.path} (version {policy.version}, {policy.rule_count} rules)",
        f"call: grant {_grant_text(policy, grant)}, server {server!r}, tool {tool!r}",
        f"decided by: {_name(winner)}",
        f"  why: {_why_winner(winner, candidates)}",
    ]
    losers = candidates[1:]
    if losers:
        lines.append("other matches, and why they lose:")
        lines.extend(f"  - {_name(c)}: {_why_loses(winner, c)}" for c in losers)
    if winner.rule is not None and winner.rule.cases:
        lines += _case_lines(winner.rule, args, grant_name, server, tool, now)
    lines += _verdict_lines(policy, verdict, grant_name, server, tool)
    change = policy.on_tool_change(server)
    lines.append(
        f"if the tool's definition is not as a person accepted it (changed, or new): {change.action} "
        f"({change.label}), or the rule's verdict if that is stricter"
    )
    if args is not None and verdict.action != "deny" and any(limit.amount is not None for limit in verdict.limits):
        added = charges(verdict.limits, args, grant=grant_name, server=server, tool=tool, now=now)
        if isinstance(added, ConditionFailed):
            lines.append(f"amounts: cannot be counted, so the call is denied (fails closed): {added.reason}")
        else:
            lines.append(
                "amounts this call adds: "
                + ", ".join(f"{limit.counter} +{amount:g}" for limit, amount in zip(verdict.limits, added, strict=True))
            )
    if args is not None:
        redacted = redact_arguments(args, verdict.redact)
        lines.append(f"arguments as the audit records them: {json.dumps(redacted, ensure_ascii=False, sort_keys=True)}")
        lines.append(f"arguments digest (binds an approval to this call): {DIGEST_NOT_SHOWN}")
    return "\n".join(lines)


def _case_lines(
    rule: CompiledRule, args: dict[str, Any] | None, grant: str, server: str, tool: str, now: float
) -> list[str]:
    """Each case with its condition and, given arguments, how the call fared, up to the one that decided."""
    lines = ["cases (the first whose `when` is true decides; if none is, the rule's own keys do):"]
    if args is None:
        lines.extend(f"  - {c.location}: when {c.condition.source} -> {c.verdict.action}" for c in rule.cases)
        lines.append("  (no --args given: cases are not evaluated; shown below is the rule's own verdict)")
        return lines
    verdict, outcomes = rule.decide(args, grant, server, tool, now)
    answers = {id(o.case): o.outcome for o in outcomes}
    for case in rule.cases:
        outcome = answers.get(id(case))
        if outcome is None:
            said = "not reached" if outcomes else "not evaluated"
        elif isinstance(outcome, ConditionFailed):
            said = f"could not be evaluated: {outcome.reason}"
        else:
            said = "true" if outcome else "false"
        lines.append(f"  - {case.location}: when {case.condition.source} -> {case.verdict.action}: {said}")
    decided = next((o.case for o in outcomes if o.outcome is True), None)
    if decided is not None:
        lines.append(f"decided by case: {decided.location} ({decided.verdict.action})")
    elif verdict is not rule.verdict:
        lines.append("decided by case: none; a case could not be evaluated, so the call is denied (fails closed)")
    else:
        lines.append("decided by case: none is true, so the rule's own keys decide")
    return lines


def _grant_text(policy: Policy, grant: str | None) -> str:
    if not grant:
        return "(none given: per-grant overrides not applied)"
    if grant in policy.grants:
        return f"{grant!r} (has overrides under grants.{grant})"
    return f"{grant!r} (no overrides: global rules apply)"


def _name(candidate: Candidate) -> str:
    if candidate.rule is None:
        where = "grants." + candidate.layer.split(".", 1)[1] + ".default" if candidate.layer != "default" else "default"
        return f"{where} ({candidate.verdict.action})"
    rule = candidate.rule
    return f"rule {rule.key!r} at {rule.location} ({candidate.verdict.action}; matches {rule.pattern.describe()})"


def _why_winner(winner: Candidate, candidates: list[Candidate]) -> str:
    if winner.layer == "hide":
        return "the tool is in the top-level hide list, which denies (and hides) it whatever the rules say"
    if winner.rule is None:
        return "no rule matches this server and tool, so the default applies"
    if len([c for c in candidates if c.rule is not None]) == 1:
        return "it is the only rule that matches"
    if winner.layer.startswith("grants."):
        return "it is the most specific matching rule among this grant's overrides, which come before global rules"
    return "it is the most specific matching rule"


def _why_loses(winner: Candidate, loser: Candidate) -> str:
    if winner.layer == "hide":
        return "hide entries come first" if loser.layer != "hide" else "an earlier hide entry already matched"
    if loser.rule is None:
        if winner.rule is not None:
            return "a default only applies when no rule matches"
        return "the grant's default replaces the global default"
    if winner.layer != loser.layer:
        return f"rules under {winner.layer} take precedence over the global rules for this grant"
    return _compare(winner.rule.pattern, loser.rule.pattern)  # type: ignore[union-attr]


def _compare(win: KeyPattern, lose: KeyPattern) -> str:
    """Say which step of the specificity order separates the two keys."""
    if win.server_exact != lose.server_exact:
        return f"{win.key!r} names the server exactly, {lose.key!r} {_server_text(lose)}"
    if win.tool_exact != lose.tool_exact:
        return f"{win.key!r} names the tool exactly, {lose.key!r} matches tools by the pattern {lose.tool!r}"
    w, l_ = win.specificity, lose.specificity
    if w[2] != l_[2]:
        return f"{win.key!r} has more literal characters in its server part ({w[2]} vs {l_[2]})"
    return f"{win.key!r} has more literal characters in its tool part ({w[3]} vs {l_[3]})"


def _server_text(pattern: KeyPattern) -> str:
    return "matches any server" if pattern.server == "*" else f"matches servers by the pattern {pattern.server!r}"


def _verdict_lines(policy: Policy, verdict: Verdict, grant: str, server: str, tool: str) -> list[str]:
    lines = [f"action: {verdict.action}"]
    lines.append(f"reason: {verdict.reason}" if verdict.reason else "reason: (none given)")
    if verdict.action != "deny":
        if verdict.limits:
            lines.append("limits (all must have room; a refused call consumes none):")
            lines.extend(f"  - {limit.describe()}" for limit in verdict.limits)
        else:
            lines.append("limits: none")
    if verdict.approval is not None:
        lines.append(f"approval: {verdict.approval.describe()}")
    shown = "shown" if policy.visible(grant, server, tool) else "not shown"
    why = "hidden" if verdict.hide else f"list_tools is {policy.list_tools!r}"
    lines.append(f"tools/list: {shown} ({why})")
    paths = ", ".join(verdict.redact) if verdict.redact else "none"
    lines.append(f"redacted argument paths: {paths} (plus any key that looks like a secret)")
    return lines
