"""Standing approvals: an approval that covers later calls of the same grant for a while.

A rule may let its approvers give one instead of a one-off approval (`approval.scopes`, scope -> longest
duration): `same_args` covers later calls of the same grant with the same tool, server and arguments (the keyed
digest of the canonical JSON), `tool` every call of that tool on that server by that grant. The decision copies
the rule's scopes when it opens (like its quorum), so a vote is judged against what the rule allowed then, by
every channel and the CLI alike.

How one comes to be: each approving vote may ask for terms (`StandingTerms`: scope and duration), checked against
the decision's scopes (`check_terms`: an unknown scope, one the rule does not allow, or longer than allowed is
refused, nothing recorded). When the quorum is reached, the standing approval is made only if every approving
vote asked for one, with the terms they all agreed to: the narrowest scope asked and the shortest duration
(`agreed_terms`); one "approve once" among them makes it a one-off approval. It is written in the transaction
that approves the decision, and it runs from the moment of that approval.

What it covers (`Standing.covering`, the call path's one indexed lookup, only for a `require_approval` verdict):
a call of the same grant, server and tool (and, for `same_args`, arguments), decided by the same rule, whose
current policy still allows that scope, before `expires_at` (by the injected clock) and before the rule's current
longest duration for the scope has passed since it was given (a policy that shortens or removes a scope takes
effect at once), and not revoked. Limits and cases that deny are the policy's, evaluated before: a covered call
obeys them. Revoking (`revoke_standing`) is a compare-and-set that takes effect on the next call on every replica
(the database is the only copy; there is no cache to invalidate). Its life is audited in the transaction that
changes it (`standing_approved`, `standing_revoked`, and `standing_expired` once, by the sweep: `end_expired`),
whichever process does it — the service, or the CLI acting on the database.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.approvals.core import DecisionCore
from service.approvals.errors import ApprovalError
from service.approvals.timestamps import iso
from service.audit import chain
from service.audit.service import AuditRecord
from service.db import RETURNING_ROWS, session_scope
from service.models import Decision, StandingApproval
from service.policy.rules import STANDING_SCOPES, parse_standing_duration
from service.policy.verdict import format_seconds

logger = logging.getLogger(__name__)

StandingScope = Literal["same_args", "tool"]
_SECONDS = re.compile(r"\d{1,9}(?:\.\d{1,6})?")
SCOPE_WORDS = {"same_args": "the same call", "tool": "every call of the tool"}
"""How people read a scope (buttons, pages)."""


class StandingNotAllowed(ApprovalError):
    """A standing approval asked for that the decision's rule does not allow (scope, or duration)."""

    status_code = 422


class UnknownStanding(ApprovalError):
    status_code = 404


class StandingEnded(ApprovalError):
    """Revoking a standing approval that was already revoked, or has expired."""

    status_code = 409


@dataclass(frozen=True, slots=True)
class StandingTerms:
    """What an approver asks for instead of a one-off approval: a scope, for `seconds`."""

    scope: str
    seconds: float

    @classmethod
    def parse(cls, scope: str, duration: str | float | None) -> StandingTerms:
        """`--scope tool --for 30m` (REST `{"scope", "for"}`): refused with the reason when malformed."""
        if scope not in STANDING_SCOPES:
            raise StandingNotAllowed(f"unknown scope {scope!r}; a standing approval's scope is same_args or tool")
        if duration is None:
            raise StandingNotAllowed(f"a standing approval needs a duration: for how long ({scope!r} for what?)")
        if isinstance(duration, str) and _SECONDS.fullmatch(duration.strip()):
            duration = float(duration)  # `--for 1800`, a Slack button's value: seconds
        try:
            seconds = parse_standing_duration(duration)
        except ValueError as exc:
            raise StandingNotAllowed(f"invalid duration for the standing approval: {exc}") from None
        return cls(scope, seconds)

    def describe(self) -> str:
        return f"{self.scope} for {format_seconds(self.seconds)}"


def allowed_scopes(decision: Decision) -> dict[str, float]:
    """The standing approvals `decision`'s rule lets its approvers give: scope -> longest seconds."""
    try:
        scopes = json.loads(decision.scopes or "{}")
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in scopes.items()} if isinstance(scopes, dict) else {}


