"""Votes: who may vote on a decision, how one vote is judged, and how a quorum ends the decision.

`eligible_approver` is the one pre-vote check: unknown decision, already decided, not an approver (or the call's
own grant), already voted. `vote`/`vote_many` apply it under a lock, then count; `check_vote` applies it without
changing anything, for a channel that wants to know before it shows or accepts a vote (Slack's deny modal, the
email confirmation page). A deny needs a reason; one deny ends the decision, and `quorum` distinct approvals
approve it.

Votes are counted in batches (`vote_many`; `vote` is a batch of one), so approving thousands of held calls at
once costs a few set-based statements per chunk of `VOTE_CHUNK` decisions, not a dozen statements per decision;
every decision in a batch is judged by the same rules (`judge`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import logcontext
from service.approvals.approvers import ApproverRecord, approver_groups_of, approvers_of, client_approver_name, reaches
from service.approvals.errors import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalError,
    NotAllowed,
    ReasonRequired,
    UnknownDecision,
)
from service.approvals.standing import Standing, StandingNotAllowed, StandingTerms, agreed_terms, check_terms
from service.approvals.states import PENDING, Status, Transitions
from service.approvals.timestamps import iso
from service.db import RETURNING_ROWS, session_scope
from service.models import Decision, StandingApproval, Vote
from service.policy.channel_names import CLIENT

logger = logging.getLogger(__name__)

LOCAL_OPERATOR = "local-operator"
"""Who decides from the CLI: whoever can reach the database is the gateway's operator."""
VoteValue = Literal["approve", "deny"]
VOTE_CHUNK = 2500
"""Decisions voted on in one transaction. Each chunk's commit releases its held calls at once, and that work
slows every statement of the next chunk (each waits its turn on the busy event loop): approving 5,000 took
3–4.5 s in chunks of 500, under 1 s in chunks of 2,500. A chunk holds SQLite's write lock ~0.2 s (2 cores),
which timers and other votes can wait."""


@dataclass(frozen=True, slots=True)
class Voter:
    """Who is voting, as the entry point verified them.

    `kind` is `person` (a declared person: API or dashboard token; `value` is their name), `operator` (the CLI),
    `client` (the person at the calling MCP client, answering the elicitation's form; `value` is the grant), or the
    name of the channel that recognised them (`slack`, `email`, …; `value` is their id there, matched against the
    decision's approvers' contacts on that channel).
    """

    kind: str
    value: str
    groups: frozenset[str] = frozenset()
    """A person signed in through the identity provider: their groups there (HOLDGATE_OIDC_GROUPS_CLAIM), which
    make them an approver of a decision whose rule names one of them (`group:ops`)."""

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
class Ballot:
    """How `judge` ruled one vote: refused, or the approver to record and, when it ends the decision, by whom."""

    refusal: ApprovalError | None = None
    approver: str | None = None
    ending_by: str | None = None
    remaining: int = 0
    standing: StandingTerms | None = None
    """The standing approval the quorum agreed to, when this vote approves the decision (`agreed_terms`)."""
    standing_asked: bool = False
    """Some approving vote asked for a standing approval (none is made unless all of them did)."""

    def result(self, decision_id: str, ended: Decision | None, current: Decision | None) -> VoteResult:
        if self.refusal is not None:
            return VoteResult(decision_id, "refused", self.refusal.message, current, self.refusal)
        if ended is not None:
            return VoteResult(decision_id, "decided", f"{decision_id} {ended.status} by {ended.decided_by}", ended)
        asked = " (asking for a standing approval)" if self.standing_asked else ""
        message = f"approval by {self.approver}{asked} recorded; {self.remaining} more needed"
        return VoteResult(decision_id, "recorded", message, current)


