"""Block Kit for approvals: pure functions from a `DecisionView` to Slack messages and modals.

No I/O and no clock: everything shown comes from the view (times are rendered with Slack's
`<!date^…>` so each reader sees their own time zone). The action ids and the modal's ids live here
too, because the dispatcher reads back exactly what these builders wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    LinkButtonElement,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from service.approvals.schemas import DecisionView, ExecutionView, ToolChangeView
from service.catalog import ToolRisk

APPROVE = "holdgate_approve"
APPROVE_FOR = "holdgate_approve_for_"
"""The prefix of a standing approval's button: `holdgate_approve_for_<scope>`, valued `<decision id>|<seconds>`."""
DENY = "holdgate_deny"
OPEN = "holdgate_open"
ACTIONS_BLOCK = "holdgate_actions"
DENY_MODAL = "holdgate_deny_reason"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"

ARGUMENTS_LIMIT = 2_000
"""Characters of pretty-printed arguments shown; a section's text may hold 3,000."""
REASON_LIMIT = 2_000

NOT_AN_APPROVER = "You are not an approver for this."
REASON_MISSING = "Write a reason: the agent and the audit log get it."

_ENDINGS = {
    "approved": ("✅", "Approved"),
    "denied": ("⛔", "Denied"),
    "expired": ("⌛", "Expired"),
    "cancelled": ("✖️", "Cancelled"),
}


@dataclass(frozen=True, slots=True)
class Message:
    """What `chat.postMessage` / `chat.update` send: notification text and blocks."""

    text: str
    blocks: list[dict[str, Any]]


def decision_message(decision: DecisionView, *, risk: ToolRisk | None = None, link: str | None = None) -> Message:
    """The request: pending with buttons, or (after any ending) its outcome without them."""
    call = f"{decision.server}/{decision.tool}"
    if decision.status == "pending":
        head = f"Approval needed: {call}"
        text = f"Approval needed: grant {decision.grant} wants to call {call} ({decision.id})"
    else:
        icon, word = _ENDINGS.get(decision.status, ("", decision.status.capitalize()))
        head = f"{icon} {word}: {call}".strip()
        text = f"{word}: {call} for grant {decision.grant} ({decision.id})"
    blocks: list[Block] = [
        HeaderBlock(text=_clip(head, 150)),
        SectionBlock(fields=_fields(decision, risk)),
        SectionBlock(text=MarkdownTextObject(text=f"*Arguments*\n```{_arguments(decision.arguments)}```")),
    ]
    if decision.tool_change is not None:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_tool_change(decision.tool_change))))
    if decision.status == "pending":
        if decision.votes:
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_votes(decision))]))
        blocks.append(_buttons(decision, link))
    else:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_outcome(decision))))
        if decision.lapsed:  # an outcome that never reached the upstream
            blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Lapsed:* {_esc(decision.state)}")))
        elif decision.execution is not None:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=_execution(decision.execution))))
    footer = f"Decision `{decision.id}`"
    if link and decision.status != "pending":
        footer += f" · <{link}|open in holdgate>"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=footer)]))
    return Message(text=text, blocks=[block.to_dict() for block in blocks])


def reminder_text(decision: DecisionView) -> str:
    """The thread reply sent before the decision expires."""
    who = ", ".join(decision.approvers) or "the local operator"
    return (
        f":hourglass_flowing_sand: Reminder: this call still needs approval by {_esc(who)}; "
        f"it expires {slack_date(decision.expires_at)} and then {_on_timeout(decision)}."
    )


def deny_modal(decision_id: str, *, channel: str | None, ts: str | None) -> dict[str, Any]:
    """The modal that asks why; built from the button alone, so `views.open` needs no lookup."""
    metadata = json.dumps({"decision": decision_id, "channel": channel, "ts": ts})
    view = View(
        type="modal",
        callback_id=DENY_MODAL,
        title="Deny this call",
        submit="Deny",
        close="Cancel",
        private_metadata=metadata,
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=f"Deny decision `{decision_id}`? The agent sees your reason.")),
            InputBlock(
                block_id=REASON_BLOCK,
                label="Reason",
                element=PlainTextInputElement(action_id=REASON_ACTION, multiline=True, max_length=REASON_LIMIT),
            ),
        ],
    )
    return view.to_dict()


def notice_modal(title: str, text: str) -> dict[str, Any]:
    """A modal with a message and a Close button (replaces the deny modal when it cannot be used)."""
    view = View(
        type="modal",
        title=_clip(title, 24),
        close="Close",
        blocks=[SectionBlock(text=MarkdownTextObject(text=_esc(text)))],
    )
    return view.to_dict()


def slack_date(iso: str) -> str:
    """An ISO 8601 UTC time as Slack date formatting, falling back to the ISO text."""
    epoch = int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} at {{time}}|{iso}>"


