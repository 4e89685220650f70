"""Reading decisions: the filters every listing shares, and the service's reads.

`DecisionQuery` is the one description of "which decisions": the REST API, the CLI, bulk votes by filter and the
dashboard's history all build one, and `decision_conditions` is the one translation of it into SQL, so a filter
means the same everywhere. `same_call` is the other shared condition: the binding of a decision to exactly one
call (grant, server, tool, argument hash, policy version, and whom the agent acts for).

Reads never change a decision; they see what the last commit left.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.approvals.core import DecisionCore
from service.approvals.states import PENDING
from service.models import Decision, Vote


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """Filters for listing decisions (REST, CLI, dashboard); times are unix seconds on `created_at`.

    Empty strings and None filter nothing. `approver`: decisions that person decided or voted on.
    """

    status: str | None = None
    server: str | None = None
    tool: str | None = None
    grant: str | None = None
    approver: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    offset: int = 0


def decision_conditions(query: DecisionQuery) -> list[ColumnElement[bool]]:
    """`query`'s filters as SQL conditions on decisions (its `limit` and `offset` are the caller's)."""
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (col(Decision.status), query.status),
        (col(Decision.server), query.server),
        (col(Decision.tool), query.tool),
        (col(Decision.grant), query.grant),
    ):
        if value:
            conditions.append(column == value)
    if query.approver:
        voted = select(col(Vote.decision_id)).where(col(Vote.approver) == query.approver)
        conditions.append(or_(col(Decision.decided_by) == query.approver, col(Decision.id).in_(voted)))
    if query.since is not None:
        conditions.append(col(Decision.created_at) >= query.since)
    if query.until is not None:
        conditions.append(col(Decision.created_at) < query.until)
    return conditions


async def decision_page(session: AsyncSession, query: DecisionQuery) -> tuple[list[Decision], int]:
    """The decisions matching `query`, newest first, from `offset` up to `limit`; and how many match in all."""
    conditions = decision_conditions(query)
    total = await session.scalar(select(func.count()).select_from(Decision).where(*conditions))
    rows = await session.scalars(
        select(Decision)
        .where(*conditions)
        .order_by(col(Decision.created_at).desc(), col(Decision.id))
        .limit(query.limit)
        .offset(query.offset)
    )
    return list(rows), int(total or 0)


def same_call(
    grant: str, server: str, tool: str, args_sha256: str, policy_version: str, *, acting_for: str | None
) -> list[Any]:
    """The conditions that bind a decision to one call: an approval is for exactly this call, made for exactly this
    person (two people's agents under one OAuth client never share an approval)."""
    return [
        col(Decision.grant) == grant,
        col(Decision.acting_for).is_(None) if acting_for is None else col(Decision.acting_for) == acting_for,
        col(Decision.server) == server,
        col(Decision.tool) == tool,
        col(Decision.args_sha256) == args_sha256,
        col(Decision.policy_version) == policy_version,
    ]


class Reads(DecisionCore):
    """One decision (`load`, `get`), many (`list`, `pending_ids`), their statuses (`status_of`), or a count."""

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

    async def list(self, query: DecisionQuery) -> tuple[builtins.list[Decision], int]:
        async with self.sessions() as session:
            return await decision_page(session, query)

    async def pending_count(self) -> int:
        """How many decisions wait for a person, in the whole database (every replica's): one COUNT on the
        `(status, expires_at)` index, read at each metrics scrape (`service.metrics.PendingDecisions`)."""
        async with self.sessions() as session:
            pending = select(func.count()).select_from(Decision).where(col(Decision.status) == PENDING)
            return await session.scalar(pending) or 0

    async def pending_ids(self, query: DecisionQuery) -> builtins.list[str]:
        """Pending decisions matching `query`'s filters (its status is ignored), oldest first, up to `query.limit`.

        What a bulk vote by filter acts on: the oldest first, so a capped batch takes the ones closest to expiring.
        """
        conditions = [*decision_conditions(replace(query, status=None)), col(Decision.status) == PENDING]
        async with self.sessions() as session:
            rows = await session.scalars(
                select(col(Decision.id))
                .where(*conditions)
                .order_by(col(Decision.created_at), col(Decision.id))
                .limit(query.limit)
                .offset(query.offset)
            )
            return list(rows)