def approver_name(decision: Decision, voter: Voter) -> str:
    """The approver this voter is for `decision`, or NotAllowed.

    Never the grant that made the call, and, on a four-eyes decision, never the person its agent acts for. A grant
    named like a declared person acts for that person, and that refusal always held (before `four_eyes` existed it
    was the only self-approval check): decisions opened that way are four-eyes whatever the rule says.
    """
    if voter.kind == "operator":
        return LOCAL_OPERATOR
    if voter.kind == CLIENT:
        return _client_approver(decision, voter)
    if voter.kind == "person" and voter.value == decision.grant:
        raise NotAllowed(f"{voter.value} is the grant that made this call and cannot approve it")
    name = _approver_for(decision, voter)
    if name == decision.grant:
        raise NotAllowed(f"{name} is the grant that made this call and cannot approve it")
    if decision.four_eyes and decision.acting_for is not None and name == decision.acting_for:
        raise NotAllowed(
            f"{name} is the person the agent ({decision.grant}) acts for and cannot approve its call: "
            "this rule needs somebody else's approval (four eyes)"
        )
    return name


def _client_approver(decision: Decision, voter: Voter) -> str:
    """The person at the calling MCP client (`voter.value`: the grant whose call it is), voting through the
    elicitation's form: `client:<grant>`, only where the decision's rule lists the approver `client`.

    An explicit exception to "the grant never approves its own call": listing `client` is the rule saying the
    person at the client may approve their own agent's call. Never on a four-eyes decision (refused at load for a
    rule that says both; a decision can still be four-eyes without its rule saying so), and never for another grant.
    """
    if not any(approver["name"] == CLIENT for approver in approvers_of(decision)):
        raise NotAllowed(
            f"the rule of {decision.id} does not list the approver 'client': the person at the client cannot "
            "approve this call there"
        )
    if voter.value != decision.grant:
        raise NotAllowed(f"the client of grant {voter.value} is not the client of {decision.id}'s call")
    if decision.four_eyes:
        raise NotAllowed(f"{decision.id} needs somebody else's approval (four eyes): the client's vote cannot count")
    return client_approver_name(decision.grant)


def _approver_for(decision: Decision, voter: Voter) -> str:
    """The decision's approver `voter` is: a declared one, or (a person in a named group at the identity provider)
    the person themself; else NotAllowed."""
    for approver in approvers_of(decision):
        if approver["name"] == CLIENT:  # only the client's own vote is this approver (`_client_approver`)
            continue
        if _is(approver, voter):
            return approver["name"]
    if voter.kind == "person" and voter.groups and voter.groups.intersection(approver_groups_of(decision)):
        return voter.value
    raise NotAllowed(f"{voter.describe()} is not an approver of {decision.id}")


def _is(approver: ApproverRecord, voter: Voter) -> bool:
    """A person by their declared name; anyone else by their id on the channel they voted from."""
    if voter.kind == "person":
        return approver["name"] == voter.value
    return reaches(approver, voter.kind, voter.value)


def eligible_approver(decision_id: str, decision: Decision | None, prior: Sequence[Vote], voter: Voter) -> str:
    """The approver `voter` may vote as on this decision, given its votes so far; else the refusal, raised.

    Unknown, already decided, not an approver (or the call's own grant), already voted.
    """
    if decision is None:
        raise UnknownDecision(f"no decision {decision_id}")
    if decision.status != PENDING:
        raise AlreadyDecided(decision)
    approver = approver_name(decision, voter)
    if any(vote.approver == approver for vote in prior):
        raise AlreadyVoted(f"{approver} has already voted on {decision_id}")
    return approver


