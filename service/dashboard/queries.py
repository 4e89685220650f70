"""What the dashboard reads from the database, beyond what `ApprovalService` and the audit service offer.

Read-only: filtering decisions by approver, a decision's notifications and audit records, counts
per tool, and the raw series behind the plots. Nothing here writes; votes go through
`ApprovalService.vote` like every other channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import AuditEvent, Decision, OutboxMessage, Vote


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """History filters for decisions; times are unix seconds on `created_at`."""

    status: str | None = None
    grant: str | None = None
    server: str | None = None
    tool: str | None = None
    approver: str | None = None
    since: float | None = None
    until: float | None = None


def _decision_conditions(flt: DecisionFilter) -> list[Any]:
    conditions: list[Any] = []
    for column, value in (
        (Decision.status, flt.status),
        (Decision.grant, flt.grant),
        (Decision.server, flt.server),
        (Decision.tool, flt.tool),
    ):
        if value:
            conditions.append(column == value)
    if flt.approver:
        voted = select(Vote.decision_id).where(Vote.approver == flt.approver)
        conditions.append(or_(Decision.decided_by == flt.approver, Decision.id.in_(voted)))
    if flt.since is not None:
        conditions.append(Decision.created_at >= flt.since)
    if flt.until is not None:
        conditions.append(Decision.created_at < flt.until)
    return conditions


async def list_decisions(
    session: AsyncSession, flt: DecisionFilter, *, limit: int = 100, offset: int = 0
) -> tuple[list[Decision], int]:
    """Newest first, with the total that matches."""
    conditions = _decision_conditions(flt)
    total = await session.scalar(select(func.count()).select_from(Decision).where(*conditions))
    rows = await session.scalars(
        select(Decision)
        .where(*conditions)
        .order_by(Decision.created_at.desc(), Decision.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def iter_decisions(session: AsyncSession, flt: DecisionFilter, *, batch: int = 500):
    """Every matching decision, oldest first, in batches (export)."""
    offset = 0
    conditions = _decision_conditions(flt)
    while True:
        rows = list(
            await session.scalars(
                select(Decision)
                .where(*conditions)
                .order_by(Decision.created_at, Decision.id)
                .limit(batch)
                .offset(offset)
            )
        )
        if not rows:
            return
        for row in rows:
            yield row
        offset += len(rows)


async def votes_of(session: AsyncSession, decision_ids: Sequence[str]) -> dict[str, list[Vote]]:
    if not decision_ids:
        return {}
    rows = await session.scalars(select(Vote).where(Vote.decision_id.in_(decision_ids)).order_by(Vote.id))
    found: dict[str, list[Vote]] = {}
    for vote in rows:
        found.setdefault(vote.decision_id, []).append(vote)
    return found


async def notifications_of(session: AsyncSession, decision_id: str) -> list[OutboxMessage]:
    rows = await session.scalars(
        select(OutboxMessage).where(OutboxMessage.decision_id == decision_id).order_by(OutboxMessage.id)
    )
    return list(rows)


async def audit_of(session: AsyncSession, decision_id: str) -> list[AuditEvent]:
    rows = await session.scalars(
        select(AuditEvent).where(AuditEvent.decision_id == decision_id).order_by(AuditEvent.id)
    )
    return list(rows)


async def decisions_fingerprint(session: AsyncSession) -> tuple[Any, ...]:
    """Changes whenever a decision is opened or ends, in this process or any other (CLI, replicas)."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.max(Decision.created_at),
                func.max(Decision.decided_at),
                func.count(Decision.decided_at),
                func.count(Decision.outcome),
            ).select_from(Decision)
        )
    ).one()
    return tuple(row)


@dataclass
class ToolCounts:
    calls: int = 0
    allowed: int = 0
    denied: int = 0
    rate_limited: int = 0
    held: int = 0
    approved: int = 0
    rejected: int = 0
    """held calls whose decision ended denied or expired"""


async def counts_by_tool(session: AsyncSession) -> dict[tuple[str, str], ToolCounts]:
    """Per (server, tool): audited calls by verdict, and decisions by ending."""
    counts: dict[tuple[str, str], ToolCounts] = {}
    audit_rows = await session.execute(
        select(AuditEvent.server, AuditEvent.tool, AuditEvent.verdict, func.count()).group_by(
            AuditEvent.server, AuditEvent.tool, AuditEvent.verdict
        )
    )
    for server, tool, verdict, n in audit_rows:
        c = counts.setdefault((server, tool), ToolCounts())
        c.calls += n
        if verdict in ("allowed", "approved"):
            c.allowed += n
        elif verdict == "denied":
            c.denied += n
        elif verdict == "rate_limited":
            c.rate_limited += n
    decision_rows = await session.execute(
        select(Decision.server, Decision.tool, Decision.status, func.count()).group_by(
            Decision.server, Decision.tool, Decision.status
        )
    )
    for server, tool, status, n in decision_rows:
        c = counts.setdefault((server, tool), ToolCounts())
        c.held += n
        if status == "approved":
            c.approved += n
        elif status in ("denied", "expired"):
            c.rejected += n
    return counts


async def call_series(
    session: AsyncSession, *, since: datetime, until: datetime, server: str | None = None, grant: str | None = None
) -> list[tuple[datetime, str]]:
    """(time, verdict) of the audited calls in [since, until), at most 50,000 (for the plot)."""
    query = select(AuditEvent.ts, AuditEvent.verdict).where(AuditEvent.ts >= since, AuditEvent.ts < until)
    if server:
        query = query.where(AuditEvent.server == server)
    if grant:
        query = query.where(AuditEvent.grant == grant)
    rows = await session.execute(query.order_by(AuditEvent.id.desc()).limit(50_000))
    return [(ts, verdict) for ts, verdict in rows]


async def decision_times(session: AsyncSession, flt: DecisionFilter) -> list[float]:
    """Seconds from request to decision, for decisions a person or a timeout ended (not cancelled)."""
    conditions = [*_decision_conditions(flt), Decision.decided_at.is_not(None), Decision.status != "cancelled"]
    rows = await session.execute(
        select(Decision.created_at, Decision.decided_at)
        .where(*conditions)
        .order_by(Decision.created_at.desc())
        .limit(50_000)
    )
    return [max(0.0, decided - created) for created, decided in rows]
