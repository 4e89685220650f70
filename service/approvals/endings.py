"""How a decision ends with nobody voting, and the deadlines that lead there.

- `expire`: its timeout (expired, or approved where the rule says `on_timeout: approve`);
- `remind`: the reminder before the timeout, once;
- `withdraw` / `end_unrejoined`: the last call waiting on it went away; it stays pending, and, when the client
  cancelled, ends `cancelled` at `rejoin_by` unless the same call comes again;
- `lapse`: an approval no call collected by `collect_by` can never run.

Each is a compare-and-set (through `transition` where the status changes), so a timer, the periodic sweep and a
replica doing the same can race and it happens once. The `…_ids` reads are what the sweep and the start-up
(`service.approvals.timeouts`) look for.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlmodel import col

from service.approvals.errors import ApprovalError
from service.approvals.notices import announce, announce_opened, enqueue_notifications
from service.approvals.states import LAPSED, PENDING, Transitions
from service.approvals.timestamps import iso
from service.db import RETURNING_ROWS, session_scope
from service.models import Decision

logger = logging.getLogger(__name__)


class Endings(Transitions):
    # -- timeouts and reminders -------------------------------------------------------------------

    async def expire(self, decision_id: str) -> Decision | None:
        """The timeout: expired (or approved, only when the rule says `on_timeout: approve`)."""
        async with session_scope(self.sessions) as session:
            # SKIP LOCKED: when replicas sweep together, each overdue row is handled by one of them.
            decision = await session.scalar(
                select(Decision).where(col(Decision.id) == decision_id).with_for_update(skip_locked=True)
            )
            if decision is None or decision.status != PENDING:
                return None
            deadline = iso(decision.expires_at)
            try:
                if decision.on_timeout == "approve":
                    decision = await self.transition(
                        decision_id,
                        "approved",
                        by="timeout",
                        via="timeout",
                        reason=f"no decision by {deadline}; the rule approves on timeout",
                        session=session,
                        due_only=True,
                    )
                else:
                    decision = await self.transition(
                        decision_id,
                        "expired",
                        by="timeout",
                        via="timeout",
                        reason=f"no decision by {deadline}",
                        session=session,
                        due_only=True,
                    )
            except ApprovalError:
                return None
        self._notify(decision)
        return decision

    async def overdue_ids(self) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(col(Decision.id)).where(
                    col(Decision.status) == PENDING, col(Decision.expires_at) <= self.clock()
                )
            )
            return list(rows)

    async def remind(self, decision_id: str) -> bool:
        """Send the reminder once (compare-and-set on `reminded_at`)."""
        now = self.clock()
        async with session_scope(self.sessions) as session:
            # An UPDATE without RETURNING gives a CursorResult (with `rowcount`); `execute` is typed for any statement.
            result = cast(
                CursorResult[Any],
                await session.execute(
                    update(Decision)
                    .where(
                        col(Decision.id) == decision_id,
                        col(Decision.status) == PENDING,
                        col(Decision.remind_at) <= now,
                        col(Decision.reminded_at).is_(None),
                    )
                    .values(reminded_at=now)
                ),
            )
            if result.rowcount != 1:
                return False
            decision = await self._load(session, decision_id)
            await enqueue_notifications(session, [decision], "reminder", now)
        self._notify(decision)
        return True

    async def reminder_ids_due(self) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(col(Decision.id)).where(
                    col(Decision.status) == PENDING,
                    col(Decision.remind_at) <= self.clock(),
                    col(Decision.reminded_at).is_(None),
                )
            )
            return list(rows)

    # -- waits withdrawn, approvals that lapse ----------------------------------------------------

    async def withdraw(self, decision_id: str, *, cancelled: bool) -> Decision | None:
        """The last call waiting on a pending decision went away; the decision stays pending ("the agent
        stopped waiting"). `cancelled` (the client cancelled its request): it ends `cancelled` at `rejoin_by`
        unless the same call comes again before. Otherwise (the client's stream closed, which is no cancel on
        2025-11-25) it waits for its people as before. Returns the decision, or None when it was not pending."""
        now = self.clock()
        values: dict[str, Any] = {"withdrawn_at": now}
        if cancelled:
            values["rejoin_by"] = now + col(Decision.rejoin_within_s)
        async with session_scope(self.sessions) as session:
            decision = (
                await session.scalars(
                    update(Decision)
                    .where(col(Decision.id) == decision_id, col(Decision.status) == PENDING)
                    .values(**values)
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            ).one_or_none()
            if decision is not None:
                # No channel update: channels treat an `update` as the ending (email mails one follow-up only).
                # Announced as still pending (with its deadlines), so no replica drops its timers as for an ending.
                await announce_opened(session, [decision])
        if decision is not None:
            logger.info(
                "decision %s: the agent stopped waiting (%s)%s",
                decision.id,
                "cancelled its call" if cancelled else "its stream closed",
                f"; it ends cancelled at {iso(decision.rejoin_by)} unless the call comes again"
                if decision.rejoin_by is not None
                else "",
            )
            self._notify(decision)
        return decision

    async def end_unrejoined(self, decision_id: str) -> Decision | None:
        """A withdrawn wait that nobody took back within `rejoin_within`: the decision ends `cancelled`."""
        try:
            decision = await self.transition(
                decision_id,
                "cancelled",
                by="client",
                via="mcp",
                reason="the agent stopped waiting and did not call again in time",
                rejoin_due=True,
            )
        except ApprovalError:
            return None  # decided meanwhile, taken back by a retry, or not due yet: nothing to do
        self.audit_event(decision, "cancelled", decision.decision_reason or "")
        return decision

    async def lapse(self, decision_id: str) -> Decision | None:
        """An approval no call collected by `collect_by` lapses: it can never run (outcome `lapsed`); the same
        call again opens a new decision. A compare-and-set against `claim`, so the approval runs or lapses, once."""
        now = self.clock()
        async with session_scope(self.sessions) as session:
            decision = (
                await session.scalars(
                    update(Decision)
                    .where(
                        col(Decision.id) == decision_id,
                        col(Decision.status) == "approved",
                        col(Decision.claimed_at).is_(None),
                        col(Decision.collect_by) <= now,
                    )
                    .values(
                        claimed_at=now,
                        outcome=LAPSED,
                        outcome_detail="no call collected the approval in time; it was not run",
                        outcome_at=now,
                        edited_arguments=None,  # an edit's whole arguments are kept only until the release settles
                    )
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            ).one_or_none()
            if decision is None:
                return None
            await enqueue_notifications(session, [decision], "update", now)
            await announce(session, [decision.id])
        reason = f"approval not collected by {iso(decision.collect_by or now)} (claim_within); the call was not run"
        logger.info("decision %s: %s", decision.id, reason)
        self.audit_event(decision, LAPSED, reason)
        self._notify(decision)
        return decision

    async def rejoin_due_ids(self) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(col(Decision.id)).where(col(Decision.status) == PENDING, col(Decision.rejoin_by) <= self.clock())
            )
            return list(rows)

    async def lapse_due_ids(self) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(col(Decision.id)).where(
                    col(Decision.status) == "approved",
                    col(Decision.claimed_at).is_(None),
                    col(Decision.collect_by) <= self.clock(),
                )
            )
            return list(rows)

    async def uncollected(self) -> list[Decision]:
        """Approved decisions no call has collected yet (their lapse timers, at start-up)."""
        async with self.sessions() as session:
            return list(
                await session.scalars(
                    select(Decision).where(col(Decision.status) == "approved", col(Decision.claimed_at).is_(None))
                )
            )

    async def pending(self) -> list[Decision]:
        async with self.sessions() as session:
            return list(await session.scalars(select(Decision).where(col(Decision.status) == PENDING)))