def judge(
    decision_id: str,
    decision: Decision | None,
    prior: list[Vote],
    voter: Voter,
    value: VoteValue,
    standing: StandingTerms | None = None,
) -> Ballot:
    """The rules of one vote, given the locked decision and its votes so far (oldest first).

    Refused when `eligible_approver` refuses, or when it asks for a standing approval the decision's rule does
    not allow (`check_terms`). Otherwise the vote counts; a deny ends the decision, and so does the approval that
    reaches the quorum — with the standing approval every approving vote agreed to, if they all asked for one.
    """
    try:
        approver = eligible_approver(decision_id, decision, prior, voter)
        assert decision is not None  # eligible_approver refuses an unknown decision
        check_terms(decision, standing)
    except ApprovalError as exc:
        return Ballot(refusal=exc)
    if value == "deny":
        return Ballot(approver=approver, ending_by=approver)
    approving = [vote for vote in prior if vote.value == "approve"]
    asked = [_terms_of(vote) for vote in approving] + [standing]
    standing_asked = any(terms is not None for terms in asked)
    approvals = [vote.approver for vote in approving] + [approver]
    if len(approvals) >= decision.quorum:
        return Ballot(
            approver=approver,
            ending_by=", ".join(approvals),
            standing=agreed_terms(asked),
            standing_asked=standing_asked,
        )
    return Ballot(approver=approver, remaining=decision.quorum - len(approvals), standing_asked=standing_asked)


def _terms_of(vote: Vote) -> StandingTerms | None:
    """The standing approval a recorded vote asked for, or None (approve once)."""
    if vote.scope is None or vote.scope_seconds is None:
        return None
    return StandingTerms(vote.scope, vote.scope_seconds)


def _standing_note(ballot: Ballot, standing: StandingApproval | None) -> str:
    """What the voter reads about the standing approval their deciding vote made, or did not."""
    if standing is not None:
        return (
            f"; standing approval {standing.id}: {SCOPE_NOTE[standing.scope]} by grant {standing.grant} "
            f"run without asking until {iso(standing.expires_at)}"
        )
    if ballot.standing_asked:
        return "; approved once: not every approving vote asked for a standing approval"
    return ""


SCOPE_NOTE = {
    "same_args": "later identical calls",
    "tool": "calls of the tool",
}


def _required_reason(value: VoteValue | None, reason: str | None, standing: StandingTerms | None = None) -> str | None:
    """The reason as recorded (stripped; empty is none); a deny without one is refused, and so is a deny that
    asks for a standing approval (there are no standing denials)."""
    if value == "deny" and standing is not None:
        raise StandingNotAllowed("a deny cannot be standing: scope and duration go with an approval")
    reason = (reason or "").strip() or None
    if value == "deny" and reason is None:
        raise ReasonRequired("a reason is required to deny")
    return reason


