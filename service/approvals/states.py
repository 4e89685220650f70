"""A decision's states, and the one compare-and-set every change of status goes through.

    pending ──▶ approved ──▶ (claimed by one call) ──▶ executed: outcome ok | tool_error | … | unknown
       │    │                                        ├─▶ policy_denied | policy_changed (checked at release: not run)
       │    ├─▶ denied                               └─▶ lapsed (no call collected it by `collect_by`)
       │    ├─▶ expired
       │    └─▶ cancelled
       └─ (the agent stopped waiting: still pending; see `endings.withdraw`)

A decision leaves `pending` exactly once. `transition_many` is the only writer of `status`: one conditional
`UPDATE … WHERE id IN … AND status = 'pending'`, so a click, a timer, a sweep and a cancelled client can race and
exactly one wins; the losers get `AlreadyDecided` ("already decided: approved by alice"). In the same statement
the ending is claimed for a call waiting in this process (the hand-over, `service.approvals.handoff`), and in the
same transaction the channels' `update`s are queued and the replicas told. After the commit, listeners hear of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import case, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import metrics, tracing
from service.approvals.core import DecisionCore
from service.approvals.errors import AlreadyDecided, ApprovalError
from service.approvals.notices import announce, enqueue_notifications
from service.db import RETURNING_ROWS, session_scope
from service.models import Decision

logger = logging.getLogger(__name__)

PENDING = "pending"
ENDINGS = ("approved", "denied", "expired", "cancelled")
STATUSES = (PENDING, *ENDINGS)
Status = Literal["approved", "denied", "expired", "cancelled"]

UNKNOWN = "unknown"
"""The outcome of a call that was sent upstream by a process that stopped before it learned the answer."""
LAPSED = "lapsed"
"""The outcome of an approval no call collected within the rule's `claim_within`: it never ran."""
POLICY_DENIED = "policy_denied"
"""The outcome of an approval whose call the policy denies at its release (it changed while the call was held, or
the approver's edit is denied by it): not run."""
POLICY_CHANGED = "policy_changed"
"""The outcome of an approval whose call the policy, at its release, sends to another rule's approval: not run on
this approval (the same call again asks under that rule)."""
NOT_RUN = (LAPSED, POLICY_DENIED, POLICY_CHANGED)
"""Outcomes of an approval that never ran: a retry of the call is judged afresh, never told it may have run."""


class Transitions(DecisionCore):
    """The status change: `transition` for one decision, `transition_many` for a set in the caller's transaction."""

    async def transition(
        self,
        decision_id: str,
        status: Status,
        *,
        by: str,
        via: str,
        reason: str | None = None,
        session: AsyncSession | None = None,
        due_only: bool = False,
        rejoin_due: bool = False,
    ) -> Decision:
        """Move a pending decision to `status`, once. Raises AlreadyDecided / UnknownDecision.

        With `session`, runs inside the caller's transaction (a vote that completes a quorum) and
        leaves commit and notification to the caller. `due_only` (timeouts) only fires when the
        decision's `expires_at` has passed, so an early or stale timer changes nothing; `rejoin_due`
        likewise only once the agent that stopped waiting is past its `rejoin_by` (and has not come back).
        """
        if session is None:
            async with session_scope(self.sessions) as own:
                decision = await self.transition(
                    decision_id,
                    status,
                    by=by,
                    via=via,
                    reason=reason,
                    session=own,
                    due_only=due_only,
                    rejoin_due=rejoin_due,
                )
            self._notify(decision)
            return decision
        won = await self.transition_many(
            session, [decision_id], status, by=by, via=via, reason=reason, due_only=due_only, rejoin_due=rejoin_due
        )
        if decision_id in won:
            return won[decision_id]
        decision = await self._load(session, decision_id)
        raise AlreadyDecided(decision) if decision.status != PENDING else ApprovalError("not due yet")

    async def transition_many(
        self,
        session: AsyncSession,
        decision_ids: Sequence[str],
        status: Status,
        *,
        by: str,
        via: str,
        reason: str | None = None,
        due_only: bool = False,
        rejoin_due: bool = False,
        also: Mapping[str, Any] | None = None,
    ) -> dict[str, Decision]:
        """The only writer of a decision's status: one compare-and-set for all of `decision_ids`.

        Returns the decisions this call moved (the winners), reloaded; the others were not pending (or
        not due). Runs in the caller's transaction; the caller commits and then `_notify`s each winner.
        `also`: more columns written in the same statement (an approval's edit, `service.approvals.edits`), so
        they exist exactly when the status does.
        """
        if not decision_ids:
            return {}
        now = self.clock()
        started_ns = tracing.now_ns()
        conditions = [col(Decision.id).in_(decision_ids), col(Decision.status) == PENDING]
        if due_only:
            conditions.append(col(Decision.expires_at) <= now)
        if rejoin_due:
            conditions.append(col(Decision.rejoin_by) <= now)
        values: dict[str, Any] = {
            "status": status,
            "decided_at": now,
            "decided_by": by,
            "decided_via": via,
            "decision_reason": reason,
        }
        if also:
            values.update(also)
        if status != "cancelled":  # the ending waits this long for a call to collect it (an approval then lapses)
            values["collect_by"] = now + col(Decision.claim_within_s)
        waited = set() if status == "cancelled" else {i for i in decision_ids if self.local_waiters(i)}
        if status == "cancelled":
            values["claimed_at"] = now  # nobody is left to take a cancelled call's ending
        elif waited:
            # A call here waits on it: the ending is claimed for that call now, and `claim` hands it over.
            values["claimed_at"] = case((col(Decision.id).in_(waited), now), else_=col(Decision.claimed_at))
            values["claim_holder"] = case((col(Decision.id).in_(waited), self.holder), else_=col(Decision.claim_holder))
            values["lease_until"] = case(
                (col(Decision.id).in_(waited), now + self.lease_s), else_=col(Decision.lease_until)
            )
        won = list(
            await session.scalars(
                update(Decision).where(*conditions).values(**values).returning(Decision),
                execution_options=RETURNING_ROWS,
            )
        )
        if waited:
            for decision in won:
                if decision.id in waited:  # only what this transition won: a lost one is not ours to hand over
                    self.handoff.expect(decision.id)
        await enqueue_notifications(session, won, "update", now)
        await announce(session, [decision.id for decision in won])
        for decision in won:
            metrics.count_ending(status, now - decision.created_at)
            tracing.record(
                "holdgate decision",
                start_ns=started_ns,
                attributes={
                    "holdgate.decision_id": decision.id,
                    "holdgate.status": status,
                    "holdgate.via": via,
                    "holdgate.server": decision.server,
                    "holdgate.tool": decision.tool,
                    "holdgate.grant": decision.grant,
                },
                joins=decision.traceparent,  # in the held call's trace, wherever the change happens
            )
            logger.info("decision %s %s by %s via %s", decision.id, status, by, via, extra={"decision_id": decision.id})
        return {decision.id: decision for decision in won}
