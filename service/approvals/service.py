"""Decisions in the database: open or join one, vote, expire, cancel, claim the release, record execution.

`ApprovalService.transition` is the only code that moves a decision out of `pending`: one
compare-and-set (`UPDATE decisions SET status=… WHERE id=… AND status='pending'`), so a click, a
timer, a sweep and a cancelled client can race and exactly one wins; the losers get
`AlreadyDecided` ("already decided: approved by alice"). Each change enqueues the channels'
notifications in the same transaction (the outbox), then, after commit, tells the listeners (the
bus that wakes held calls, the outbox worker, the timers).

An approved decision releases exactly one call: `claim` sets `claimed_at` by compare-and-set, and
only the call that wins it may run. A denied or expired decision's ending is claimed the same way
by the call that reports it, so a retry of the same call gets that ending once and a later retry
opens a new decision.

The claim of an approved call is a lease (`claim_holder`, `lease_until`) that this process renews while
the call runs (`renew_leases`, from `service.approvals.leases`). `mark_sending` records, by
compare-and-set on the lease, the moment the call leaves for the upstream; `record_execution` keeps its
outcome and (bounded) result. When a holder dies, `reconcile` (any replica, on its lease tick) gives an
expired claim with no "sending" mark back (approved and uncollected, for `claim_within` at least: the next
identical call runs it; `_give_back` is the one writer of a give-back),
and marks one with "sending" but no outcome `outcome: unknown` (it may have run; only a new approval runs
it again). `earlier_run` is what a retry of a claimed call finds: its stored result, its run in flight,
or word that it may have run.

Votes are counted in batches (`vote_many`; `vote` is a batch of one), so approving thousands of held
calls at once costs a few set-based statements per chunk of `VOTE_CHUNK` decisions, not a dozen
statements per decision; every decision in a batch is judged by the same rules (`_judge`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, case, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service import metrics
from service.approvals.batching import GroupCommit
from service.db import session_scope
from service.models import Decision, OutboxMessage, Vote
from service.policy import ApprovalSpec, Approver, Verdict, redact_arguments

logger = logging.getLogger(__name__)

PENDING = "pending"
UNKNOWN = "unknown"
"""The outcome of a call that was sent upstream by a process that stopped before it learned the answer."""
LAPSED = "lapsed"
"""The outcome of an approval no call collected within the rule's `claim_within`: it never ran."""
ENDINGS = ("approved", "denied", "expired", "cancelled")
STATUSES = (PENDING, *ENDINGS)
LOCAL_OPERATOR = "local-operator"
"""Who decides from the CLI: whoever can reach the database is the gateway's operator."""

Status = Literal["approved", "denied", "expired", "cancelled"]
CLAIM_LEASE_S = 15.0
"""How long a claim of an approved call outlives its holder's last renewal (`HOLDGATE_CLAIM_LEASE_S`)."""
RESULT_LIMIT_BYTES = 64 * 1024
"""The largest result kept for a retry; past it, the retry is told the call ran and how it ended."""
FINISHED = ("ok", "tool_error")
"""Outcomes of a run the upstream answered: their result is kept for a retry. Any other outcome (unknown,
upstream_failure, protocol_error, cancelled) means the call was sent and may have run."""
HANDOFF_WAIT_S = 5.0
"""How long a call woken before the deciding transaction reported its commit waits for its hand-over."""
VoteValue = Literal["approve", "deny"]
VOTE_CHUNK = 2500
"""Decisions voted on in one transaction. Each chunk's commit releases its held calls at once, and that work
slows every statement of the next chunk (each waits its turn on the busy event loop): approving 5,000 took
3–4.5 s in chunks of 500, under 1 s in chunks of 2,500. A chunk holds SQLite's write lock ~0.2 s (2 cores),
which timers and other votes can wait."""
_RETURNING_ROWS = {"populate_existing": True, "synchronize_session": False}
"""For `UPDATE … RETURNING` of whole rows: the rows come back fresh, so the session's other objects need no
re-evaluation (which costs O(objects in the session) per statement)."""


