"""What the dashboard reads from the database, beyond what `ApprovalService` and the audit service offer.

Read-only: pages and exports of decisions (filtered by the approvals domain's own `DecisionQuery`, so a
filter means here what it means in the REST API and the CLI), a decision's notifications and audit records,
counts per tool, and the raw series behind the plots. Nothing here writes; votes go through
`ApprovalService.vote` like every other channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.approvals import DecisionQuery, decision_conditions, decision_page
from service.models import AuditEvent, Decision, OutboxMessage, Vote


async def list_decisions(
    session: AsyncSession, flt: DecisionQuery, *, limit: int = 100, offset: int = 0
) -> tuple[list[Decision], int]:
    """Newest first, with the total that matches (`flt`'s own limit and offset are replaced by these)."""
    return await decision_page(session, replace(flt, limit=limit, offset=offset))


async def iter_decisions(session: AsyncSession, flt: DecisionQuery, *, batch: int = 500):
    """Every matching decision, oldest first, in batches (export)."""
    offset = 0
    conditions = decision_conditions(flt)
    while True:
        rows = list(
            await session.scalars(
                select(Decision)
                .where(*conditions)
                .order_by(col(Decision.created_at), col(Decision.id))
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
    rows = await session.scalars(select(Vote).where(col(Vote.decision_id).in_(decision_ids)).order_by(col(Vote.id)))
    found: dict[str, list[Vote]] = {}
    for vote in rows:
        found.setdefault(vote.decision_id, []).append(vote)
    return found


async def notifications_of(session: AsyncSession, decision_id: str) -> list[OutboxMessage]:
    rows = await session.scalars(
        select(OutboxMessage).where(col(OutboxMessage.decision_id) == decision_id).order_by(col(OutboxMessage.id))
    )
    return list(rows)


async def audit_of(session: AsyncSession, decision_id: str) -> list[AuditEvent]:
    rows = await session.scalars(
        select(AuditEvent).where(col(AuditEvent.decision_id) == decision_id).order_by(col(AuditEvent.id))
    )
    return list(rows)


async def decisions_fingerprint(session: AsyncSession) -> tuple[Any, ...]:
    """Changes whenever a decision is opened or ends, in this process or any other (CLI, replicas)."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.max(col(Decision.created_at)),
                func.max(col(Decision.decided_at)),
                func.count(col(Decision.decided_at)),
                func.count(col(Decision.outcome)),
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
        select(col(AuditEvent.server), col(AuditEvent.tool), col(AuditEvent.verdict), func.count()).group_by(
            col(AuditEvent.server), col(AuditEvent.tool), col(AuditEvent.verdict)
        )
    )
    for server, tool, verdict, n in audit_rows:
        if verdict.startswith("definition_"):  # a tool's definition changed or was accepted: not a call
            continue
        c = counts.setdefault((server, tool), ToolCounts())
        c.calls += n
        if verdict in ("allowed", "approved"):
            c.allowed += n
        elif verdict == "denied":
            c.denied += n
        elif verdict == "rate_limited":
            c.rate_limited += n
    decision_rows = await session.execute(
        select(col(Decision.server), col(Decision.tool), col(Decision.status), func.count()).group_by(
            col(Decision.server), col(Decision.tool), col(Decision.status)
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
    query = select(col(AuditEvent.ts), col(AuditEvent.verdict)).where(
        col(AuditEvent.ts) >= since, col(AuditEvent.ts) < until
    )
    if server:
        query = query.where(col(AuditEvent.server) == server)
    if grant:
        query = query.where(col(AuditEvent.grant) == grant)
    rows = await session.execute(query.order_by(col(AuditEvent.id).desc()).limit(50_000))
    return [(ts, verdict) for ts, verdict in rows]


async def decision_times(session: AsyncSession, flt: DecisionQuery) -> list[float]:
    """Seconds from request to decision, for decisions a person or a timeout ended (not cancelled)."""
    conditions = [
        *decision_conditions(flt),
        col(Decision.decided_at).is_not(None),
        col(Decision.status) != "cancelled",
    ]
    rows = await session.execute(
        select(col(Decision.created_at), col(Decision.decided_at))
        .where(*conditions)
        .order_by(col(Decision.created_at).desc())
        .limit(50_000)
    )
    # The query keeps only decided rows; the check tells the type checker, and skips nothing in practice.
    return [max(0.0, decided - created) for created, decided in rows if decided is not None]
