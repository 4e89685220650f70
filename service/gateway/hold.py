"""The hold point: a `require_approval` call waits here until its decision ends.

`ApprovalGate` is the MCP side of holding a call (`GatewayCore.approvals`); the decision side, with no MCP
in it, is `service.approvals.holding.CallHolding`: it opens or joins the decision for the call and wakes
the wait on every change. Here, the gate waits:

- the client sent a progress token → wait as long as the decision takes, reporting progress every
  `progress_interval` seconds ("waiting for approval by ops (decision d_…, expires 12:45:00Z)");
- no progress token → wait up to `hold_bound` seconds (below the ~60 s most clients allow), then
  answer "approval pending" with the decision id and expiry; the same call again joins it. Meanwhile
  the transport keeps the client's stream alive with pings (`DeferredChoiceTransport`,
  `HOLDGATE_STREAM_KEEPALIVE_S`).

A held call costs an asyncio event and a few objects, so thousands can wait at once. A call is
never run for a client that has gone, and its approval is never spent on nobody:

- the client cancels (`notifications/cancelled`; on 2026-07-28, closing its stream) → it withdraws its
  wait, not the request: the decision stays pending ("the agent stopped waiting") for the rule's
  `rejoin_within`; the same call again joins it; after that the decision ends `cancelled`;
- the client's stream closes on 2025-11-25 (no cancellation there, but a stream of this gateway cannot
  be resumed: `StreamWatch`) → the call stops waiting and is not run; the decision goes on; its ending
  waits for the same call again (an approval, within `claim_within`, then it lapses);
- the service stops → every held call is answered at once "holdgate is restarting; call again to join
  d_…", its decision stays pending, and a retry after the restart joins it.

A retry of a call whose approved release was already claimed never runs it again on that approval
(`_earlier_run`): it waits for a run in flight, gets the stored result of a finished one (within the rule's
`claim_within`), or is told that the run may have happened, and a new decision asks the approvers again,
saying so. An approval that lapsed never ran: the same call again simply asks anew.

An approved call is checked again before it runs (`_release`, `CallHolding.check_release`): the policy now in
force must still allow it or ask the same rule's approval, and an approver's edit (`service.approvals.edits`) is
applied; otherwise the call is answered with why it did not run.

A decision whose rule lists the channel `client` also asks the person at the calling client while the call is held
(`service.gateway.client_approval`): on a 2025-11-25 session an elicitation rides the held request's stream beside
the wait; a 2026-07-28 request is answered with an `InputRequiredResult` (ending `input_required`), and its retry,
bringing the person's answer, waits like any held call.

Every word the agent reads about its held call is written here (`*_message`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from service import logcontext, tracing
from service.approvals import FINISHED, RESULT_LIMIT_BYTES, CallHolding, approvers_of, describe_changes, iso
from service.gateway.calls import HoldOutcome, ToolCall
from service.gateway.client_approval import ClientApproval, carries_state, is_modern
from service.gateway.downstream_http import stream_watch
from service.models import Decision, StandingApproval
from service.policy import ApprovalSpec

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from service.policy import Verdict


def progress_token_of(ctx: ServerRequestContext) -> str | int | None:
    """The progress token the client sent with this request, if any."""
    meta = ctx.meta or {}
    token: object = meta.get("progress_token")
    if token is None:
        token = meta.get("progressToken")
    return token if isinstance(token, (str, int)) else None


class ApprovalGate:
    """The hold point (`GatewayCore.approvals`): keep the call until a person decides, exactly once.

    `hold` returns once the call's decision has ended, or when the call is to be answered with
    "approval pending" (no progress token, bound reached). It returns `approved` only after it
    has claimed the single execution of the decision; the gateway then forwards the call, marking
    it `sending` right before it leaves (False: the claim was lost, do not send), hands back with
    `unsent` a claim whose call never left, and reports the upstream outcome with `executed`. A
    cancelled client raises out of `hold`; its decision stays pending for the rule's `rejoin_within`
    (the same call again joins it). `replayed`: a retry of a call that already ran on its approval
    gets that run's `result` again.
    """

    def __init__(
        self,
        holding: CallHolding,
        *,
        progress_interval: float,
        hold_bound: float,
        client: ClientApproval | None = None,
    ) -> None:
        self.holding = holding
        self.progress_interval = progress_interval
        self.hold_bound = hold_bound
        self.client = client
        """The `client` approval channel (`service.gateway.client_approval`); None: it is not served here."""

    async def hold(self, call: ToolCall, verdict: Verdict, ctx: ServerRequestContext) -> HoldOutcome:
        client = self.client
        modern = client is not None and is_modern(ctx)
        redeemed = False
        if client is not None and modern and carries_state(ctx):
            # A 2026-07-28 retry answering the client channel's question: its sealed state is checked and spent, and
            # the answer applied, before anything else (a forged or replayed state is refused with no change).
            redeemed = await client.redeem(ctx, call.grant, await self.holding.binding(call))
        earlier = await self._earlier_run(call, verdict, ctx)
        if earlier is not None:
            return earlier
        decision = await self.holding.open(call, verdict)
        logcontext.bind(decision_id=decision.id)  # every line about this call from here on names its decision
        tracing.annotate(decision_id=decision.id)
        if client is None:
            return await self._wait(call, verdict, decision, ctx)
        if modern and not redeemed:
            asking = client.input_required(decision, call.grant, ctx)
            if asking is not None:  # no back channel: the question goes back as the answer, the retry brings the reply
                return HoldOutcome(decision.id, "input_required", message=asking_message(decision), result=asking)
        ask = client.start(decision, call.grant, ctx)
        if ask is None:
            return await self._wait(call, verdict, decision, ctx)
        ended = False
        try:
            outcome = await self._wait(call, verdict, decision, ctx)
            ended = outcome.ending not in STILL_PENDING
            return outcome
        finally:
            await ask.finish(decision.id, ended=ended)

    async def _wait(
        self, call: ToolCall, verdict: Verdict, decision: Decision, ctx: ServerRequestContext
    ) -> HoldOutcome:
        """Wait for `decision` to end (or the bound, or the client to go), then say how the call ends."""
        holding = self.holding
        token = progress_token_of(ctx)
        stream = stream_watch(ctx.request)
        loop = asyncio.get_running_loop()
        started = loop.time()

        def leaving() -> bool:
            """Nobody will read this call's answer (its stream closed), or the service is stopping."""
            return holding.closing or (stream is not None and stream.closed)

        with holding.wait(decision.id) as wait:
            if stream is not None:
                stream.on_close(wait.wake)
            try:
                ended = await wait.take() if decision.status != "pending" else None
                while ended is None:
                    if leaving():
                        return await self._leave(decision, stream_closed=not holding.closing)
                    if token is None:
                        remaining = started + self.hold_bound - loop.time()
                        if remaining <= 0:
                            return _outcome(decision, "pending", pending_message(decision))
                        timeout = remaining
                    else:
                        timeout = self.progress_interval
                    if not await wait.woken(timeout):
                        if token is not None:
                            await ctx.session.report_progress(loop.time() - started, None, waiting_message(decision))
                        continue
                    if not leaving():
                        ended = await wait.take()
                if ended.claimed and leaving():
                    # Taken for this call, whose client has gone (or which is answered "restarting"): not run.
                    await holding.give_back(ended.decision.id)
                    return await self._leave(ended.decision, stream_closed=not holding.closing)
            except asyncio.CancelledError:
                holding.withdraw(decision.id)
                raise
        if ended.claimed and ended.decision.status == "approved":
            return await self._release(call, verdict, ended.decision)
        return self._ending(ended.decision, ended.claimed)

    async def covering(self, call: ToolCall, verdict: Verdict) -> StandingApproval | None:
        """The standing approval that lets this call run without asking (`CallHolding.covering`), or None."""
        return await self.holding.covering(call, verdict)

    async def _release(self, call: ToolCall, verdict: Verdict, decision: Decision) -> HoldOutcome:
        """The claimed approval runs this call if the policy as it is now still lets it (`check_release`), with the
        approver's edit applied; else the call is answered with why not."""
        check = await self.holding.check_release(call, verdict, decision)
        if check.refusal is None:
            if not check.edited:
                return _outcome(decision, "approved")
            note = edited_message(decision, check.changes or [])
            return HoldOutcome(
                decision.id, "approved", arguments=check.arguments, redact=check.verdict.redact, edit_note=note
            )
        assert check.outcome is not None
        message = release_refused_message(decision, check.outcome, check.refusal, check.verdict, check.retry_after)
        return HoldOutcome(decision.id, check.outcome, message=message, rule=check.verdict.rule)

    async def sending(self, decision_id: str) -> bool:
        return await self.holding.sending(decision_id)

    async def unsent(self, decision_id: str) -> None:
        await self.holding.unsent(decision_id)

    async def executed(
        self,
        decision_id: str,
        *,
        outcome: str,
        detail: str | None,
        duration_ms: float,
        result: dict[str, Any] | None = None,
    ) -> None:
        await self.holding.executed(decision_id, outcome=outcome, detail=detail, duration_ms=duration_ms, result=result)

    async def _earlier_run(self, call: ToolCall, verdict: Verdict, ctx: ServerRequestContext) -> HoldOutcome | None:
        """A retry of a call whose approved release was claimed: what it gets instead of a second run.

        A run in flight (here, on another replica, or by a holder whose lease has not expired yet) is waited
        for, like a pending decision; a finished one's stored result is given again; one that may have run
        (outcome unknown, or sent and failed) is not run again on that approval: the retry is told so, and a
        new decision asks the approvers, naming the earlier attempt.
        """
        holding = self.holding
        within = (verdict.approval or ApprovalSpec(approvers=())).claim_within_seconds  # the rule's claim_within
        binding = await holding.binding(call)
        token = progress_token_of(ctx)
        stream = stream_watch(ctx.request)
        loop = asyncio.get_running_loop()
        started = reported = loop.time()
        deadline = started + self.hold_bound if token is None else math.inf
        while True:
            earlier = await holding.earlier_run(binding, within_s=within)
            if earlier is None:
                return None
            if earlier.outcome in FINISHED:
                if earlier.result is not None:
                    return HoldOutcome(earlier.id, "replayed", result=json.loads(earlier.result))
                return _outcome(earlier, "ran", ran_message(earlier))
            if earlier.outcome is not None:
                decision = await holding.open(call, verdict, previous_attempt=earlier)
                return _outcome(earlier, "may_have_run", may_have_run_message(earlier, decision))
            # In flight: its outcome, or its lease's expiry (then `ClaimLeases` reconciles it), wakes us.
            if holding.closing or (stream is not None and stream.closed):  # stopping, or nobody reads the answer
                ending = "restarting" if holding.closing else "withdrawn"
                return _outcome(earlier, ending, running_message(earlier, restarting=holding.closing))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _outcome(earlier, "running", running_message(earlier))
            await holding.changed_within(earlier.id, min(remaining, 1.0))  # a closed stream is seen within a second
            if token is not None and loop.time() - reported >= self.progress_interval:
                reported = loop.time()
                await ctx.session.report_progress(reported - started, None, running_message(earlier))

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
        await self.holding.leave(decision)
        return _outcome(decision, "withdrawn", withdrawn_message(decision))