class ApprovalError(Exception):
    """A vote or lookup that cannot be honoured; `status_code` is what the REST API answers."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownDecision(ApprovalError):
    status_code = 404


class AlreadyDecided(ApprovalError):
    status_code = 409

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        by = f" by {decision.decided_by}" if decision.decided_by else ""
        super().__init__(f"already decided: {decision.status}{by}")


class AlreadyVoted(ApprovalError):
    status_code = 409


class NotAllowed(ApprovalError):
    """Not an approver of this decision, or the agent's own grant voting on its own call."""

    status_code = 403


class ReasonRequired(ApprovalError):
    status_code = 422


@dataclass(frozen=True, slots=True)
class Voter:
    """Who is voting, as the channel knows them: a declared person (API/dashboard token), a Slack
    user id, an email address, or the local operator (CLI)."""

    kind: Literal["person", "slack", "email", "operator"]
    value: str

    def describe(self) -> str:
        return self.value if self.kind in ("person", "operator") else f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    """What a vote did: counted and maybe decided; `message` is for the person who voted."""

    decision: Decision
    decided: bool
    message: str


@dataclass(frozen=True, slots=True)
class VoteResult:
    """What one vote of a batch did, per decision: `decided`, `recorded` (the quorum is not reached yet) or
    `refused` — then `refusal` is the error `vote()` raises for it, and nothing changed for that decision."""

    decision_id: str
    result: Literal["decided", "recorded", "refused"]
    message: str
    decision: Decision | None = None
    refusal: ApprovalError | None = None


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """Filters for listing decisions (REST and CLI)."""

    status: str | None = None
    server: str | None = None
    tool: str | None = None
    grant: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class _Ballot:
    """How `_judge` ruled one vote: refused, or the approver to record and, when it ends the decision, by whom."""

    refusal: ApprovalError | None = None
    approver: str | None = None
    ending_by: str | None = None
    remaining: int = 0

    def result(self, decision_id: str, ended: Decision | None, current: Decision | None) -> VoteResult:
        if self.refusal is not None:
            return VoteResult(decision_id, "refused", self.refusal.message, current, self.refusal)
        if ended is not None:
            return VoteResult(decision_id, "decided", f"{decision_id} {ended.status} by {ended.decided_by}", ended)
        message = f"approval by {self.approver} recorded; {self.remaining} more needed"
        return VoteResult(decision_id, "recorded", message, current)


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


