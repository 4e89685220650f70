"""Opening a decision, or joining the one a call already waits on.

"The same call" is the approval's binding (`queries.same_call`): grant, server, tool, canonical arguments,
policy version and the person the agent acts for. A call joins the newest decision of the same call that is
pending, or ended and not yet collected (within its `collect_by`); otherwise it opens a new one, with the rule's
approvers, channels, quorum and deadlines copied onto the row — the policy may change while it waits, the decision
does not. Opening queues the channels' `request`s in the same transaction and announces the deadlines to the other
replicas.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import asdict
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import metrics, tracing
from service.approvals.approvers import approver_json
from service.approvals.core import DecisionCore
from service.approvals.notices import announce_opened, enqueue_notifications
from service.approvals.queries import same_call
from service.approvals.states import PENDING
from service.approvals.timestamps import iso
from service.db import RETURNING_ROWS, session_scope
from service.models import Decision
from service.policy import ApprovalSpec, Verdict, redact_arguments

logger = logging.getLogger(__name__)


def new_decision_id() -> str:
    """Random and unguessable (not the JSON-RPC id, which restarts per session)."""
    return "d_" + secrets.token_urlsafe(15)


class Opening(DecisionCore):
    async def open_or_join(
        self,
        *,
        grant: str,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        args_sha256: str,
        verdict: Verdict,
        policy_version: str,
        previous_attempt: Decision | None = None,
        acting_for: str | None = None,
    ) -> tuple[Decision, bool]:
        """The decision this call waits on: an unclaimed one for the same call, or a new one.

        "The same call" is the approval's binding: grant, server, tool, canonical arguments and
        policy version; `args_sha256` is `args_digest(key, arguments)`, which the caller already has.
        `acting_for`: the person the calling agent acts for (`CallHolding.binding`), part of the binding too.
        Returns (decision, created). `previous_attempt`: an earlier approved run of this call that may have run
        (see `earlier_run`); a new decision says so to its approvers.
        """
        spec = verdict.approval or ApprovalSpec(approvers=())
        now = self.clock()
        async with session_scope(self.sessions) as session:
            existing = await self._joinable(
                session, grant, server, tool, args_sha256, policy_version, now, acting_for=acting_for
            )
            if existing is not None:
                return existing, False
            decision = Decision(
                id=new_decision_id(),
                server=server,
                tool=tool,
                grant=grant,
                arguments=json.dumps(redact_arguments(arguments, verdict.redact), ensure_ascii=False),
                args_sha256=args_sha256,
                policy_version=policy_version,
                rule=verdict.rule,
                reason=_with_previous_attempt(verdict.reason, previous_attempt),
                previous_attempt=previous_attempt.id if previous_attempt is not None else None,
                tool_change=json.dumps(asdict(verdict.tool_change)) if verdict.tool_change is not None else None,
                approvers=json.dumps([approver_json(a) for a in spec.approvers]),
                approver_groups=json.dumps(list(spec.groups)),
                acting_for=acting_for,
                four_eyes=spec.four_eyes,
                channels=",".join(spec.channels),
                routing=json.dumps(spec.routing),
                quorum=spec.quorum,
                on_timeout=spec.on_timeout,
                claim_within_s=spec.claim_within_seconds,
                editable=spec.editable,
                rejoin_within_s=spec.rejoin_within_seconds,
                scopes=json.dumps(dict(spec.scopes)),
                traceparent=tracing.traceparent(),  # the opening call's span: the decision's changes join its trace
                created_at=now,
                expires_at=now + spec.timeout_seconds,
                remind_at=(
                    now + spec.timeout_seconds - spec.remind_before_seconds
                    if spec.remind_before_seconds is not None
                    else None
                ),
            )
            session.add(decision)
            await session.flush()
            await enqueue_notifications(session, [decision], "request", now)
            await announce_opened(session, [decision])
        logger.info(
            "decision %s opened: %s/%s for grant %s (rule %s), expires %s",
            decision.id,
            server,
            tool,
            grant,
            verdict.rule,
            iso(decision.expires_at),
            extra={"decision_id": decision.id},
        )
        metrics.count_decision(PENDING)
        self._notify(decision)
        return decision, True

    async def _joinable(
        self,
        session: AsyncSession,
        grant: str,
        server: str,
        tool: str,
        args_sha256: str,
        policy_version: str,
        now: float,
        *,
        acting_for: str | None,
    ) -> Decision | None:
        """The newest decision of the same call that a call may still wait on, or None (then a new one opens).

        Pending, or ended and uncollected within its `collect_by` (an approval not collected in time has lapsed).
        A pending decision whose agent stopped waiting is taken back by this call (its rejoin deadline goes), by a
        compare-and-set against the timer that would end it: if the timer won, the next match is looked for.
        """
        while True:
            found = await session.scalar(
                select(Decision)
                .where(
                    *same_call(grant, server, tool, args_sha256, policy_version, acting_for=acting_for),
                    col(Decision.claimed_at).is_(None),
                    or_(col(Decision.status) == PENDING, col(Decision.collect_by) > now),
                )
                .order_by(col(Decision.created_at).desc())
                .limit(1)
            )
            if found is None or found.status != PENDING or found.withdrawn_at is None:
                return found
            rejoined = await session.scalars(
                update(Decision)
                .where(col(Decision.id) == found.id, col(Decision.status) == PENDING)
                .values(withdrawn_at=None, rejoin_by=None)
                .returning(Decision),
                execution_options=RETURNING_ROWS,
            )
            decision = rejoined.one_or_none()
            if decision is not None:
                logger.info(
                    "decision %s: the agent called again and waits on it",
                    decision.id,
                    extra={"decision_id": decision.id},
                )
                return decision


def _with_previous_attempt(reason: str | None, previous: Decision | None) -> str | None:
    """The rule's reason, preceded (for the approvers) by a warning that an earlier approved run may have run."""
    if previous is None:
        return reason
    warning = (
        f"previous attempt {previous.id} may have run (outcome {previous.outcome}): approve only if running it "
        "again is intended"
    )
    return f"{warning}. {reason}" if reason else warning