STILL_PENDING = frozenset({"pending", "withdrawn", "restarting"})
"""Endings of a hold whose decision had not ended yet."""


def asking_message(decision: Decision) -> str:
    """The audit's reason for a 2026-07-28 round that asked the person at the client and waits for the retry."""
    return (
        f"holdgate: asked the person at the client about decision {decision.id} (the client channel); "
        "waiting for the client's retry with the answer"
    )


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


def edited_message(decision: Decision, changes: list[dict[str, Any]]) -> str:
    return (
        f"holdgate: approved with edits by {decision.decided_by} (decision {decision.id}); {decision.tool} ran with "
        f"changed arguments: {describe_changes(changes)}"
    )


def release_refused_message(
    decision: Decision, outcome: str, refusal: str, verdict: Verdict, retry_after: float | None
) -> str:
    call = f"{decision.server}/{decision.tool}"
    if outcome == "policy_denied":
        reason = verdict.reason or "not allowed by policy"
        return (
            f"holdgate denied '{decision.tool}' on '{decision.server}': {reason} (rule {verdict.rule}). It was "
            f"approved by {decision.decided_by} (decision {decision.id}), but {refusal}; the call was not run."
        )
    if outcome == "policy_changed":
        return (
            f"holdgate: {call} was approved by {decision.decided_by} (decision {decision.id}), but {refusal}; the call "
            f"was not run on that approval. Call {decision.tool} again with the same arguments to ask for it."
        )
    return (
        f"holdgate rate limit: {call} was approved with edits (decision {decision.id}), but {refusal} "
        f"(rule {verdict.rule}); the call was not run. retry_after={retry_after or 0:g} seconds: call "
        f"{decision.tool} again with the same arguments then, and the approval runs it."
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
