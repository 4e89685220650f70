"""The release check: an approved call runs only if the policy, as it is when the call is about to run, still lets
it run on that approval.

A call can wait long for its person (minutes, or `claim_within` after the approval for a retry), and the policy
may change meanwhile: reloaded from its file, or a case that reads the clock. The decision was opened under the
rule that held the call; at release the call that would run (the approver's edit applied, `service.approvals.edits`)
is evaluated again with the current policy and the clock:

- allow, or require_approval by the same rule (its label, `<rule>.cases[i]` for a case): it runs. Allow means the
  policy no longer asks, and a person approved it anyway; the same rule's approval is what was given;
- deny: it is not run. The agent gets the new denial and its reason; the decision's outcome is `policy_denied`;
- require_approval by another rule: it is not run on this approval (the new rule may name other approvers or
  another quorum, which this approval did not meet); outcome `policy_changed`. The same call again asks anew,
  under the rule the policy now names.

An edit that raises what the call adds to the limits (an amount limit, `limits[].amount`, or a limit the original
call did not count against) is charged the difference when it runs; an edited call without room is not run, and the
approval goes back for the same call again (`rate_limited`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from service.approvals.edits import apply_edit, landing_problem
from service.approvals.states import POLICY_CHANGED, POLICY_DENIED
from service.models import Decision
from service.policy import Limit, Policy, Verdict
from service.policy.conditions import ConditionFailed
from service.policy.limits import charges

if TYPE_CHECKING:
    from service.audit.service import AuditedCall

RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class ReleaseCheck:
    """What the policy says, at its release, about an approved call: run `arguments`, or why not."""

    arguments: dict[str, Any]
    """The arguments to run: the call's own, or the approver's edit applied to them."""
    verdict: Verdict
    """The current policy's verdict for the call that would run."""
    changes: list[dict[str, Any]] | None = None
    """The approver's edit (redacted changes), or None: the call runs as the agent sent it."""
    refusal: str | None = None
    """Why it does not run now (None: it runs)."""
    outcome: str | None = None
    """`policy_denied` | `policy_changed` (the decision's outcome) | `rate_limited` (the approval goes back)."""
    retry_after: float | None = None

    @property
    def edited(self) -> bool:
        return self.changes is not None


def judge_release(policy: Policy, call: AuditedCall, decision: Decision, *, now: float) -> ReleaseCheck:
    """The release check of `decision`'s approved `call` against `policy` at `now` (pure; see the module doc)."""
    arguments: dict[str, Any] = call.arguments
    changes = None
    if decision.edit_diff is not None:
        changes = json.loads(decision.edit_diff)
        if decision.edited_arguments is None:  # settled already: its edit cannot be run again
            verdict = Verdict(action="deny", rule=decision.rule, reason="the approved edit was already settled")
            return ReleaseCheck(arguments, verdict, changes, "its edited arguments are no longer kept", POLICY_DENIED)
        arguments = apply_edit(json.loads(decision.edited_arguments), call.arguments, json.loads(decision.arguments))
    verdict = policy.evaluate(call.grant, call.server, call.tool, arguments, now=now)
    problem = landing_problem(verdict, decision.rule)
    if problem is None:
        return ReleaseCheck(arguments, verdict, changes)
    outcome = POLICY_DENIED if verdict.action == "deny" else POLICY_CHANGED
    return ReleaseCheck(arguments, verdict, changes, f"the policy now in force says: {problem}", outcome)


def edit_charges(
    check: ReleaseCheck, original: Verdict, call: AuditedCall, *, now: float
) -> list[tuple[Limit, float]] | ConditionFailed:
    """What an edited call adds to its limits beyond what the call as sent was charged on arrival (limits that
    count calls: nothing for a counter the call already counted against; amounts: the increase)."""
    if not check.edited or not check.verdict.limits:
        return []
    after = charges(
        check.verdict.limits, check.arguments, grant=call.grant, server=call.server, tool=call.tool, now=now
    )
    if isinstance(after, ConditionFailed):
        return after
    before = charges(original.limits, call.arguments, grant=call.grant, server=call.server, tool=call.tool, now=now)
    charged = (
        {limit.counter: amount for limit, amount in zip(original.limits, before, strict=True)}
        if not isinstance(before, ConditionFailed)
        else {}
    )
    extra: list[tuple[Limit, float]] = []
    for limit, amount in zip(check.verdict.limits, after, strict=True):
        if limit.counter not in charged:
            extra.append((limit, amount))
        elif limit.amount is not None and amount > charged[limit.counter]:
            extra.append((limit, amount - charged[limit.counter]))
    return [(limit, amount) for limit, amount in extra if amount > 0]


def refused_by_amount(check: ReleaseCheck, failed: ConditionFailed) -> ReleaseCheck:
    """The edited call's amount cannot be counted: it is denied (fail closed)."""
    return replace(check, refusal=f"the edited call is denied: {failed.reason}", outcome=POLICY_DENIED)
