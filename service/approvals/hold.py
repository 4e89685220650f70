"""The hold point: a `require_approval` call waits here until its decision ends.

`ApprovalGate` is what the gateway calls (`service.gateway.proxy.ApprovalHold`). It opens or joins
the decision for the call, then waits on the bus:

- the client sent a progress token → wait as long as the decision takes, reporting progress every
  `progress_interval` seconds ("waiting for approval by ops (decision d_…, expires 12:45:00Z)");
- no progress token → wait up to `hold_bound` seconds (below the ~60 s most clients allow), then
  answer "approval pending" with the decision id and expiry; the same call again joins it.

A held call costs an asyncio event and a few objects, so thousands can wait at once. When the
client cancels, the decision becomes `cancelled` (unless other calls in this process still wait
on it, or the service itself is shutting down — then it stays pending and survives the restart).

A retry of a call whose approved release was already claimed never runs it again on that approval
(`_earlier_run`): it waits for a run in flight, gets the stored result of a finished one, or is told that the
run may have happened, and a new decision asks the approvers again, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from service.approvals.bus import DecisionBus
from service.approvals.service import (
    CLAIM_WITHIN_S,
    FINISHED,
    RESULT_LIMIT_BYTES,
    ApprovalError,
    ApprovalService,
    approvers_of,
    iso,
)
from service.gateway.proxy import HoldOutcome, PolicySource, ToolCall, progress_token_of
from service.models import Decision
from service.policy import canonical_sha256

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from service.policy import Verdict

logger = logging.getLogger(__name__)

DB_SLOTS = 8
"""Held calls that touch the database at once, opening a decision or re-reading one after a wake-up (below
the pool's 5 + 10 connections): a burst of thousands then queues here, with no deadline, instead of
waiting for a pooled connection, which gives up after 30 s and fails the call."""


class ApprovalGate:
    def __init__(
        self,
        service: ApprovalService,
        bus: DecisionBus,
        policy: PolicySource,
        *,
        progress_interval: float,
        hold_bound: float,
    ) -> None:
        self.service = service
        self.bus = bus
        self.policy = policy
        self.progress_interval = progress_interval
        self.hold_bound = hold_bound
        self.closing = False
        self._open_locks: dict[tuple[str, str, str, str], tuple[asyncio.Lock, int]] = {}
        self._db_slots = asyncio.Semaphore(DB_SLOTS)
        self._background: set[asyncio.Task[Any]] = set()

    def begin_shutdown(self) -> None:
        """From now on a call that goes away leaves its decision pending (it survives the restart)."""
        self.closing = True

    async def hold(self, call: ToolCall, verdict: Verdict, ctx: ServerRequestContext) -> HoldOutcome:
        earlier = await self._earlier_run(call, verdict, ctx)
        if earlier is not None:
            return earlier
        decision = await self._open(call, verdict)
        token = progress_token_of(ctx)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with self.bus.subscribe(decision.id) as changed:
            try:
                claimed = await self._take(decision.id) if decision.status != "pending" else None
                while claimed is None:
                    # Only the bus wakes a held call (a commit here, LISTEN/NOTIFY, or the bus's poll
                    # for other processes): waiting costs no database work, however many wait.
                    if token is None:
                        remaining = started + self.hold_bound - loop.time()
                        if remaining <= 0:
                            return _outcome(decision, "pending", pending_message(decision))
                        timeout = remaining
                    else:
                        timeout = self.progress_interval
                    try:
                        await asyncio.wait_for(changed.wait(), timeout)
                    except TimeoutError:
                        if token is not None:
                            await ctx.session.report_progress(loop.time() - started, None, waiting_message(decision))
                        continue
                    changed.clear()
                    claimed = await self._take(decision.id)
            except asyncio.CancelledError:
                self._withdraw(decision.id)
                raise
            finally:
                if self.bus.waiting(decision.id) == 1:  # this call is the last one here waiting on it
                    self.service.forget_handoff(decision.id)
        return self._ending(*claimed)

    async def sending(self, decision_id: str) -> bool:
        return await self.service.mark_sending(decision_id)

    async def unsent(self, decision_id: str) -> None:
        await self.service.release_unsent(decision_id)

    async def executed(
        self,
        decision_id: str,
        *,
        outcome: str,
        detail: str | None,
        duration_ms: float,
        result: dict[str, Any] | None = None,
    ) -> None:
        await self.service.record_execution(
            decision_id, outcome=outcome, detail=detail, duration_ms=duration_ms, result=result
        )

    async def _earlier_run(self, call: ToolCall, verdict: Verdict, ctx: ServerRequestContext) -> HoldOutcome | None:
        """A retry of a call whose approved release was claimed: what it gets instead of a second run.

        A run in flight (here, on another replica, or by a holder whose lease has not expired yet) is waited
        for, like a pending decision; a finished one's stored result is given again; one that may have run
        (outcome unknown, or sent and failed) is not run again on that approval: the retry is told so, and a
        new decision asks the approvers, naming the earlier attempt.
        """
        # The rule's `approval.claim_within` (`ApprovalSpec.claim_within_seconds`, branch `policy`); the default
        # until that is merged. TODO(policy): read the attribute directly once it exists here.
        within: float = getattr(verdict.approval, "claim_within_seconds", CLAIM_WITHIN_S)
        digest = canonical_sha256(call.arguments)
        token = progress_token_of(ctx)
        loop = asyncio.get_running_loop()
        started = reported = loop.time()
        deadline = started + self.hold_bound if token is None else math.inf
        while True:
            async with self._db_slots:
                earlier = await self.service.earlier_run(
                    grant=call.grant,
                    server=call.server,
                    tool=call.tool,
                    args_sha256=digest,
                    policy_version=self.policy.current.version,
                    within_s=within,
                )
            if earlier is None:
                return None
            if earlier.outcome in FINISHED:
                if earlier.result is not None:
                    return HoldOutcome(earlier.id, "replayed", result=json.loads(earlier.result))
                return _outcome(earlier, "ran", ran_message(earlier))
            if earlier.outcome is not None:
                decision = await self._open(call, verdict, previous_attempt=earlier)
                return _outcome(earlier, "may_have_run", may_have_run_message(earlier, decision))
            # In flight: its outcome, or its lease's expiry (then `ClaimLeases` reconciles it), wakes us.
            with self.bus.subscribe(earlier.id) as changed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _outcome(earlier, "running", running_message(earlier))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
            if token is not None and loop.time() - reported >= self.progress_interval:
                reported = loop.time()
                await ctx.session.report_progress(reported - started, None, running_message(earlier))

    async def _open(self, call: ToolCall, verdict: Verdict, previous_attempt: Decision | None = None) -> Decision:
        # Two identical calls arriving together must share one decision, not ask people twice.
        digest = canonical_sha256(call.arguments)
        key = (call.grant, call.server, call.tool, digest)
        lock, users = self._open_locks.get(key, (asyncio.Lock(), 0))
        self._open_locks[key] = (lock, users + 1)
        try:
            async with lock, self._db_slots:
                decision, _created = await self.service.open_or_join(
                    grant=call.grant,
                    server=call.server,
                    tool=call.tool,
                    arguments=call.arguments,
                    args_sha256=digest,
                    verdict=verdict,
                    policy_version=self.policy.current.version,
                    previous_attempt=previous_attempt,
                )
        finally:
            lock, users = self._open_locks[key]
            if users == 1:
                del self._open_locks[key]
            else:
                self._open_locks[key] = (lock, users - 1)
        return decision

    async def _take(self, decision_id: str) -> tuple[Decision, bool] | None:
        """After a wake-up: (the ended decision, whether this call claimed it), or None if still pending.

        One compare-and-set in the common case, shared with the other calls waking at the same moment
        (group commit); the rarer re-read has bounded concurrency, so a mass wake-up queues here
        instead of exhausting the connection pool.
        """
        claimed = await self.service.claim(decision_id)
        if claimed is not None:
            return claimed, True
        async with self._db_slots:
            current = await self.service.load(decision_id)
        return None if current.status == "pending" else (current, False)

    def _ending(self, decision: Decision, claimed: bool) -> HoldOutcome:
        """Say what happened to this call's decision."""
        if decision.status == "approved":
            if not claimed:
                return _outcome(
                    decision,
                    "already_released",
                    f"holdgate: decision {decision.id} was approved, but its one release went to another "
                    f"identical call of {decision.tool}; this call was not run. Call again to ask for a new approval.",
                )
            return _outcome(decision, "approved")
        return _outcome(decision, decision.status, ending_message(decision))

    def _withdraw(self, decision_id: str) -> None:
        """The client went away: cancel the decision (in the background: this task is being cancelled)."""
        if self.closing or self.bus.waiting(decision_id) > 1:
            return
        task = asyncio.get_running_loop().create_task(self._cancel(decision_id), name=f"cancel:{decision_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, decision_id: str) -> None:
        try:
            await self.service.transition(
                decision_id, "cancelled", by="client", via="mcp", reason="the calling client cancelled or went away"
            )
        except ApprovalError:
            pass  # decided meanwhile: that ending stands
        except Exception:
            logger.exception("could not mark decision %s cancelled", decision_id)


def approver_names(decision: Decision) -> str:
    return ", ".join(a["name"] for a in approvers_of(decision)) or "the local operator"


def waiting_message(decision: Decision) -> str:
    expires = iso(decision.expires_at)
    return f"waiting for approval by {approver_names(decision)} (decision {decision.id}, expires {expires})"


def pending_message(decision: Decision) -> str:
    return (
        f"holdgate: approval pending for {decision.server}/{decision.tool} — decision {decision.id}, waiting for "
        f"{approver_names(decision)}, expires {iso(decision.expires_at)}. The call was not run yet. Call "
        f"{decision.tool} again with the same arguments to pick up this decision (it will not ask again)."
    )


def ending_message(decision: Decision) -> str:
    call = f"{decision.server}/{decision.tool}"
    if decision.status == "denied":
        return (
            f"holdgate: {call} was denied by {decision.decided_by} (decision {decision.id}): "
            f"{decision.decision_reason}. The call was not run."
        )
    if decision.status == "expired":
        return (
            f"holdgate: approval for {call} expired at {iso(decision.expires_at)} with no decision "
            f"(decision {decision.id}); the call was not run. This is a timeout, not a person's denial."
        )
    return f"holdgate: decision {decision.id} for {call} was cancelled (the calling client went away); not run."


def ran_message(decision: Decision) -> str:
    return (
        f"holdgate: {decision.server}/{decision.tool} already ran once on approval {decision.id} "
        f"(outcome {decision.outcome} at {iso(decision.outcome_at or decision.claimed_at or 0)}); its result was "
        f"over {RESULT_LIMIT_BYTES // 1024} KiB, too large to keep, so it cannot be given again. The call was not "
        "run again."
    )


def may_have_run_message(earlier: Decision, decision: Decision) -> str:
    how = (
        "its outcome is unknown (the gateway process sending it stopped)"
        if earlier.outcome == "unknown"
        else f"it ended {earlier.outcome}"
    )
    return (
        f"holdgate: the approved call of decision {earlier.id} ({earlier.server}/{earlier.tool}) may have run: it "
        f"was sent upstream and {how}. It was not run again. A new approval was requested as decision {decision.id}, "
        f"telling {approver_names(decision)} that {earlier.id} may have run; call {earlier.tool} again with the same "
        "arguments to wait for it."
    )


def running_message(decision: Decision) -> str:
    return (
        f"holdgate: the approved call of decision {decision.id} ({decision.server}/{decision.tool}) is running; it "
        f"was not run a second time. Call {decision.tool} again with the same arguments for its result."
    )


def _outcome(decision: Decision, ending: str, message: str = "") -> HoldOutcome:
    return HoldOutcome(decision_id=decision.id, ending=ending, message=message)
