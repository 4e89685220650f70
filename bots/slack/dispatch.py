"""The one dispatcher for Slack interactions, whichever way they arrived (HTTP or Socket Mode).

`dispatch(slack, payload)` returns at once with the acknowledgement body (None: an empty 200 /
an envelope ack without payload); everything that talks to the database or to Slack runs after,
as a task on the channel (`SlackChannel.spawn`), because Slack wants the ack within 3 s.

- Approve button: vote `approve` as the clicking Slack user, on the decision id the button carries.
- "Approve for 30 min" button (where the rule allows standing approvals): the same vote, asking for the scope
  its action id names for the seconds its value carries (judged against the decision's rule when cast).
- Deny button: `views.open` the reason modal first (trigger ids expire in seconds), then check that
  the user may decide this at all; if not, the modal is replaced by the reason and nothing changes.
- Reason modal submitted: an empty reason is refused inside the modal; otherwise vote `deny`.

Who may vote is the approvals service's business (`ApprovalService.vote` refuses non-approvers and
the call's own grant; `check_vote`, before the deny modal, asks the same without voting); here a refusal
becomes an ephemeral message to the person who clicked.
This module does not verify signatures: the HTTP edge does, and a Socket Mode connection is
authenticated by its app token.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from bots.slack import blocks
from bots.slack.channel import Post, SlackChannel
from service.approvals import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalError,
    DecisionView,
    NotAllowed,
    StandingTerms,
    Voter,
)

logger = logging.getLogger("holdgate.slack")


class BadPayload(ValueError):
    """Not an interaction payload holdgate understands the shape of."""


@dataclass(frozen=True, slots=True)
class Where:
    """The message a click came from (for the ephemeral answer and for refreshing it)."""

    channel: str | None
    ts: str | None


def dispatch(slack: SlackChannel, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Start handling one interaction; returns the ack body. Raises BadPayload."""
    try:
        kind = payload["type"]
        if kind == "block_actions":
            _block_actions(slack, payload)
            return None
        if kind == "view_submission":
            return _view_submission(slack, payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(
            f"malformed {payload.get('type', 'unknown') if isinstance(payload, dict) else ''} "
            f"payload: {type(exc).__name__}: {exc}"
        ) from None
    logger.debug("ignoring Slack interaction of type %s", kind)
    return None


def _block_actions(slack: SlackChannel, payload: dict[str, Any]) -> None:
    user = payload["user"]["id"]
    container = payload.get("container") or {}
    where = Where(
        channel=(payload.get("channel") or {}).get("id") or container.get("channel_id"),
        ts=container.get("message_ts"),
    )
    for action in payload["actions"]:
        decision_id = action.get("value")
        if action["action_id"] == blocks.APPROVE and decision_id:
            slack.spawn(_vote(slack, decision_id, user, "approve", None, where))
        elif action["action_id"].startswith(blocks.APPROVE_FOR) and decision_id:
            scope = action["action_id"].removeprefix(blocks.APPROVE_FOR)
            decision_id, _, seconds = decision_id.partition("|")
            slack.spawn(_vote_standing(slack, decision_id, user, scope, seconds, where))
        elif action["action_id"] == blocks.DENY and decision_id:
            slack.spawn(_ask_reason(slack, payload["trigger_id"], decision_id, user, where))


def _view_submission(slack: SlackChannel, payload: dict[str, Any]) -> dict[str, Any] | None:
    view = payload["view"]
    if view.get("callback_id") != blocks.DENY_MODAL:
        return None
    user = payload["user"]["id"]
    metadata = json.loads(view["private_metadata"])
    reason = (view["state"]["values"][blocks.REASON_BLOCK][blocks.REASON_ACTION].get("value") or "").strip()
    if not reason:
        return {"response_action": "errors", "errors": {blocks.REASON_BLOCK: blocks.REASON_MISSING}}
    where = Where(metadata.get("channel"), metadata.get("ts"))
    slack.spawn(_vote(slack, str(metadata["decision"]), user, "deny", reason[: blocks.REASON_LIMIT], where))
    return None


async def _ask_reason(slack: SlackChannel, trigger_id: str, decision_id: str, user: str, where: Where) -> None:
    opened = await slack.client.views_open(
        trigger_id=trigger_id, view=blocks.deny_modal(decision_id, channel=where.channel, ts=where.ts)
    )
    refusal = await _refusal(slack, decision_id, user)
    if refusal is not None:
        try:
            await slack.client.views_update(
                view_id=opened["view"]["id"], view=blocks.notice_modal("Cannot deny this", refusal)
            )
        except Exception as exc:  # the ephemeral still tells them
            logger.warning("views.update for %s failed: %s", user, exc)
        await slack.ephemeral(where.channel, user, refusal)


async def _refusal(slack: SlackChannel, decision_id: str, user: str) -> str | None:
    """Why `user` cannot decide this now, or None (the vote itself still checks everything)."""
    try:
        await slack.approval_service().check_vote(decision_id, Voter("slack", user))
    except AlreadyDecided as exc:
        by = f" by {exc.decision.decided_by}" if exc.decision.decided_by else ""
        return f"Already decided: {exc.decision.status}{by}."
    except AlreadyVoted:
        return None  # the deny is refused when it is cast, saying so
    except NotAllowed as exc:
        logger.warning("Slack user %s is not an approver of %s: %s", user, decision_id, exc)
        return _not_an_approver(exc)
    except ApprovalError as exc:
        return exc.message
    return None


async def _vote_standing(
    slack: SlackChannel, decision_id: str, user: str, scope: str, seconds: str, where: Where
) -> None:
    """An "Approve for …" click: an approval asking for a standing approval; a malformed button is refused."""
    try:
        terms = StandingTerms.parse(scope, seconds)
    except ApprovalError as exc:
        await slack.ephemeral(where.channel, user, exc.message)
        return
    await _vote(slack, decision_id, user, "approve", None, where, standing=terms)


async def _vote(
    slack: SlackChannel,
    decision_id: str,
    user: str,
    value: Literal["approve", "deny"],
    reason: str | None,
    where: Where,
    *,
    standing: StandingTerms | None = None,
) -> None:
    try:
        outcome = await slack.approval_service().vote(
            decision_id, Voter("slack", user), value, via="slack", reason=reason, standing=standing
        )
    except NotAllowed as exc:
        await slack.ephemeral(where.channel, user, _not_an_approver(exc))
        return
    except ApprovalError as exc:
        await slack.ephemeral(where.channel, user, exc.message)
        return
    if outcome.decided:
        return  # the outbox's `update` edits every copy of the request
    # Counted, more approvals needed: say so, and show the votes on the message clicked.
    await slack.ephemeral(where.channel, user, outcome.message)
    if where.channel and where.ts:
        decision, votes = await slack.approval_service().get(decision_id)
        await slack.update(Post(where.channel, where.ts), slack.render(DecisionView.of(decision, votes)))


def _not_an_approver(exc: NotAllowed) -> str:
    if "cannot approve" in exc.message:  # the grant that made the call
        return f"{blocks.NOT_AN_APPROVER} {exc.message}."
    return blocks.NOT_AN_APPROVER
