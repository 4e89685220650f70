"""Releasing an ended decision to exactly one call: claim, send, record, and give back what was not used.

An approved decision releases exactly one call: `claim` sets `claimed_at` by compare-and-set, and only the call
that wins it may run. A denied or expired decision's ending is claimed the same way by the call that reports it,
so a retry of the same call gets that ending once and a later retry opens a new decision. An ending decided here
for a call waiting here was already claimed in the deciding transaction and comes from memory
(`service.approvals.handoff`).

The claim of an approved call is a lease (`claim_holder`, `lease_until`) that this process renews while the call
runs (`renew_leases`, ticked by `service.approvals.leases`). `mark_sending` records, by compare-and-set on the
lease, the moment the call leaves for the upstream; `record_execution` keeps its outcome and (bounded) result.
When a holder dies, `reconcile` (any replica, on its lease tick) gives an expired claim with no "sending" mark
back (approved and uncollected, for `claim_within` at least: the next identical call runs it; `_give_back` is the
one writer of a give-back), and marks one with "sending" but no outcome `outcome: unknown` (it may have run; only
a new approval runs it again). `earlier_run` is what a retry of a claimed call finds: its stored result, its run in
flight, or word that it may have run.

Claims, "sending" marks and executions that arrive together (a bulk approval releases thousands of calls) share
one transaction each (`GroupCommit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, case, or_, select, update
from sqlmodel import col

from service.approvals.batching import GroupCommit
from service.approvals.core import DecisionCore
from service.approvals.notices import announce, enqueue_notifications
from service.approvals.queries import same_call
from service.approvals.states import NOT_RUN, PENDING, UNKNOWN
from service.db import RETURNING_ROWS, session_scope
from service.models import Decision

logger = logging.getLogger(__name__)

RESULT_LIMIT_BYTES = 64 * 1024
"""The largest result kept for a retry; past it, the retry is told the call ran and how it ended."""
FINISHED = ("ok", "tool_error")
"""Outcomes of a run the upstream answered: their result is kept for a retry. Any other outcome (unknown,
upstream_failure, protocol_error, cancelled) means the call was sent and may have run."""


@dataclass(frozen=True, slots=True)
class _Execution:
    decision_id: str
    outcome: str
    detail: str | None
    duration_ms: float
    result: str | None


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What `reconcile` settled: claims given back (collectable again) and calls of unknown outcome."""

    released: list[Decision]
    unknown: list[Decision]


