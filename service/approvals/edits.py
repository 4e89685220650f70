"""Edit before release: an approver approves a held call with changed arguments, where its rule is `editable`.

What an edit is, checked when it is given (`Edits.approve_edited`, before the one compare-and-set that approves):

- the whole new argument object, what the upstream will receive (`holdgate approve ID --arguments '{...}'`, REST
  `{"arguments": {...}}`, the dashboard's text area). Approvers see the arguments redacted, so a value they leave
  as shown (`"[redacted]"` where a secret was, a marker for a number JSON cannot hold) stands for the call's own
  value: `apply_edit` puts it back at release. `"[redacted]"` anywhere else is refused (it would reach the upstream
  as that text);
- a JSON object that every part of holdgate holds faithfully (`arguments_problem`: no NUL, no lone surrogate, no
  NaN or infinity, integers within 64 bits, nesting at most 64 deep) and at most `MAX_EDIT_BYTES` as JSON;
- the same as the shown arguments: a plain approval, no edit recorded;
- otherwise evaluated by the policy as it is now: it must land on this decision's rule (its approval) or on allow
  (`landing_problem`), or the approval is refused with the reason and nothing changes.

The approval stores the edit with the decision (`edited_arguments` whole, for the process that releases the call,
erased once its run is recorded; `edited_shown` and `edit_diff` redacted, kept). The release runs exactly that edit,
read from the claimed row, after the release check (`service.approvals.recheck`) evaluates the edited call again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.approvals.errors import EditRefused
from service.approvals.votes import VoteOutcome, Voter, Votes
from service.policy import Verdict, redact_arguments
from service.policy.redaction import REDACTED, canonical_json

if TYPE_CHECKING:
    from service.policy import Policy

MAX_EDIT_BYTES = 256 * 1024
"""The largest edited argument object, as JSON (UTF-8)."""
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Edit:
    """An approver's edit, checked: the arguments as given, the same redacted, and the changes (redacted)."""

    arguments: dict[str, Any]
    shown: dict[str, Any]
    changes: list[dict[str, Any]]

    def columns(self) -> dict[str, Any]:
        """The decision's columns that record this edit, written with the approval."""
        return {
            "edited_arguments": json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":")),
            "edited_shown": json.dumps(self.shown, ensure_ascii=False),
            "edit_diff": json.dumps(self.changes, ensure_ascii=False),
        }


def read_edit(arguments: Any, shown_original: Mapping[str, Any]) -> dict[str, Any] | None:
    """The approver's arguments, checked (`EditRefused` says why not); None when they are the shown arguments."""
    if not isinstance(arguments, dict):
        raise EditRefused(f"arguments must be a JSON object (the tool's whole argument object), not {_kind(arguments)}")
    from service.policy.conditions import arguments_problem  # CEL: imported when an edit is checked, not to vote

    problem = arguments_problem(arguments)
    if problem is not None:
        raise EditRefused(f"the edited arguments cannot be used: {'arguments' + problem.removeprefix('args')}")
    size = len(canonical_json(arguments).encode())
    if size > MAX_EDIT_BYTES:
        raise EditRefused(f"the edited arguments are {size:,} bytes as JSON; at most {MAX_EDIT_BYTES:,}")
    misplaced = _misplaced_marker(arguments, shown_original, "")
    if misplaced is not None:
        raise EditRefused(
            f"{REDACTED!r} at {misplaced or 'the top'} stands for a value you cannot see; it may only stay where the "
            "call's own arguments show it (the call's value is kept there)"
        )
    if canonical_json(arguments) == canonical_json(shown_original):
        return None
    return arguments


def landing_problem(verdict: Verdict, rule: str) -> str | None:
    """Why a call the policy answers with `verdict` may not run on an approval given under `rule`, or None.

    It may run when the policy allows it or asks for this same rule's approval (the rule's label, a case's
    `<rule>.cases[i]`); not when it denies it or asks for another rule's approval (other approvers, another
    quorum: the approval given does not answer what the policy now asks)."""
    if verdict.action == "allow":
        return None
    if verdict.action == "require_approval":
        if verdict.rule == rule:
            return None
        return f"it needs approval under rule {verdict.rule}, not under rule {rule} (this decision's)"
    return f"the policy denies it (rule {verdict.rule}: {verdict.reason or 'not allowed by policy'})"