@dataclass
class ApprovalService:
    """Every read and write of decisions, votes and their outbox rows."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Callable[[], float]
    listeners: list[Callable[[Decision], None]] = field(default_factory=list)
    """Called after a commit that changed a decision (status, reminder, execution)."""
    local_waiters: Callable[[str], int] = field(default=lambda _decision_id: 0)
    """How many held calls in this process wait on a decision (the bus): an ending decided here is claimed
    for one of them in the deciding transaction and handed over (`claim`), a transaction saved per release."""
    holder: str = field(default_factory=lambda: new_holder_id())
    """This process's name on the claims it holds: new at every start, so a restarted process does not renew
    the claims of its previous life (they expire and are reconciled like a dead peer's)."""
    lease_s: float = CLAIM_LEASE_S
    audit_event: Callable[[Decision, str, str], None] = field(default=lambda _decision, _verdict, _reason: None)
    """Audits what happens to a decision with no call there to report it: (decision, verdict, reason) — an
    approval that lapsed, a withdrawn wait that ended cancelled, a call whose sender died (outcome unknown)."""

    def __post_init__(self) -> None:
        self._handed: dict[str, Decision] = {}
        self._committing: dict[str, asyncio.Future[None]] = {}
        """Endings claimed for a call here whose transaction has not reported its commit yet."""
        self._claims: GroupCommit[str, Decision | None] = GroupCommit(self._claim_batch)
        self._background: set[asyncio.Task[Any]] = set()
        self._executions: GroupCommit[_Execution, None] = GroupCommit(self._record_execution_batch)
        self._sendings: GroupCommit[str, bool] = GroupCommit(self._mark_sending_batch)
        self._running: set[str] = set()
        """Approved calls this process claimed and has not finished: the leases `renew_leases` keeps alive."""

    # -- opening ----------------------------------------------------------------------------------

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
    ) -> tuple[Decision, bool]:
        """The decision this call waits on: an unclaimed one for the same call, or a new one.

        "The same call" is the approval's binding: grant, server, tool, canonical arguments and
        policy version; `args_sha256` is `args_digest(key, arguments)`, which the caller already has.
        Returns (decision, created). `previous_attempt`: an earlier approved run of this call that may have run
        (see `earlier_run`); a new decision says so to its approvers.
        """
        spec = verdict.approval or ApprovalSpec(approvers=())
        now = self.clock()
        async with session_scope(self.sessions) as session:
            existing = await self._joinable(session, grant, server, tool, args_sha256, policy_version, now)
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
                approvers=json.dumps([_approver_json(a) for a in spec.approvers]),
                channels=",".join(spec.channels),
                routing=json.dumps(spec.routing),
                quorum=spec.quorum,
                on_timeout=spec.on_timeout,
                claim_within_s=spec.claim_within_seconds,
                rejoin_within_s=spec.rejoin_within_seconds,
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
            await self._enqueue(session, [decision], "request", now)
            await announce_opened(session, [decision])
        logger.info(
            "decision %s opened: %s/%s for grant %s (rule %s), expires %s",
            decision.id,
            server,
            tool,
            grant,
            verdict.rule,
            iso(decision.expires_at),
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
                    *_same_call(grant, server, tool, args_sha256, policy_version),
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
                execution_options=_RETURNING_ROWS,
            )
            decision = rejoined.one_or_none()
            if decision is not None:
                logger.info("decision %s: the agent called again and waits on it", decision.id)
                return decision

    # -- the one status change --------------------------------------------------------------------

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
    ) -> dict[str, Decision]:
        """The only writer of a decision's status: one compare-and-set for all of `decision_ids`.

        Returns the decisions this call moved (the winners), reloaded; the others were not pending (or
        not due). Runs in the caller's transaction; the caller commits and then `_notify`s each winner.
        """
        if not decision_ids:
            return {}
        now = self.clock()
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
                execution_options=_RETURNING_ROWS,
            )
        )
        if waited:
            loop = asyncio.get_running_loop()
            for decision in won:
                if decision.id in waited:  # only what this transition won: a lost one is not ours to hand over
                    self._committing.setdefault(decision.id, loop.create_future())
        await self._enqueue(session, won, "update", now)
        await announce(session, [decision.id for decision in won])
        for decision in won:
            metrics.count_decision(status)
            logger.info("decision %s %s by %s via %s", decision.id, status, by, via)
        return {decision.id: decision for decision in won}

    # -- votes ------------------------------------------------------------------------------------

    async def vote(
        self,
        decision_id: str,
        voter: Voter,
        value: VoteValue,
        *,
        via: str,
        reason: str | None = None,
    ) -> VoteOutcome:
        """Record a person's vote; one deny ends the decision, `quorum` distinct approvals approve it.

        Refused (logged, nothing changes): unknown decision, already decided, a voter who is not
        an approver of this decision, the call's own grant, a person voting twice, a deny without
        a reason.
        """
        try:
            [result] = await self.vote_many([decision_id], voter, value, via=via, reason=reason)
        except ApprovalError as exc:
            logger.warning("vote refused: %s on %s by %s via %s: %s", value, decision_id, voter.describe(), via, exc)
            raise
        if result.refusal is not None:
            logger.warning(
                "vote refused: %s on %s by %s via %s: %s", value, decision_id, voter.describe(), via, result.message
            )
            raise result.refusal
        assert result.decision is not None  # only a refused vote may come without its decision
        return VoteOutcome(result.decision, result.result == "decided", result.message)

    async def vote_many(
        self,
        decision_ids: Sequence[str],
        voter: Voter,
        value: VoteValue,
        *,
        via: str,
        reason: str | None = None,
    ) -> list[VoteResult]:
        """One person's vote on many decisions (a bulk approval), by the same rules as `vote`, per decision.

        Set-based, in transactions of `VOTE_CHUNK` decisions: lock and read the decisions and their
        votes, insert the new votes in one statement, and end the decisions that reach their quorum
        (or are denied) through `transition_many`. Returns one result per distinct id, in order.
        Raises ReasonRequired (a deny without a reason) before anything is read.
        """
        reason = (reason or "").strip() or None
        if value == "deny" and reason is None:
            raise ReasonRequired("a reason is required to deny")
        ids = list(dict.fromkeys(decision_ids))
        results: list[VoteResult] = []
        for start in range(0, len(ids), VOTE_CHUNK):
            results += await self._vote_chunk(ids[start : start + VOTE_CHUNK], voter, value, via=via, reason=reason)
        refused = [r for r in results if r.refusal is not None]
        if len(ids) > 1:
            decided = sum(r.result == "decided" for r in results)
            logger.info(
                "bulk %s by %s via %s: %d decision(s), %d decided, %d refused%s",
                value,
                voter.describe(),
                via,
                len(ids),
                decided,
                len(refused),
                f" (e.g. {refused[0].decision_id}: {refused[0].message})" if refused else "",
            )
        return results

    async def _vote_chunk(
        self, ids: list[str], voter: Voter, value: VoteValue, *, via: str, reason: str | None
    ) -> list[VoteResult]:
        """One transaction of `vote_many`; a vote raced by the same person's identical vote is re-judged once."""
        try:
            return await self._vote_chunk_once(ids, voter, value, via=via, reason=reason)
        except IntegrityError:  # the same person voting on a decision twice at the same instant
            return await self._vote_chunk_once(ids, voter, value, via=via, reason=reason)

    async def _vote_chunk_once(
        self, ids: list[str], voter: Voter, value: VoteValue, *, via: str, reason: str | None
    ) -> list[VoteResult]:
        now = self.clock()
        async with session_scope(self.sessions) as session:
            found = await self._lock_for_votes(session, ids)
            prior: dict[str, list[Vote]] = {}
            pending = [d.id for d in found.values() if d.status == PENDING]
            if pending:
                for row in await session.scalars(
                    select(Vote).where(col(Vote.decision_id).in_(pending)).order_by(col(Vote.id))
                ):
                    prior.setdefault(row.decision_id, []).append(row)
            judged = {i: self._judge(i, found.get(i), prior.get(i, []), voter, value) for i in ids}
            votes = [
                {"decision_id": i, "approver": j.approver, "value": value, "via": via, "reason": reason, "at": now}
                for i, j in judged.items()
                if j.approver is not None
            ]
            if votes:
                await session.execute(insert(Vote), votes)
            endings: dict[str, list[str]] = {}  # decided_by -> ids; one compare-and-set per distinct "by"
            for decision_id, j in judged.items():
                if j.ending_by is not None:
                    endings.setdefault(j.ending_by, []).append(decision_id)
            status: Status = "denied" if value == "deny" else "approved"
            ended: dict[str, Decision] = {}
            for by, group in endings.items():
                ended |= await self.transition_many(session, group, status, by=by, via=via, reason=reason)
            if len(ended) != sum(map(len, endings.values())):
                raise RuntimeError("a locked pending decision was decided by someone else")  # rolls back the chunk
        for decision in ended.values():
            self._notify(decision)
        return [judged[i].result(i, ended.get(i), found.get(i)) for i in ids]

    async def _lock_for_votes(self, session: AsyncSession, ids: list[str]) -> dict[str, Decision]:
        """Read `ids` locked against other voters, so quorums are counted one vote after another.

        PostgreSQL: `FOR UPDATE` in id order (two bulk voters lock in the same order, never deadlock).
        SQLite has no row locks: an `UPDATE … RETURNING` that writes nothing new takes the database's
        write lock and reads the rows in one statement (reading first would let another writer slip
        in and make our later write fail).
        """
        if session.get_bind().dialect.name == "sqlite":
            rows = await session.scalars(
                update(Decision)
                .where(col(Decision.id).in_(ids))
                .values(status=col(Decision.status))
                .returning(Decision),
                execution_options=_RETURNING_ROWS,
            )
            return {decision.id: decision for decision in rows}
        rows = await session.scalars(
            select(Decision)
            .where(col(Decision.id).in_(ids))
            .order_by(col(Decision.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {decision.id: decision for decision in rows}

    def _judge(
        self, decision_id: str, decision: Decision | None, prior: list[Vote], voter: Voter, value: VoteValue
    ) -> _Ballot:
        """The rules of one vote, given the locked decision and its votes so far (oldest first).

        Unknown, already decided, not an approver (or the call's own grant), already voted: refused.
        Otherwise the vote counts; a deny ends the decision, and so does the approval that reaches the quorum.
        """
        if decision is None:
            return _Ballot(refusal=UnknownDecision(f"no decision {decision_id}"))
        if decision.status != PENDING:
            return _Ballot(refusal=AlreadyDecided(decision))
        try:
            approver = self.approver_name(decision, voter)
        except NotAllowed as exc:
            return _Ballot(refusal=exc)
        if any(vote.approver == approver for vote in prior):
            return _Ballot(refusal=AlreadyVoted(f"{approver} has already voted on {decision_id}"))
        if value == "deny":
            return _Ballot(approver=approver, ending_by=approver)
        approvals = [vote.approver for vote in prior if vote.value == "approve"] + [approver]
        if len(approvals) >= decision.quorum:
            return _Ballot(approver=approver, ending_by=", ".join(approvals))
        return _Ballot(approver=approver, remaining=decision.quorum - len(approvals))

    def approver_name(self, decision: Decision, voter: Voter) -> str:
        """The approver this voter is for `decision`, or NotAllowed."""
        if voter.kind == "operator":
            return LOCAL_OPERATOR
        if voter.kind == "person" and voter.value == decision.grant:
            raise NotAllowed(f"{voter.value} is the grant that made this call and cannot approve it")
        for approver in json.loads(decision.approvers):
            if _matches(approver, voter):
                if approver["name"] == decision.grant:
                    raise NotAllowed(f"{approver['name']} is the grant that made this call and cannot approve it")
                return approver["name"]
        raise NotAllowed(f"{voter.describe()} is not an approver of {decision.id}")

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
            await self._enqueue(session, [decision], "reminder", now)
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
                    execution_options=_RETURNING_ROWS,
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
                    )
                    .returning(Decision),
                    execution_options=_RETURNING_ROWS,
                )
            ).one_or_none()
            if decision is None:
                return None
            await self._enqueue(session, [decision], "update", now)
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

    # -- release ----------------------------------------------------------------------------------

    async def claim(self, decision_id: str) -> Decision | None:
        """Take an ended decision's ending for this call; None if it is pending or another call took it.

        An ending decided in this process while the call waited was claimed for it in that transaction:
        the first waiter to ask takes it from memory. Other claims that arrive together (a bulk approval
        decided elsewhere waking many held calls) share one transaction. The claim of an approved call is a
        lease of this process, renewed until its outcome is recorded (`record_execution`) or it is handed back
        (`release_unsent`).
        """
        handed = self._handed.pop(decision_id, None)
        if handed is None:
            committing = self._committing.get(decision_id)
            if committing is not None:  # decided here, for this call: another wake-up (NOTIFY, poll) came first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(committing), HANDOFF_WAIT_S)
                handed = self._handed.pop(decision_id, None)
                if handed is None and self._committing.get(decision_id) is committing:
                    del self._committing[decision_id]  # rolled back: the database decides below
        claimed = handed if handed is not None else await self._claims.submit(decision_id)
        if claimed is not None and claimed.status == "approved":
            self._running.add(decision_id)
        return claimed

    def forget_handoff(self, decision_id: str) -> None:
        """The last call waiting on `decision_id` went away: drop an ending claimed for it, if any.

        Its call is not run; the ending is given back (`give_back_ending`) at once, not at its lease's expiry:
        the same call coming again collects it.
        """
        if self._handed.pop(decision_id, None) is not None:
            _log_unwaited(decision_id)
            self.give_back_ending_later(decision_id)

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
                    execution_options=_RETURNING_ROWS,
                )
            }
        answers: list[Decision | None] = []
        for decision_id in decision_ids:  # one winner per decision, even if two of its waiters asked at once
            answers.append(rows.pop(decision_id, None))
        return answers

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

    async def release_unsent(self, decision_id: str) -> None:
        """The claimed call was never sent (the upstream could not be reached, the client left): give the claim
        back, so the next identical call runs it without a second approval."""
        self._running.discard(decision_id)
        await self._give_back(
            [col(Decision.id) == decision_id, col(Decision.claim_holder) == self.holder], "its call could not be sent"
        )

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
                    )
                    .returning(Decision),
                    execution_options=_RETURNING_ROWS,
                )
            )
            await self._enqueue(session, recorded, "update", now)
        for decision in recorded:
            self._notify(decision)
        return [None] * len(executions)

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
                    .values(outcome=UNKNOWN, outcome_detail=detail, outcome_at=now, lease_until=None)
                    .returning(Decision),
                    execution_options=_RETURNING_ROWS,
                )
            )
            await self._enqueue(session, unknown, "update", now)
            await announce(session, [d.id for d in unknown])
        for decision in unknown:
            logger.warning("decision %s: outcome unknown (%s)", decision.id, detail)
            # Audited here: the record of the process that sent the call died with it.
            self.audit_event(decision, "approved", "outcome unknown")
            self._notify(decision)
        return Reconciled(released=released, unknown=unknown)

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
                    execution_options=_RETURNING_ROWS,
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

    async def earlier_run(
        self, *, grant: str, server: str, tool: str, args_sha256: str, policy_version: str, within_s: float
    ) -> Decision | None:
        """The newest decision of this call, if it is an approved one whose release was claimed (running, finished
        within `within_s`, or of unknown outcome within `within_s`): what a retry of the call must not run again."""
        async with self.sessions() as session:
            latest = await session.scalar(
                select(Decision)
                .where(
                    *_same_call(grant, server, tool, args_sha256, policy_version),
                )
                .order_by(col(Decision.created_at).desc())
                .limit(1)
            )
        if latest is None or latest.status != "approved" or latest.claimed_at is None or latest.outcome == LAPSED:
            return None  # not approved, not claimed, or lapsed (an approval nobody collected never ran)
        if latest.outcome is not None and (latest.outcome_at or 0) < self.clock() - within_s:
            return None
        return latest

    # -- reads ------------------------------------------------------------------------------------

    async def load(self, decision_id: str) -> Decision:
        async with self.sessions() as session:
            return await self._load(session, decision_id)

    async def get(self, decision_id: str) -> tuple[Decision, list[Vote]]:
        async with self.sessions() as session:
            decision = await self._load(session, decision_id)
            votes = await session.scalars(
                select(Vote).where(col(Vote.decision_id) == decision_id).order_by(col(Vote.id))
            )
            return decision, list(votes)

    async def status_of(self, decision_ids: Sequence[str]) -> dict[str, str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(col(Decision.id), col(Decision.status)).where(col(Decision.id).in_(decision_ids))
            )
            return {decision_id: status for decision_id, status in rows}

    async def list(self, query: DecisionQuery) -> tuple[list[Decision], int]:
        conditions = _conditions(query)
        async with self.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(Decision).where(*conditions))
            rows = await session.scalars(
                select(Decision)
                .where(*conditions)
                .order_by(col(Decision.created_at).desc(), col(Decision.id))
                .limit(query.limit)
                .offset(query.offset)
            )
            return list(rows), int(total or 0)

    async def pending_ids(self, query: DecisionQuery) -> builtins.list[str]:
        """Pending decisions matching `query`'s filters (its status is ignored), oldest first, up to `query.limit`.

        What a bulk vote by filter acts on: the oldest first, so a capped batch takes the ones closest to expiring.
        """
        conditions = [*_conditions(replace(query, status=None)), col(Decision.status) == PENDING]
        async with self.sessions() as session:
            rows = await session.scalars(
                select(col(Decision.id))
                .where(*conditions)
                .order_by(col(Decision.created_at), col(Decision.id))
                .limit(query.limit)
                .offset(query.offset)
            )
            return list(rows)

    # -- internals --------------------------------------------------------------------------------

    async def _load(self, session: AsyncSession, decision_id: str) -> Decision:
        decision = await session.get(Decision, decision_id, populate_existing=True)
        if decision is None:
            raise UnknownDecision(f"no decision {decision_id}")
        return decision

    async def _enqueue(self, session: AsyncSession, decisions: Iterable[Decision], kind: str, now: float) -> None:
        """The channels' notifications for `decisions`, in this transaction (one INSERT for all of them)."""
        rows = [
            {"decision_id": d.id, "channel": channel, "kind": kind, "created_at": now, "next_attempt_at": now}
            for d in decisions
            for channel in filter(None, d.channels.split(","))
        ]
        if rows:
            await session.execute(insert(OutboxMessage), rows)

    def _notify(self, decision: Decision) -> None:
        self._hand_over(decision)
        for listener in self.listeners:
            try:
                listener(decision)
            except Exception:  # a listener's bug must not undo a committed decision
                logger.exception("decision listener failed for %s", decision.id)

    def _hand_over(self, decision: Decision) -> None:
        """After the commit of an ending claimed for a call here (`transition_many`): keep it for `claim`."""
        committing = self._committing.pop(decision.id, None)
        if committing is None:
            return
        if self.local_waiters(decision.id):
            self._handed[decision.id] = decision
        else:
            _log_unwaited(decision.id)
            self.give_back_ending_later(decision.id)
        if not committing.done():
            committing.set_result(None)