class Release(DecisionCore):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._claims: GroupCommit[str, Decision | None] = GroupCommit(self._claim_batch)
        self._sendings: GroupCommit[str, bool] = GroupCommit(self._mark_sending_batch)
        self._executions: GroupCommit[_Execution, None] = GroupCommit(self._record_execution_batch)
        self._running: set[str] = set()
        """Approved calls this process claimed and has not finished: the leases `renew_leases` keeps alive."""
        self._background: set[asyncio.Task[Any]] = set()

    # -- claim ------------------------------------------------------------------------------------

    async def claim(self, decision_id: str) -> Decision | None:
        """Take an ended decision's ending for this call; None if it is pending or another call took it.

        An ending decided in this process while the call waited was claimed for it in that transaction:
        the first waiter to ask takes it from memory. Other claims that arrive together (a bulk approval
        decided elsewhere waking many held calls) share one transaction. The claim of an approved call is a
        lease of this process, renewed until its outcome is recorded (`record_execution`) or it is handed back
        (`release_unsent`).
        """
        handed = await self.handoff.take(decision_id)
        claimed = handed if handed is not None else await self._claims.submit(decision_id)
        if claimed is not None and claimed.status == "approved":
            self._running.add(decision_id)
        return claimed

    def forget_handoff(self, decision_id: str) -> None:
        """The last call waiting on `decision_id` went away: drop an ending claimed for it, if any.

        Its call is not run; the ending is given back (`give_back_ending`) at once, not at its lease's expiry:
        the same call coming again collects it.
        """
        self.handoff.forget(decision_id)

    async def _claim_batch(self, decision_ids: Sequence[str]) -> list[Decision | None]:
        """One compare-and-set for every claim of the moment; the winners come back from its RETURNING."""
        now = self.clock()
        async with session_scope(self.sessions) as session:
            rows = {
                d.id: d
                for d in await session.scalars(
                    update(Decision)
                    .where(
                        col(Decision.id).in_(set(decision_ids)),
                        col(Decision.status) != PENDING,
                        col(Decision.claimed_at).is_(None),
                        col(Decision.collect_by) > now,  # an ending not collected in time has lapsed
                    )
                    .values(claimed_at=now, claim_holder=self.holder, lease_until=now + self.lease_s)
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            }
        answers: list[Decision | None] = []
        for decision_id in decision_ids:  # one winner per decision, even if two of its waiters asked at once
            answers.append(rows.pop(decision_id, None))
        return answers

    # -- sending and its outcome ------------------------------------------------------------------

    async def mark_sending(self, decision_id: str) -> bool:
        """Record, durably, that the claimed call leaves for the upstream now; False if this process lost its claim.

        The last step before the send, after the upstream session is ready. A compare-and-set on the lease: it
        and `reconcile` exclude each other, so a claim given back after a lapse is never also sent from here.
        The marks of calls released together share one transaction (a bulk approval releases thousands).
        """
        if await self._sendings.submit(decision_id):
            return True
        self._running.discard(decision_id)
        logger.warning("decision %s: this process no longer holds its release; the call was not sent", decision_id)
        return False

    async def _mark_sending_batch(self, decision_ids: Sequence[str]) -> list[bool]:
        now = self.clock()
        async with session_scope(self.sessions) as session:
            marked = set(
                await session.scalars(
                    update(Decision)
                    .where(
                        col(Decision.id).in_(set(decision_ids)),
                        col(Decision.status) == "approved",
                        col(Decision.claim_holder) == self.holder,
                        col(Decision.sending_at).is_(None),
                        col(Decision.outcome).is_(None),
                    )
                    .values(sending_at=now, lease_until=now + self.lease_s)
                    .returning(col(Decision.id)),
                    execution_options={"synchronize_session": False},
                )
            )
        answers = []
        for decision_id in decision_ids:  # one mark per decision, even if asked twice in a batch
            answers.append(decision_id in marked)
            marked.discard(decision_id)
        return answers

    async def record_execution(
        self,
        decision_id: str,
        *,
        outcome: str,
        detail: str | None,
        duration_ms: float,
        result: dict[str, Any] | None = None,
    ) -> None:
        """How the released call went upstream (once; channels show it on the request), and its result for a
        retry that lost the answer (kept up to `RESULT_LIMIT_BYTES`)."""
        stored = None
        if result is not None and outcome in FINISHED:
            stored = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
            if len(stored.encode()) > RESULT_LIMIT_BYTES:
                stored = None
        try:
            await self._executions.submit(_Execution(decision_id, outcome, detail, duration_ms, stored))
        finally:
            self._running.discard(decision_id)

    async def _record_execution_batch(self, executions: Sequence[_Execution]) -> list[None]:
        """Every execution of the moment in one UPDATE (CASE on the id), once per decision.

        An outcome replaces only none or `unknown` (a holder thought dead that did finish knows better).
        """
        now = self.clock()
        first: dict[str, _Execution] = {}
        for execution in executions:
            first.setdefault(execution.decision_id, execution)

        def by_id(column: str) -> Any:
            return case({i: getattr(e, column) for i, e in first.items()}, value=col(Decision.id))

        async with session_scope(self.sessions) as session:
            recorded = list(
                await session.scalars(
                    update(Decision)
                    .where(
                        col(Decision.id).in_(first),
                        col(Decision.status) == "approved",
                        or_(col(Decision.outcome).is_(None), col(Decision.outcome) == UNKNOWN),
                    )
                    .values(
                        outcome=by_id("outcome"),
                        outcome_detail=by_id("detail"),
                        duration_ms=by_id("duration_ms"),
                        result=by_id("result"),
                        outcome_at=now,
                        lease_until=None,
                        edited_arguments=None,  # an edit's whole arguments are kept only until its run is recorded
                    )
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            )
            await enqueue_notifications(session, recorded, "update", now)
        for decision in recorded:
            self._notify(decision)
        return [None] * len(executions)

    async def refuse_release(self, decision_id: str, *, outcome: str, detail: str) -> Decision | None:
        """The claimed call is not run: the policy, checked at its release (`service.approvals.recheck`), now denies
        it (`policy_denied`) or asks another rule's approval for it (`policy_changed`). Recorded once, by
        compare-and-set on this process's claim of a call not yet sent; channels and listeners hear of it."""
        self._running.discard(decision_id)
        now = self.clock()
        async with session_scope(self.sessions) as session:
            refused = list(
                await session.scalars(
                    update(Decision)
                    .where(
                        col(Decision.id) == decision_id,
                        col(Decision.status) == "approved",
                        col(Decision.claim_holder) == self.holder,
                        col(Decision.sending_at).is_(None),
                        col(Decision.outcome).is_(None),
                    )
                    .values(
                        outcome=outcome, outcome_detail=detail, outcome_at=now, lease_until=None, edited_arguments=None
                    )
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            )
            await enqueue_notifications(session, refused, "update", now)
            await announce(session, [d.id for d in refused])
        for decision in refused:
            logger.info("decision %s: approved, but not run at its release (%s): %s", decision.id, outcome, detail)
            self._notify(decision)
        return refused[0] if refused else None

    # -- leases -----------------------------------------------------------------------------------

    async def renew_leases(self) -> int:
        """Extend the lease of every call this process is running; how many it still holds."""
        running = list(self._running)
        if not running:
            return 0
        now = self.clock()
        async with session_scope(self.sessions) as session:
            result = cast(
                CursorResult[Any],
                await session.execute(
                    update(Decision)
                    .where(
                        col(Decision.id).in_(running),
                        col(Decision.claim_holder) == self.holder,
                        col(Decision.outcome).is_(None),
                    )
                    .values(lease_until=now + self.lease_s)
                ),
            )
        return int(result.rowcount or 0)

    async def reconcile(self, decision_ids: Sequence[str] | None = None) -> Reconciled:
        """Settle approved claims whose holder stopped renewing (all, or `decision_ids`), once across replicas.

        No "sending" mark: the call never left, so the claim is given back (approved, uncollected). A "sending"
        mark and no outcome: `outcome: unknown`, shown everywhere and audited (`audit_event`).
        """
        now = self.clock()
        expired = [col(Decision.status) == "approved", col(Decision.outcome).is_(None), col(Decision.lease_until) < now]
        if decision_ids is not None:
            expired.append(col(Decision.id).in_(decision_ids))
        released = await self._give_back(expired, "its holder stopped before sending it", after_crash=True)
        detail = "the gateway process sending this call stopped before its outcome was recorded; it may have run"
        async with session_scope(self.sessions) as session:
            unknown = list(
                await session.scalars(
                    update(Decision)
                    .where(*expired, col(Decision.sending_at).is_not(None))
                    .values(
                        outcome=UNKNOWN, outcome_detail=detail, outcome_at=now, lease_until=None, edited_arguments=None
                    )
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            )
            await enqueue_notifications(session, unknown, "update", now)
            await announce(session, [d.id for d in unknown])
        for decision in unknown:
            logger.warning("decision %s: outcome unknown (%s)", decision.id, detail)
            # Audited here: the record of the process that sent the call died with it.
            self.audit_event(decision, "approved", "outcome unknown")
            self._notify(decision)
        return Reconciled(released=released, unknown=unknown)

    # -- giving back ------------------------------------------------------------------------------

    async def release_unsent(self, decision_id: str) -> None:
        """The claimed call was never sent (the upstream could not be reached, the client left): give the claim
        back, so the next identical call runs it without a second approval."""
        self._running.discard(decision_id)
        await self._give_back(
            [col(Decision.id) == decision_id, col(Decision.claim_holder) == self.holder], "its call could not be sent"
        )

    async def give_back_ending(self, decision_id: str) -> bool:
        """An ending claimed for a call that went away before using it (its client left, or the service is
        restarting): unclaimed again at once, so the same call coming back within `collect_by` collects it.
        Nothing ran; an approval is never spent on nobody."""
        self._running.discard(decision_id)
        given = await self._give_back([col(Decision.id) == decision_id], "its call went away before running")
        return bool(given)

    def give_back_ending_later(self, decision_id: str) -> None:
        """`give_back_ending` from code that cannot wait (a cancelled task, a listener)."""
        task = asyncio.get_running_loop().create_task(
            self._give_back_ending_logged(decision_id), name=f"give-back:{decision_id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _give_back_ending_logged(self, decision_id: str) -> None:
        try:
            await self.give_back_ending(decision_id)
        except Exception:  # the claim stays: fail closed (the call does not run), and say so
            logger.exception("decision %s: could not give back the ending of a call that went away", decision_id)

    async def _give_back(self, conditions: list[Any], why: str, *, after_crash: bool = False) -> list[Decision]:
        """The one writer that gives a claim back: the ended decisions matching `conditions` whose call never left
        (no "sending" mark, no outcome) are unclaimed (no holder, no lease), so the same call coming again within
        `collect_by` collects the ending; announced to the replicas, and the listeners are told.

        `after_crash` (`reconcile`: the holder died): the lapse deadline is at least `claim_within` from now, so an
        approval whose holder died close to its `collect_by` does not lapse at once; nobody left it uncollected.
        """
        now = self.clock()
        values: dict[str, Any] = {"claimed_at": None, "claim_holder": None, "lease_until": None}
        if after_crash:
            grace = now + col(Decision.claim_within_s)
            values["collect_by"] = case((col(Decision.collect_by) > grace, col(Decision.collect_by)), else_=grace)
        async with session_scope(self.sessions) as session:
            released = list(
                await session.scalars(
                    update(Decision)
                    .where(
                        *conditions,
                        col(Decision.status).in_(("approved", "denied", "expired")),
                        col(Decision.claimed_at).is_not(None),
                        col(Decision.sending_at).is_(None),
                        col(Decision.outcome).is_(None),
                    )
                    .values(**values)
                    .returning(Decision),
                    execution_options=RETURNING_ROWS,
                )
            )
            await announce(session, [d.id for d in released])
        for decision in released:
            logger.log(
                logging.WARNING if after_crash else logging.INFO,
                "decision %s: its claim was given back (%s); the same call again collects its ending",
                decision.id,
                why,
            )
            self._notify(decision)
        return released

    # -- a retry of a claimed call ----------------------------------------------------------------

    async def earlier_run(
        self,
        *,
        grant: str,
        server: str,
        tool: str,
        args_sha256: str,
        policy_version: str,
        within_s: float,
        acting_for: str | None = None,
    ) -> Decision | None:
        """The newest decision of this call, if it is an approved one whose release was claimed (running, finished
        within `within_s`, or of unknown outcome within `within_s`): what a retry of the call must not run again."""
        async with self.sessions() as session:
            latest = await session.scalar(
                select(Decision)
                .where(*same_call(grant, server, tool, args_sha256, policy_version, acting_for=acting_for))
                .order_by(col(Decision.created_at).desc())
                .limit(1)
            )
        if latest is None or latest.status != "approved" or latest.claimed_at is None or latest.outcome in NOT_RUN:
            return None  # not approved, not claimed, or it never ran (lapsed, or refused by the policy at release)
        if latest.outcome is not None and (latest.outcome_at or 0) < self.clock() - within_s:
            return None
        return latest