def changes(before: Any, after: Any, after_shown: Any, path: str = "") -> list[dict[str, Any]]:
    """What changed from the shown (redacted) arguments to the edit, each value as it is shown (redacted)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[dict[str, Any]] = []
        shown = after_shown if isinstance(after_shown, dict) else {}
        for key in [*before, *(k for k in after if k not in before)]:
            where = _join(path, key)
            if key not in after:
                found.append({"path": where, "from": before[key]})
            elif key not in before:
                found.append({"path": where, "to": shown.get(key, REDACTED)})
            else:
                found += changes(before[key], after[key], shown.get(key, REDACTED), where)
        return found
    if canonical_json(before) == canonical_json(after):
        return []
    return [{"path": path or "(all)", "from": before, "to": after_shown}]


def describe_changes(found: list[dict[str, Any]]) -> str:
    """`jobId: "prod-1" → "prod-2"; note: added "x"; force: removed` (values as shown, JSON)."""
    parts = []
    for change in found:
        if "from" not in change:
            parts.append(f"{change['path']}: added {_json(change['to'])}")
        elif "to" not in change:
            parts.append(f"{change['path']}: removed (was {_json(change['from'])})")
        else:
            parts.append(f"{change['path']}: {_json(change['from'])} → {_json(change['to'])}")
    return "; ".join(parts) or "no change"


def apply_edit(edited: Any, original: Any, shown: Any) -> Any:
    """The arguments to run: the edit, with every value left as shown where the shown value is not the call's own
    (redacted, or altered to be stored) replaced by the call's own value."""
    if shown is not _MISSING and canonical_json(edited) == canonical_json(shown):
        return original if original is not _MISSING else edited
    if isinstance(edited, dict):
        return {
            key: apply_edit(
                value,
                original.get(key, _MISSING) if isinstance(original, dict) else _MISSING,
                shown.get(key, _MISSING) if isinstance(shown, dict) else _MISSING,
            )
            for key, value in edited.items()
        }
    if (
        isinstance(edited, list)
        and isinstance(shown, list)
        and isinstance(original, list)
        and len(shown) == len(original)
    ):
        return [apply_edit(item, original[i], shown[i]) if i < len(shown) else item for i, item in enumerate(edited)]
    return edited


def _misplaced_marker(edited: Any, shown: Any, path: str) -> str | None:
    """The path of a `[redacted]` in the edit where the shown arguments have no `[redacted]`, or None."""
    if edited == REDACTED:
        return None if shown == REDACTED else path
    if isinstance(edited, dict):
        for key, value in edited.items():
            found = _misplaced_marker(
                value, shown.get(key, _MISSING) if isinstance(shown, dict) else _MISSING, _join(path, key)
            )
            if found is not None:
                return found
    elif isinstance(edited, list):
        for i, item in enumerate(edited):
            inner = shown[i] if isinstance(shown, list) and i < len(shown) else _MISSING
            found = _misplaced_marker(item, inner, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:199] + "…"


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(value), "a number")


class Edits(Votes):
    """Approving a held call with changed arguments."""

    async def approve_edited(
        self,
        decision_id: str,
        voter: Voter,
        arguments: Any,
        *,
        policy: Policy,
        via: str,
        reason: str | None = None,
    ) -> VoteOutcome:
        """Approve `decision_id` so that its call runs with `arguments` instead of its own (see the module doc).

        Refused with nothing changed: every refusal of a vote, and `EditRefused` (the rule is not editable, the
        arguments are not a usable object, or the edited call would not land on this rule's approval or on
        allow). Arguments equal to the shown ones are a plain approval."""
        decision = await self.check_vote(decision_id, voter, "approve")
        shown_original = json.loads(decision.arguments)
        if not decision.editable:
            read_edit(arguments, shown_original)  # bad arguments are named as such, even here
            raise EditRefused(
                f"decision {decision_id}'s rule ({decision.rule}) is not editable: approve it without arguments, "
                'or deny it (the policy marks a rule `"editable": true` to allow edits)'
            )
        edited = read_edit(arguments, shown_original)
        if edited is None:
            return await self.vote(decision_id, voter, "approve", via=via, reason=reason)
        if decision.quorum != 1:
            raise EditRefused(f"decision {decision_id} needs {decision.quorum} approvals; an edit needs quorum 1")
        verdict = policy.evaluate(decision.grant, decision.server, decision.tool, edited, now=self.clock())
        problem = landing_problem(verdict, decision.rule)
        if problem is not None:
            raise EditRefused(f"the edited call cannot be approved here: {problem}")
        # Redacted by the paths of the rule that decides the edited call and of the one that held the call as sent.
        held_by = policy.evaluate(decision.grant, decision.server, decision.tool, shown_original, now=self.clock())
        shown = redact_arguments(edited, (*verdict.redact, *held_by.redact))
        edit = Edit(arguments=edited, shown=shown, changes=changes(shown_original, edited, shown))
        return await self.vote(decision_id, voter, "approve", via=via, reason=reason, ending=edit.columns())