def check_terms(decision: Decision, terms: StandingTerms | None) -> None:
    """Refuse terms the decision's rule does not allow (StandingNotAllowed); None (approve once) always passes."""
    if terms is None:
        return
    scopes = allowed_scopes(decision)
    if not scopes:
        raise StandingNotAllowed(f"{decision.id}: its rule ({decision.rule}) allows one-off approvals only")
    longest = scopes.get(terms.scope)
    if longest is None:
        offered = ", ".join(f"{s} up to {format_seconds(v)}" for s, v in scopes.items())
        raise StandingNotAllowed(f"{decision.id}: its rule does not allow scope {terms.scope!r} (it allows {offered})")
    if terms.seconds > longest:
        raise StandingNotAllowed(
            f"{decision.id}: scope {terms.scope!r} may last at most {format_seconds(longest)} under its rule "
            f"(asked {format_seconds(terms.seconds)})"
        )


def agreed_terms(asked: Sequence[StandingTerms | None]) -> StandingTerms | None:
    """The standing approval a quorum agreed to: None if any approving vote was for this call only; else the
    narrowest scope any of them asked and the shortest duration (what every one of them approved)."""
    if not asked or any(terms is None for terms in asked):
        return None
    chosen = [terms for terms in asked if terms is not None]
    scope = min((terms.scope for terms in chosen), key=STANDING_SCOPES.index)
    return StandingTerms(scope, min(terms.seconds for terms in chosen))


def new_standing_id() -> str:
    """Random and unguessable, like a decision's id; `s_` tells the two apart."""
    return "s_" + secrets.token_urlsafe(15)


@dataclass(frozen=True, slots=True)
class StandingQuery:
    """Which standing approvals to list: the active ones (default), or all, newest first."""

    active_only: bool = True
    grant: str | None = None
    limit: int = 100


class Standing(DecisionCore):
    """Standing approvals: made by a quorum (`grant_standing`, in the vote's transaction), looked up for a call
    (`covering`), listed, revoked, and their expiry audited (`end_expired`)."""

    async def grant_standing(
        self, session: AsyncSession, decision: Decision, terms: StandingTerms, now: float
    ) -> StandingApproval:
        """Make the standing approval `decision`'s quorum agreed to, in the caller's (the vote's) transaction."""
        standing = StandingApproval(
            id=new_standing_id(),
            scope=terms.scope,
            grant=decision.grant,
            server=decision.server,
            tool=decision.tool,
            args_sha256=decision.args_sha256,
            arguments=decision.arguments,
            rule=decision.rule,
            decision_id=decision.id,
            approved_by=decision.decided_by or "",
            approved_via=decision.decided_via or "",
            created_at=now,
            expires_at=now + terms.seconds,
        )
        session.add(standing)
        await session.flush()
        await audit_standing(
            session,
            standing,
            "standing_approved",
            f"{standing.scope} until {iso(standing.expires_at)}, by {standing.approved_by} via {standing.approved_via}",
            now,
        )
        await session.execute(update(Decision).where(col(Decision.id) == decision.id).values(standing_id=standing.id))
        decision.standing_id = standing.id
        return standing

    async def covering(
        self,
        *,
        grant: str,
        server: str,
        tool: str,
        args_sha256: str,
        rule: str,
        scopes: Mapping[str, float],
    ) -> StandingApproval | None:
        """The standing approval that lets this call through now, or None (then it is held as usual).

        `rule` and `scopes` are the current verdict's: only a call the policy still sends to that rule's
        approval, with that scope still allowed, is covered, and for no longer than the scope allows now.
        """
        if not scopes:
            return None
        now = self.clock()
        async with self.sessions() as session:
            rows = await session.scalars(
                select(StandingApproval)
                .where(
                    col(StandingApproval.grant) == grant,
                    col(StandingApproval.server) == server,
                    col(StandingApproval.tool) == tool,
                    col(StandingApproval.expires_at) > now,
                    col(StandingApproval.revoked_at).is_(None),
                    col(StandingApproval.rule) == rule,
                    col(StandingApproval.scope).in_(list(scopes)),
                    or_(col(StandingApproval.scope) == "tool", col(StandingApproval.args_sha256) == args_sha256),
                )
                .order_by(col(StandingApproval.expires_at).desc())
                .limit(8)
            )
            for standing in rows:
                if standing.created_at + scopes[standing.scope] <= now:
                    continue  # the rule now allows this scope for less time than has passed
                if standing.args_sha256 == args_sha256 and await _uncollected(session, standing.decision_id, now):
                    return None  # the approved call itself, called again to collect its approval: the hold collects it
                return standing
        return None

    async def standing_list(self, query: StandingQuery) -> list[StandingApproval]:
        """Standing approvals, newest first: the active ones (not revoked, not expired) or all."""
        conditions = []
        if query.active_only:
            conditions += [col(StandingApproval.revoked_at).is_(None), col(StandingApproval.expires_at) > self.clock()]
        if query.grant is not None:
            conditions.append(col(StandingApproval.grant) == query.grant)
        async with self.sessions() as session:
            rows = await session.scalars(
                select(StandingApproval)
                .where(*conditions)
                .order_by(col(StandingApproval.created_at).desc(), col(StandingApproval.id))
                .limit(query.limit)
            )
            return list(rows)

    async def get_standing(self, standing_id: str) -> StandingApproval:
        async with self.sessions() as session:
            standing = await session.get(StandingApproval, standing_id)
        if standing is None:
            raise UnknownStanding(f"no standing approval {standing_id}")
        return standing

    async def revoke_standing(
        self, standing_id: str, *, by: str, via: str, reason: str | None = None
    ) -> StandingApproval:
        """End a standing approval now, once: the next call it would have covered is held again (every replica
        reads the same row). Raises UnknownStanding, or StandingEnded when it was revoked or expired already."""
        now = self.clock()
        reason = (reason or "").strip() or None
        async with session_scope(self.sessions) as session:
            rows = await session.scalars(
                update(StandingApproval)
                .where(
                    col(StandingApproval.id) == standing_id,
                    col(StandingApproval.revoked_at).is_(None),
                    col(StandingApproval.expires_at) > now,
                )
                .values(revoked_at=now, revoked_by=by, revoke_reason=reason, ended_at=now)
                .returning(StandingApproval),
                execution_options=RETURNING_ROWS,
            )
            revoked = rows.one_or_none()
            if revoked is None:
                current = await session.get(StandingApproval, standing_id)
            else:
                why = f"revoked by {by} via {via}" + (f": {reason}" if reason else "")
                await audit_standing(session, revoked, "standing_revoked", why, now)
        if revoked is None:
            if current is None:
                raise UnknownStanding(f"no standing approval {standing_id}")
            raise StandingEnded(f"standing approval {standing_id} has already ended ({standing_state(current, now)})")
        logger.info("standing approval %s revoked by %s via %s", standing_id, by, via)
        return revoked

    async def end_expired(self) -> int:
        """Audit each standing approval that has expired, once (every replica may sweep: one wins each row)."""
        now = self.clock()
        async with session_scope(self.sessions) as session:
            rows = list(
                await session.scalars(
                    update(StandingApproval)
                    .where(col(StandingApproval.ended_at).is_(None), col(StandingApproval.expires_at) <= now)
                    .values(ended_at=now)
                    .returning(StandingApproval),
                    execution_options=RETURNING_ROWS,
                )
            )
            for standing in rows:
                await audit_standing(
                    session, standing, "standing_expired", f"expired at {iso(standing.expires_at)}", now
                )
        return len(rows)

    async def count_active_standing(self) -> int:
        now = self.clock()
        async with self.sessions() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(StandingApproval)
                    .where(col(StandingApproval.revoked_at).is_(None), col(StandingApproval.expires_at) > now)
                )
                or 0
            )