class Votes(Transitions, Standing):
    """Voting on decisions: one (`vote`), many at once (`vote_many`), or only asking (`check_vote`)."""

    def approver_name(self, decision: Decision, voter: Voter) -> str:
        """The approver this voter is for `decision`, or NotAllowed."""
        return approver_name(decision, voter)

    async def check_vote(
        self,
        decision_id: str,
        voter: Voter,
        value: VoteValue | None = None,
        *,
        reason: str | None = None,
        standing: StandingTerms | None = None,
    ) -> Decision:
        """The decision, if `voter` may vote on it now; else the error `vote` would raise. Changes nothing.

        What a channel calls before it shows or accepts a vote. `value` (optional): a deny without a `reason` is
        refused too. Not a promise: the vote is judged again, under a lock, when it is cast.
        """
        _required_reason(value, reason, standing)
        async with self.sessions() as session:
            decision = await session.get(Decision, decision_id, populate_existing=True)
            prior: list[Vote] = []
            if decision is not None and decision.status == PENDING:
                prior = list(
                    await session.scalars(
                        select(Vote).where(col(Vote.decision_id) == decision_id).order_by(col(Vote.id))
                    )
                )
        eligible_approver(decision_id, decision, prior, voter)
        assert decision is not None  # eligible_approver refuses an unknown decision
        check_terms(decision, standing)
        return decision

    async def vote(
        self,
        decision_id: str,
        voter: Voter,
        value: VoteValue,
        *,
        via: str,
        reason: str | None = None,
        standing: StandingTerms | None = None,
        ending: Mapping[str, Any] | None = None,
    ) -> VoteOutcome:
        """Record a person's vote; one deny ends the decision, `quorum` distinct approvals approve it.

        Refused (logged, nothing changes): unknown decision, already decided, a voter who is not
        an approver of this decision, the call's own grant, a person voting twice, a deny without
        a reason. `ending`: columns written with the status if this vote ends the decision (an edit).
        """
        with logcontext.bound(decision_id=decision_id):
            try:
                [result] = await self.vote_many(
                    [decision_id], voter, value, via=via, reason=reason, standing=standing, ending=ending
                )
            except ApprovalError as exc:
                logger.warning(
                    "vote refused: %s on %s by %s via %s: %s", value, decision_id, voter.describe(), via, exc
                )
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
        standing: StandingTerms | None = None,
        ending: Mapping[str, Any] | None = None,
    ) -> list[VoteResult]:
        """One person's vote on many decisions (a bulk approval), by the same rules as `vote`, per decision.

        Set-based, in transactions of `VOTE_CHUNK` decisions: lock and read the decisions and their
        votes, insert the new votes in one statement, and end the decisions that reach their quorum
        (or are denied) through `transition_many`. Returns one result per distinct id, in order.
        Raises ReasonRequired (a deny without a reason) before anything is read. `standing`: the standing
        approval this approval asks for (`service.approvals.standing`), judged per decision against its rule.
        """
        reason = _required_reason(value, reason, standing)
        ids = list(dict.fromkeys(decision_ids))
        results: list[VoteResult] = []
        for start in range(0, len(ids), VOTE_CHUNK):
            chunk = ids[start : start + VOTE_CHUNK]
            results += await self._vote_chunk(
                chunk, voter, value, via=via, reason=reason, standing=standing, ending=ending
            )
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
        self,
        ids: list[str],
        voter: Voter,
        value: VoteValue,
        *,
        via: str,
        reason: str | None,
        standing: StandingTerms | None = None,
        ending: Mapping[str, Any] | None = None,
    ) -> list[VoteResult]:
        """One transaction of `vote_many`; a vote raced by the same person's identical vote is re-judged once."""
        try:
            return await self._vote_chunk_once(
                ids, voter, value, via=via, reason=reason, standing=standing, ending=ending
            )
        except IntegrityError:  # the same person voting on a decision twice at the same instant
            return await self._vote_chunk_once(
                ids, voter, value, via=via, reason=reason, standing=standing, ending=ending
            )

    async def _vote_chunk_once(
        self,
        ids: list[str],
        voter: Voter,
        value: VoteValue,
        *,
        via: str,
        reason: str | None,
        standing: StandingTerms | None = None,
        ending: Mapping[str, Any] | None = None,
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
            judged = {i: judge(i, found.get(i), prior.get(i, []), voter, value, standing) for i in ids}
            votes = [
                {
                    "decision_id": i,
                    "approver": j.approver,
                    "value": value,
                    "via": via,
                    "reason": reason,
                    "at": now,
                    "scope": standing.scope if standing is not None else None,
                    "scope_seconds": standing.seconds if standing is not None else None,
                }
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
                ended |= await self.transition_many(session, group, status, by=by, via=via, reason=reason, also=ending)
            if len(ended) != sum(map(len, endings.values())):
                raise RuntimeError("a locked pending decision was decided by someone else")  # rolls back the chunk
            given: dict[str, StandingApproval] = {}
            for decision_id, decision in ended.items():
                terms = judged[decision_id].standing
                if terms is not None and decision.status == "approved":
                    given[decision_id] = await self.grant_standing(session, decision, terms, now)
        for decision in ended.values():
            self._notify(decision)
        results = [judged[i].result(i, ended.get(i), found.get(i)) for i in ids]
        return [
            replace(r, message=r.message + _standing_note(judged[r.decision_id], given.get(r.decision_id)))
            if r.result == "decided"
            else r
            for r in results
        ]

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
                execution_options=RETURNING_ROWS,
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