def duration(seconds: float) -> str:
    """45s, 2m 05s, 1h 03m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


# -- parts ----------------------------------------------------------------------------------------


def _fields(decision: DecisionView, risk: ToolRisk | None) -> list[MarkdownTextObject]:
    approvers = ", ".join(decision.approvers) or "the local operator (CLI)"
    needed = "any one of" if decision.quorum == 1 else f"{decision.quorum} of"
    rule = f"`{_esc(decision.rule)}`" + (f": {_esc(decision.rule_reason)}" if decision.rule_reason else "")
    fields = [
        f"*Asked by (grant)*\n`{_esc(decision.grant)}`",
        f"*Server / tool*\n`{_esc(decision.server)}` / `{_esc(decision.tool)}`",
        f"*Risk*\n{_esc(risk.describe()) if risk else 'not in a risk catalog'}",
        f"*Rule*\n{rule}",
        f"*Approvers*\n{needed} {_esc(approvers)}",
        f"*Expires*\n{slack_date(decision.expires_at)}, then {_on_timeout(decision)}",
    ]
    return [MarkdownTextObject(text=_clip(field, 2000)) for field in fields]


STANDING_LABELS = {"same_args": "same call", "tool": "this tool"}


def _buttons(decision: DecisionView, link: str | None) -> ActionsBlock:
    """Approve (or, where the rule allows standing approvals, "Approve once" and one "Approve for …" button per
    scope, at the rule's longest duration), Deny…, and the link to the decision page."""
    elements: list[Any] = [
        ButtonElement(
            text="Approve once" if decision.scopes else "Approve", action_id=APPROVE, value=decision.id, style="primary"
        )
    ]
    for scope, seconds in decision.scopes.items():
        elements.append(
            ButtonElement(
                text=f"Approve for {human_duration(seconds)} ({STANDING_LABELS.get(scope, scope)})",
                action_id=f"{APPROVE_FOR}{scope}",
                value=f"{decision.id}|{seconds:g}",
            )
        )
    elements.append(ButtonElement(text="Deny…", action_id=DENY, value=decision.id, style="danger"))
    if link:
        elements.append(LinkButtonElement(text="Open in holdgate", url=link, action_id=OPEN))
    return ActionsBlock(block_id=f"{ACTIONS_BLOCK}:{decision.id}", elements=elements)


def human_duration(seconds: float) -> str:
    """1800 -> '30 min', 3600 -> '1 h', 5400 -> '90 min', 86400 -> '1 day', 45 -> '45 s'."""
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day" + ("s" if days > 1 else "")
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def _outcome(decision: DecisionView) -> str:
    _, word = _ENDINGS.get(decision.status, ("", decision.status.capitalize()))
    line = f"*{word}*"
    if decision.decided_by:
        line += f" by {_esc(decision.decided_by)}"
    if decision.decided_via:
        line += f" via {_esc(decision.decided_via)}"
    if decision.decided_at:
        taken = _epoch(decision.decided_at) - _epoch(decision.created_at)
        line += f" {slack_date(decision.decided_at)}, {duration(taken)} after the request"
    if decision.reason:
        line += "\n>" + _esc(_clip(decision.reason, REASON_LIMIT)).replace("\n", "\n>")
    if decision.standing_id:
        line += (
            f"\n*Standing approval* `{_esc(decision.standing_id)}`: later calls it covers run without asking "
            "(`holdgate standing list`; revoke with `holdgate standing revoke`)"
        )
    return line


def _tool_change(change: ToolChangeView) -> str:
    """The warning that the tool is not as a person accepted it, and the diff (cut to fit a section)."""
    head = f":warning: *Tool definition {'is new' if change.kind == 'new' else 'changed'}:* {_esc(change.summary)}"
    room = 2_900 - len(head)
    diff = _esc(change.diff).replace("```", "`\u200b``")
    if len(diff) > room:
        cut = diff[: room - 40]
        diff = (cut[: cut.rfind("\n")] if "\n" in cut else cut) + "\n… (cut: the dashboard shows the whole diff)"
    return f"{head}\n```{diff}```"


def _execution(execution: ExecutionView) -> str:
    took = f" in {execution.duration_ms:.0f} ms" if execution.duration_ms is not None else ""
    line = f"*Ran upstream:* `{_esc(execution.outcome)}`{took}"
    if execution.detail:
        line += f"\n```{_esc(_clip(execution.detail, 1000))}```"
    return line


def _votes(decision: DecisionView) -> str:
    approvals = [v.approver for v in decision.votes if v.value == "approve"]
    return f"Approved so far by {_esc(', '.join(approvals))} ({len(approvals)} of {decision.quorum} needed)"


def _on_timeout(decision: DecisionView) -> str:
    return "it is approved" if decision.on_timeout == "approve" else "it is refused"


def _arguments(arguments: dict[str, Any]) -> str:
    """Pretty JSON for a code block: escaped, cut to ARGUMENTS_LIMIT (never inside an entity)."""
    raw = json.dumps(arguments, indent=2, ensure_ascii=False, sort_keys=True)
    text = _esc(raw).replace("```", "`\u200b``")
    if len(text) > ARGUMENTS_LIMIT:
        cut = text[:ARGUMENTS_LIMIT]
        entity = cut.rfind("&")
        if entity > ARGUMENTS_LIMIT - 5 and ";" not in cut[entity:]:
            cut = cut[:entity]
        text = cut + f"\n… (cut: {len(raw):,} characters in all)"
    return text


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _esc(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