async def _uncollected(session: AsyncSession, decision_id: str, now: float) -> bool:
    """Whether the decision that gave a standing approval still waits for its own call to collect it (the agent
    was answered "approval pending" and calls again): that call collects the decision, so that the decision
    records its run instead of lapsing beside a run the standing approval made."""
    decision = await session.get(Decision, decision_id)
    return (
        decision is not None
        and decision.status == "approved"
        and decision.claimed_at is None
        and (decision.collect_by or 0) > now
    )


async def audit_standing(
    session: AsyncSession, standing: StandingApproval, verdict: str, reason: str, now: float
) -> None:
    """Audit a moment of a standing approval's life in the caller's transaction (so the CLI's revoke is audited
    too, and nothing is audited that did not commit): the call it was given on, its id, and what happened."""
    record = AuditRecord(
        ts=now,
        grant=standing.grant,
        server=standing.server,
        tool=standing.tool,
        arguments=json.loads(standing.arguments),
        redact=(),
        rule=standing.rule,
        verdict=verdict,
        reason=f"standing approval {standing.id} ({standing.scope}): {reason}",
        decision_id=standing.decision_id,
        standing_id=standing.id,
        args_sha256=standing.args_sha256,
    )
    await chain.append(session, [record.to_row(b"")])  # the digest is the call's own: no key needed


def standing_state(standing: StandingApproval, now: float) -> str:
    """`active until …`, `revoked by … at …` or `expired at …`."""
    if standing.revoked_at is not None:
        return f"revoked by {standing.revoked_by} at {iso(standing.revoked_at)}"
    if standing.expires_at <= now:
        return f"expired at {iso(standing.expires_at)}"
    return f"active until {iso(standing.expires_at)}"