def _log_unwaited(decision_id: str) -> None:
    logger.info("decision %s ended as its last waiting call went away; it waits for the call again", decision_id)


DECISIONS_CHANNEL = "holdgate_decisions"
"""PostgreSQL NOTIFY channel; the payload is a decision id (see service.approvals.pg_listen)."""


async def announce(session: AsyncSession, decision_ids: Sequence[str]) -> None:
    """Tell other replicas (on PostgreSQL) that `decision_ids` changed; sent when the transaction commits."""
    if decision_ids and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :id)"),
            [{"channel": DECISIONS_CHANNEL, "id": decision_id} for decision_id in decision_ids],
        )


OPENED_PREFIX = "open "
"""NOTIFY payload of a decision that is (still) pending: `open <id> <expires_at> <remind_at or ->`, so every replica
keeps its timers (an opening, or a wait withdrawn)."""


async def announce_opened(session: AsyncSession, decisions: Sequence[Decision]) -> None:
    """Tell other replicas (on PostgreSQL) of new decisions and when they fall due; sent when the transaction commits.

    Every replica then sets the timers, so a timeout fires on time even when the replica that opened it died.
    """
    if decisions and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            [
                {
                    "channel": DECISIONS_CHANNEL,
                    "payload": f"{OPENED_PREFIX}{d.id} {d.expires_at!r} "
                    + (repr(d.remind_at) if d.remind_at is not None and d.reminded_at is None else "-"),
                }
                for d in decisions
            ],
        )


