"""Holding a call's decision: open or join the decision for a call, and wait for its ending.

`CallHolding` is the approvals side of a held `require_approval` call, and it knows nothing of MCP:
no request context, progress token or stream, no wording for the agent. The gateway's hold point
(`service.gateway.hold.ApprovalGate`) drives it: it opens or joins the call's decision (`open`), waits
on it (`wait`: a `DecisionWait` that wakes on every change and takes the ending), and reports how the
released call went (`sending`, `unsent`, `executed`).

What it keeps for the decisions, whoever holds the call:

- two identical calls arriving together share one decision (a lock per binding), and a burst of
  thousands of held calls touches the database through `DB_SLOTS` at a time;
- a wait is withdrawn, not the request: the last call waiting on a pending decision that goes away
  leaves it pending (`leave`: its stream closed; `withdraw`: its client cancelled, then it ends
  `cancelled` after the rule's `rejoin_within`);
- while the service stops (`begin_shutdown`) every wait wakes, and nothing a stopping wait does cancels
  or withdraws a decision: the same call after the restart joins it;
- an ending claimed for a call that went away is given back at once (`give_back`, and on leaving the
  last wait on it), so an approval is never spent on nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from service.approvals.approvers import client_approver_name
from service.approvals.bus import DecisionBus
from service.approvals.errors import AlreadyDecided
from service.approvals.recheck import RATE_LIMITED, ReleaseCheck, edit_charges, judge_release, refused_by_amount
from service.approvals.service import ApprovalService
from service.approvals.votes import VoteOutcome, Voter
from service.audit.service import AuditedCall
from service.models import Decision, StandingApproval
from service.policy import limits
from service.policy.channel_names import CLIENT
from service.policy.conditions import ConditionFailed
from service.policy.redaction import bounded_text, storable_text

if TYPE_CHECKING:
    from service.audit.keys import ArgsDigester
    from service.policy import Verdict
    from service.policy.holder import PolicySource

logger = logging.getLogger(__name__)

DB_SLOTS = 8
"""Held calls that touch the database at once, opening a decision or re-reading one after a wake-up (below
the pool's 5 + 10 connections): a burst of thousands then queues here, with no deadline, instead of
waiting for a pooled connection, which gives up after 30 s and fails the call."""

NAME_CHARS: int = Decision.__table__.c.tool.type.length  # type: ignore[attr-defined]
"""The length of the decisions table's grant, server and tool columns (200)."""


class HeldCall(AuditedCall, Protocol):
    """What a decision keeps of the call it holds (the gateway's `ToolCall`): what the audit reads of it, and whom
    the caller's credentials say the agent acts for."""

    @property
    def acting_for(self) -> str | None: ...


class Binding(NamedTuple):
    """A call as the decisions table keys it (the policy version aside): "the same call" is the same binding."""

    grant: str
    server: str
    tool: str
    args_sha256: str
    acting_for: str | None = None
    """The person the calling agent acts for (`CallHolding.acting_for`)."""


class Ending(NamedTuple):
    """An ended decision as a waiting call finds it."""

    decision: Decision
    claimed: bool
    """This call took the decision's one ending (an approved one: it may run the call now)."""


class DecisionWait:
    """One call's wait on its decision (`CallHolding.wait`): wakes on every change, then takes the ending."""

    def __init__(self, holding: CallHolding, decision_id: str, changed: asyncio.Event) -> None:
        self._holding = holding
        self.decision_id = decision_id
        self._changed = changed

    def wake(self) -> None:
        """Wake the wait now (the call's client went away: it looks again)."""
        self._changed.set()

    async def woken(self, seconds: float) -> bool:
        """Wait up to `seconds` for a wake-up; False when the time ran out first.

        Only the bus wakes a held call (a commit here, LISTEN/NOTIFY, or the bus's poll for other
        processes): waiting costs no database work, however many wait.
        """
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    async def take(self) -> Ending | None:
        """After a wake-up: the ended decision and whether this call claimed it, or None if still pending."""
        return await self._holding.take(self.decision_id)


class CallHolding:
    """Open or join the decision for a held call, wait for its ending, and report the released call's run."""

    def __init__(
        self,
        service: ApprovalService,
        bus: DecisionBus,
        policy: PolicySource,
        *,
        args_digest: ArgsDigester,
    ) -> None:
        self.service = service
        self.bus = bus
        self.policy = policy
        self.args_digest = args_digest
        self.closing = False
        """The service is stopping: waits wake and leave, and no decision is withdrawn or cancelled."""
        self._open_locks: dict[Binding, tuple[asyncio.Lock, int]] = {}
        self._db_slots = asyncio.Semaphore(DB_SLOTS)
        self._background: set[asyncio.Task[Any]] = set()

    def begin_shutdown(self) -> None:
        """The service is stopping: wake every wait now and leave its decision pending, so that the call,
        made again after the restart, joins it."""
        self.closing = True
        for decision_id in self.bus.waiting_ids():
            self.bus.publish(decision_id)

    def waiting(self, decision_id: str) -> int:
        """How many calls in this process wait on `decision_id`."""
        return self.bus.waiting(decision_id)

    # -- opening --------------------------------------------------------------------------------

    async def earlier_run(self, binding: Binding, *, within_s: float) -> Decision | None:
        """The approved decision of this call (its `binding`) whose release was already claimed
        (`ApprovalService.earlier_run`): what a retry of the call must not run again."""
        async with self._db_slots:
            return await self.service.earlier_run(
                grant=binding.grant,
                server=binding.server,
                tool=binding.tool,
                args_sha256=binding.args_sha256,
                policy_version=self.policy.current.version,
                within_s=within_s,
                acting_for=binding.acting_for,
            )

    async def open(self, call: HeldCall, verdict: Verdict, previous_attempt: Decision | None = None) -> Decision:
        """The decision this call waits on: an unclaimed one of the same call, or a new one."""
        # Two identical calls arriving together must share one decision, not ask people twice.
        key = grant, server, tool, digest, acting_for = await self.binding(call)
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
                    acting_for=acting_for,
                )
        finally:
            lock, users = self._open_locks[key]
            if users == 1:
                del self._open_locks[key]
            else:
                self._open_locks[key] = (lock, users - 1)
        return decision

    async def covering(self, call: HeldCall, verdict: Verdict) -> StandingApproval | None:
        """The standing approval that lets this `require_approval` call run without asking, or None.

        One indexed lookup, and none at all when the verdict's rule allows no standing approval.
        """
        scopes = verdict.approval.scopes if verdict.approval is not None else {}
        if not scopes:
            return None
        grant, server, tool, digest, _acting_for = await self.binding(call)
        async with self._db_slots:
            return await self.service.covering(
                grant=grant, server=server, tool=tool, args_sha256=digest, rule=verdict.rule, scopes=scopes
            )

    async def binding(self, call: HeldCall) -> Binding:
        """The call as the decisions table keys it: grant, server, tool (bounded as the table holds them: a
        256-character or NUL-bearing tool name still opens one) and the keyed digest of its arguments."""
        digest = await self.args_digest.digest(call.arguments)
        grant, server, tool = (bounded_text(name, NAME_CHARS) for name in (call.grant, call.server, call.tool))
        acting_for = self.acting_for(call.grant, call.acting_for)
        return Binding(grant, server, tool, digest, bounded_text(acting_for, NAME_CHARS) if acting_for else None)

    def acting_for(self, grant: str, claimed: str | None) -> str | None:
        """The person a grant's agent acts for: the grant's `acting_for` in the policy; else the person the caller's
        credentials name (an OAuth token's acting-for claim: the declared person it matches, else the claim's
        value); else a declared person with the grant's own name (the old rule: such a grant never approves its
        own call)."""
        policy = self.policy.current
        declared = policy.acting_for.get(grant)
        if declared is not None:
            return declared
        if claimed:
            return policy.person_for_identity(claimed) or claimed
        return grant if grant in policy.people else None

    # -- waiting --------------------------------------------------------------------------------

    @contextmanager
    def wait(self, decision_id: str) -> Iterator[DecisionWait]:
        """Wait on `decision_id` (subscribed before its row is read again). Leaving the last wait on it drops an
        ending claimed for it and not taken: that ending is given back for the same call again."""
        with self.bus.subscribe(decision_id) as changed:
            try:
                yield DecisionWait(self, decision_id, changed)
            finally:
                if self.bus.waiting(decision_id) == 1:  # this call is the last one here waiting on it
                    self.service.forget_handoff(decision_id)

    async def changed_within(self, decision_id: str, seconds: float) -> None:
        """Wait up to `seconds` for `decision_id` to change (a run in flight ending, say)."""
        with self.bus.subscribe(decision_id) as changed, contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)

    async def take(self, decision_id: str) -> Ending | None:
        """After a wake-up: the ended decision and whether this call claimed it, or None if still pending.

        One compare-and-set in the common case, shared with the other calls waking at the same moment
        (group commit); the rarer re-read has bounded concurrency, so a mass wake-up queues here
        instead of exhausting the connection pool.
        """
        claimed = await self.service.claim(decision_id)
        if claimed is not None:
            return Ending(claimed, True)
        async with self._db_slots:
            current = await self.service.load(decision_id)
        return None if current.status == "pending" else Ending(current, False)

    # -- leaving --------------------------------------------------------------------------------

    async def give_back(self, decision_id: str) -> None:
        """An ending taken for a call that goes away before running it: unclaimed again, for the same call."""
        await self.service.give_back_ending(decision_id)

    async def leave(self, decision: Decision) -> None:
        """The call stops waiting without running because its client's stream closed (2025-11-25: no
        cancellation, but nobody can read the answer). The decision goes on; the last wait on a pending one
        is withdrawn, not cancelled."""
        if decision.status == "pending" and self.bus.waiting(decision.id) == 1:
            await self.service.withdraw(decision.id, cancelled=False)

    def withdraw(self, decision_id: str) -> None:
        """The client cancelled its request: it withdraws its wait, not the request. The decision stays pending
        for `rejoin_within` (the same call again joins it), then ends cancelled (in the background: the caller's
        task is being cancelled). Not while the service is stopping: a restart must not cancel anything."""
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

    async def cancel(self, decision_id: str, *, by: str, reason: str) -> Decision | None:
        """The agent cancelled the request itself (`tasks/cancel`), not only its wait: a pending decision ends
        `cancelled` now, through the one compare-and-set. None when it had already ended (an approval won)."""
        try:
            return await self.service.transition(decision_id, "cancelled", by=by, via="mcp", reason=reason)
        except AlreadyDecided:
            return None

    async def deny_by_client(self, decision_id: str, *, grant: str, reason: str) -> Decision | None:
        """The person at the calling client refused the approval request (declined or dismissed the elicitation, or
        chose Deny in its form): a pending decision ends `denied` with that reason, through the one compare-and-set
        (`via="mcp"`, decided by `client:<grant>`). Not a vote: whoever the rule's approvers are, the person whose
        agent asks may withdraw the ask. None when the decision had already ended (another channel won)."""
        try:
            return await self.service.transition(
                decision_id, "denied", by=client_approver_name(grant), via="mcp", reason=storable_text(reason)
            )
        except AlreadyDecided:
            return None

    async def approve_by_client(self, decision_id: str, *, grant: str, reason: str | None) -> VoteOutcome:
        """The person at the calling client chose Approve in the elicitation's form: one approving vote, named
        `client:<grant>`, counted only where the decision's rule lists the approver `client` (`Votes.vote` refuses it
        otherwise, raising NotAllowed, and on a four-eyes decision); AlreadyDecided when another channel won."""
        voter = Voter(kind=CLIENT, value=grant)
        return await self.service.vote(decision_id, voter, "approve", via="mcp", reason=reason)

    async def load(self, decision_id: str) -> Decision:
        """The decision as it stands."""
        async with self._db_slots:
            return await self.service.load(decision_id)

    # -- the release check ----------------------------------------------------------------------

    async def check_release(self, call: HeldCall, verdict: Verdict, decision: Decision) -> ReleaseCheck:
        """Before the claimed, approved `decision` runs `call` (which arrived under `verdict`): the policy as it is
        now must still let it run (`service.approvals.recheck`). Not run: the decision records why (or, when an
        edit finds its limits full, the approval goes back for the same call again)."""
        now = self.service.clock()
        check = judge_release(self.policy.current, call, decision, now=now)
        if check.refusal is None and check.edited:
            extra = edit_charges(check, verdict, call, now=now)
            if isinstance(extra, ConditionFailed):
                check = refused_by_amount(check, extra)
            elif extra:
                limited = await limits.consume(
                    self.service.sessions,
                    [limit for limit, _ in extra],
                    grant=call.grant,
                    now=now,
                    amounts=[amount for _, amount in extra],
                )
                if not limited.allowed:
                    await self.service.release_unsent(decision.id)
                    return replace(
                        check,
                        refusal=f"the edited call has no room in limit {limited.counter!r}",
                        outcome=RATE_LIMITED,
                        retry_after=limited.retry_after,
                    )
        if check.refusal is not None and check.outcome != RATE_LIMITED:
            assert check.outcome is not None
            await self.service.refuse_release(decision.id, outcome=check.outcome, detail=check.refusal)
        return check

    # -- the released call's run ----------------------------------------------------------------

    async def sending(self, decision_id: str) -> bool:
        """The claimed call leaves for the upstream now; False: this process lost its claim, do not send."""
        return await self.service.mark_sending(decision_id)

    async def unsent(self, decision_id: str) -> None:
        """The claimed call never left: its claim goes back for the next identical call."""
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
        """How the released call's run went (and its result, kept for a retry)."""
        stored = storable_text(detail) if detail is not None else None
        await self.service.record_execution(
            decision_id, outcome=outcome, detail=stored, duration_ms=duration_ms, result=result
        )
