"""The hold point: a `require_approval` call waits here until its decision ends.

`ApprovalGate` is what the gateway calls (`service.gateway.proxy.ApprovalHold`). It opens or joins
the decision for the call, then waits on the bus:

- the client sent a progress token → wait as long as the decision takes, reporting progress every
  `progress_interval` seconds ("waiting for approval by ops (decision d_…, expires 12:45:00Z)");
- no progress token → wait up to `hold_bound` seconds (below the ~60 s most clients allow), then
  answer "approval pending" with the decision id and expiry; the same call again joins it.

A held call costs an asyncio event and a few objects, so thousands can wait at once. A call is
never run for a client that has gone, and its approval is never spent on nobody:

- the client cancels (`notifications/cancelled`; on 2026-07-28, closing its stream) → it withdraws its
  wait, not the request: the decision stays pending ("the agent stopped waiting") for the rule's
  `rejoin_within`; the same call again joins it; after that the decision ends `cancelled`;
- the client's stream closes on 2025-11-25 (no cancellation there, but a stream of this gateway cannot
  be resumed) → the call stops waiting and is not run; the decision goes on; its ending waits for the
  same call again (an approval, within `claim_within`, then it lapses);
- the service stops → every held call is answered at once "holdgate is restarting; call again to join
  d_…", its decision stays pending, and a retry after the restart joins it.

A retry of a call whose approved release was already claimed never runs it again on that approval
(`_earlier_run`): it waits for a run in flight, gets the stored result of a finished one (within the rule's
`claim_within`), or is told that the run may have happened, and a new decision asks the approvers again,
saying so. An approval that lapsed never ran: the same call again simply asks anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from service.approvals import FINISHED, RESULT_LIMIT_BYTES, ApprovalService, approvers_of, iso
from service.approvals.bus import DecisionBus
from service.gateway.downstream_http import stream_watch
from service.gateway.proxy import HoldOutcome, PolicySource, ToolCall, progress_token_of
from service.models import Decision
from service.policy import ApprovalSpec
from service.policy.redaction import bounded_text, storable_text

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from service.audit.keys import ArgsDigester
    from service.policy import Verdict

logger = logging.getLogger(__name__)

DB_SLOTS = 8
"""Held calls that touch the database at once, opening a decision or re-reading one after a wake-up (below
the pool's 5 + 10 connections): a burst of thousands then queues here, with no deadline, instead of
waiting for a pooled connection, which gives up after 30 s and fails the call."""

NAME_CHARS: int = Decision.__table__.c.tool.type.length  # type: ignore[attr-defined]
"""The length of the decisions table's grant, server and tool columns (200)."""


class ApprovalGate:
    def __init__(
        self,
        service: ApprovalService,
        bus: DecisionBus,
        policy: PolicySource,
        *,
        progress_interval: float,
        hold_bound: float,
        args_digest: ArgsDigester,
    ) -> None:
        self.service = service
        self.args_digest = args_digest
        self.bus = bus
        self.policy = policy
        self.progress_interval = progress_interval
        self.hold_bound = hold_bound
        self.closing = False
        self._open_locks: dict[tuple[str, str, str, str], tuple[asyncio.Lock, int]] = {}
        self._db_slots = asyncio.Semaphore(DB_SLOTS)
        self._background: set[asyncio.Task[Any]] = set()

    def begin_shutdown(self) -> None:
        """The service is stopping: answer every held call now ("holdgate is restarting; call again to join
        d_…") and leave its decision pending, so that the call, made again after the restart, joins it."""
        self.closing = True
        for decision_id in self.bus.waiting_ids():
            self.bus.publish(decision_id)

    async def hold(self, call: ToolCall, verdict: Verdict, ctx: ServerRequestContext) -> HoldOutcome:
        earlier = await self._earlier_run(call, verdict, ctx)
        if earlier is not None:
            return earlier
        decision = await self._open(call, verdict)
        token = progress_token_of(ctx)
        stream = stream_watch(ctx.request)
        loop = asyncio.get_running_loop()
        started = loop.time()

        def leaving() -> bool:
            """Nobody will read this call's answer (its stream closed), or the service is stopping."""
            return self.closing or (stream is not None and stream.closed)

        with self.bus.subscribe(decision.id) as changed:
            if stream is not None:
                stream.on_close(changed.set)
            try:
                claimed = await self._take(decision.id) if decision.status != "pending" else None
                while claimed is None:
                    if leaving():
                        return await self._leave(decision, stream_closed=not self.closing)
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
                    if not leaving():
                        claimed = await self._take(decision.id)
                ended, mine = claimed
                if mine and leaving():
                    # Taken for this call, whose client has gone (or which is answered "restarting"): not run.
                    await self.service.give_back_ending(ended.id)
                    return await self._leave(ended, stream_closed=not self.closing)
            except asyncio.CancelledError:
                self._withdraw(decision.id)
                raise
            finally:
                if self.bus.waiting(decision.id) == 1:  # this call is the last one here waiting on it
                    self.service.forget_handoff(decision.id)
        return self._ending(ended, mine)

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
        stored = storable_text(detail) if detail is not None else None
        await self.service.record_execution(
            decision_id, outcome=outcome, detail=stored, duration_ms=duration_ms, result=result
        )

    async def _earlier_run(self, call: ToolCall, verdict: Verdict, ctx: ServerRequestContext) -> HoldOutcome | None:
        """A retry of a call whose approved release was claimed: what it gets instead of a second run.

        A run in flight (here, on another replica, or by a holder whose lease has not expired yet) is waited
        for, like a pending decision; a finished one's stored result is given again; one that may have run
        (outcome unknown, or sent and failed) is not run again on that approval: the retry is told so, and a
        new decision asks the approvers, naming the earlier attempt.
        """
        within = (verdict.approval or ApprovalSpec(approvers=())).claim_within_seconds  # the rule's claim_within
        grant, server, tool, digest = await self._binding(call)
        token = progress_token_of(ctx)
        stream = stream_watch(ctx.request)
        loop = asyncio.get_running_loop()
        started = reported = loop.time()
        deadline = started + self.hold_bound if token is None else math.inf
        while True:
            async with self._db_slots:
                earlier = await self.service.earlier_run(
                    grant=grant,
                    server=server,
                    tool=tool,
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
            if self.closing or (stream is not None and stream.closed):  # stopping, or nobody reads the answer
                ending = "restarting" if self.closing else "withdrawn"
                return _outcome(earlier, ending, running_message(earlier, restarting=self.closing))
            with self.bus.subscribe(earlier.id) as changed:  # a closed stream is seen within a second
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _outcome(earlier, "running", running_message(earlier))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
            if token is not None and loop.time() - reported >= self.progress_interval:
                reported = loop.time()
                await ctx.session.report_progress(reported - started, None, running_message(earlier))

    async def _binding(self, call: ToolCall) -> tuple[str, str, str, str]:
        """The call as the decisions table keys it: grant, server, tool (bounded as the table holds them: a
        256-character or NUL-bearing tool name still opens one) and the keyed digest of its arguments."""
        digest = await self.args_digest.digest(call.arguments)
        grant, server, tool = (bounded_text(name, NAME_CHARS) for name in (call.grant, call.server, call.tool))
        return grant, server, tool, digest

    async def _open(self, call: ToolCall, verdict: Verdict, previous_attempt: Decision | None = None) -> Decision:
        # Two identical calls arriving together must share one decision, not ask people twice.
        key = grant, server, tool, digest = await self._binding(call)
        lock, users = self._open_locks.get(key, (asyncio.Lock(), 0))
        self._open_locks[key] = (lock, users + 1)
        try:
            async with lock, self._db_slots:
                decision, _created = await self.service.open_or_join(
                    grant=grant,
                    server=server,
                    tool=tool,
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

    async def _leave(self, decision: Decision, *, stream_closed: bool) -> HoldOutcome:
        """This call stops waiting without running: the service is restarting, or the client's stream closed
        (2025-11-25: no cancellation, but nobody can read the answer). The decision goes on."""
        if not stream_closed:
            return _outcome(decision, "restarting", restarting_message(decision))
        if decision.status == "pending" and self.bus.waiting(decision.id) == 1:
            await self.service.withdraw(decision.id, cancelled=False)
        return _outcome(decision, "withdrawn", withdrawn_message(decision))

    def _withdraw(self, decision_id: str) -> None:
        """The client cancelled its request: it withdraws its wait, not the request. The decision stays pending
        for `rejoin_within` (the same call again joins it), then ends cancelled (in the background: this task is
        being cancelled). Not while the service is stopping: a restart must not cancel anything."""
        if self.closing or self.bus.waiting(decision_id) > 1:
            return
        task = asyncio.get_running_loop().create_task(self._cancel(decision_id), name=f"withdraw:{decision_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, decision_id: str) -> None:
        try:
            await self.service.withdraw(decision_id, cancelled=True)
        except Exception:
            logger.exception("could not record that the agent stopped waiting on decision %s", decision_id)


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
    return (
        f"holdgate: decision {decision.id} for {call} was cancelled: the agent stopped waiting and did not call "
        "again in time; the call was not run."
    )


def restarting_message(decision: Decision) -> str:
    return (
        f"holdgate is restarting; call {decision.tool} again with the same arguments to join {decision.id} "
        f"(still {decision.status}; the call was not run)."
    )


def withdrawn_message(decision: Decision) -> str:
    return (
        f"holdgate: the client's stream closed before decision {decision.id} ended; the call was not run. "
        f"Call {decision.tool} again with the same arguments to collect it."
    )


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


def running_message(decision: Decision, *, restarting: bool = False) -> str:
    who = "holdgate is restarting" if restarting else "holdgate"
    return (
        f"{who}: the approved call of decision {decision.id} ({decision.server}/{decision.tool}) is running; it "
        f"was not run a second time. Call {decision.tool} again with the same arguments for its result."
    )


def _outcome(decision: Decision, ending: str, message: str = "") -> HoldOutcome:
    return HoldOutcome(decision_id=decision.id, ending=ending, message=message)