def _with_previous_attempt(reason: str | None, previous: Decision | None) -> str | None:
    """The rule's reason, preceded (for the approvers) by a warning that an earlier approved run may have run."""
    if previous is None:
        return reason
    warning = (
        f"previous attempt {previous.id} may have run (outcome {previous.outcome}): approve only if running it "
        "again is intended"
    )
    return f"{warning}. {reason}" if reason else warning


def new_holder_id() -> str:
    """A claim holder's name: host, process id and a random part (a process id is reused after a restart)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


def _same_call(grant: str, server: str, tool: str, args_sha256: str, policy_version: str) -> list[Any]:
    """The conditions that bind a decision to one call: an approval is for exactly this call."""
    return [
        col(Decision.grant) == grant,
        col(Decision.server) == server,
        col(Decision.tool) == tool,
        col(Decision.args_sha256) == args_sha256,
        col(Decision.policy_version) == policy_version,
    ]


def new_decision_id() -> str:
    """Random and unguessable (not the JSON-RPC id, which restarts per session)."""
    return "d_" + secrets.token_urlsafe(15)


def iso(ts: float) -> str:
    """Unix seconds as an ISO 8601 UTC time to the second: 2026-11-24T12:45:00Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def approvers_of(decision: Decision) -> list[dict[str, Any]]:
    return json.loads(decision.approvers)


def _approver_json(approver: Approver) -> dict[str, Any]:
    return {"name": approver.name, "slack_ids": list(approver.ids("slack")), "emails": list(approver.ids("email"))}


def _conditions(query: DecisionQuery) -> list[Any]:
    """`query`'s filters as SQL conditions on decisions."""
    conditions = []
    if query.status:
        conditions.append(col(Decision.status) == query.status)
    if query.server:
        conditions.append(col(Decision.server) == query.server)
    if query.tool:
        conditions.append(col(Decision.tool) == query.tool)
    if query.grant:
        conditions.append(col(Decision.grant) == query.grant)
    if query.since is not None:
        conditions.append(col(Decision.created_at) >= query.since)
    if query.until is not None:
        conditions.append(col(Decision.created_at) < query.until)
    return conditions


def _matches(approver: dict[str, Any], voter: Voter) -> bool:
    if voter.kind == "person":
        return approver["name"] == voter.value
    if voter.kind == "slack":
        return voter.value in approver["slack_ids"]
    if voter.kind == "email":
        return voter.value.lower() in (e.lower() for e in approver["emails"])
    return False
